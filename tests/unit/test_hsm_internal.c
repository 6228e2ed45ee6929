/* test_hsm_internal.c — the pure parts of src/hsm/: key labels, EC point
 * decoding, and the CK_RV names and translation table. No token needed. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../src/hsm/hsm_internal.h"

static bool parse(const char *s, kw_key_family *f, uint32_t *v)
{
	return kw_hsm_label_parse(s, strlen(s), f, v);
}

Test(hsm_label, parses_every_family)
{
	kw_key_family f;
	uint32_t v;
	cr_assert(parse("keyward/kek/1", &f, &v));
	cr_assert_eq(f, KW_KEY_KEK);
	cr_assert_eq(v, 1);
	cr_assert(parse("keyward/derive/12", &f, &v));
	cr_assert_eq(f, KW_KEY_DERIVE);
	cr_assert_eq(v, 12);
	cr_assert(parse("keyward/pepper/3", &f, &v) && f == KW_KEY_PEPPER);
	cr_assert(parse("keyward/jwt/4", &f, &v) && f == KW_KEY_JWT);
	cr_assert(parse("keyward/audit/4294967295", &f, &v) && f == KW_KEY_AUDIT);
	cr_assert_eq(v, 4294967295u);
}

Test(hsm_label, rejects_malformed)
{
	static const char *bad[] = {
	    "",
	    "keyward/",
	    "keyward/kek",
	    "keyward/kek/",
	    "keyward/kek/0",
	    "keyward/kek/01",
	    "keyward/kek/-1",
	    "keyward/kek/+1",
	    "keyward/kek/1x",
	    "keyward/kek/1/",
	    "keyward/kek/4294967296",
	    "keyward/kek/99999999999",
	    "keyward/keks/1",
	    "keyward/KEK/1",
	    "Keyward/kek/1",
	    "other/kek/1",
	    "keyward//1",
	    "keyward/kek/ 1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kw_key_family f = KW_KEY_AUDIT;
		uint32_t v = 77;
		cr_assert(!parse(bad[i], &f, &v), "accepted '%s'", bad[i]);
		cr_assert_eq(v, 77, "wrote output for '%s'", bad[i]);
	}
	/* The length bounds the label: no reading past it. */
	kw_key_family f;
	uint32_t v;
	cr_assert(kw_hsm_label_parse("keyward/kek/12345", 13, &f, &v));
	cr_assert_eq(v, 1);
}

Test(hsm_label, format_round_trips)
{
	char buf[64];
	for (int f = 0; f < KW_KEY_FAMILY_COUNT; f++) {
		size_t n = kw_hsm_label_format(buf, sizeof(buf), true, (kw_key_family)f, 42);
		cr_assert_gt(n, 0);
		cr_assert_eq(n, strlen(buf));
		kw_key_family g;
		uint32_t v;
		cr_assert(kw_hsm_label_parse(buf, n, &g, &v));
		cr_assert_eq(g, f);
		cr_assert_eq(v, 42);
	}
	cr_assert_eq(kw_hsm_label_format(buf, sizeof(buf), false, KW_KEY_PEPPER, 7), strlen("pepper/7"));
	cr_assert_str_eq(buf, "pepper/7");
	cr_assert_eq(kw_hsm_label_format(buf, 8, true, KW_KEY_KEK, 1), 0);
	cr_assert_eq(kw_hsm_label_format(buf, sizeof(buf), true, KW_KEY_KEK, 0), 0);
	cr_assert_eq(kw_hsm_label_format(buf, sizeof(buf), true, KW_KEY_FAMILY_COUNT, 1), 0);
	cr_assert_str_eq(kw_key_family_name(KW_KEY_DERIVE), "derive");
	cr_assert_str_eq(kw_key_family_name(KW_KEY_FAMILY_COUNT), "unknown");
}

Test(hsm_ec_point, raw_and_der)
{
	unsigned char raw[65], der[67], out[65];
	raw[0] = 0x04;
	for (int i = 1; i < 65; i++)
		raw[i] = (unsigned char)i;
	der[0] = 0x04;
	der[1] = 0x41;
	memcpy(der + 2, raw, 65);
	memset(out, 0, sizeof(out));
	cr_assert(kw_hsm_ec_point_parse(raw, sizeof(raw), out));
	cr_assert_eq(memcmp(out, raw, 65), 0);
	memset(out, 0, sizeof(out));
	cr_assert(kw_hsm_ec_point_parse(der, sizeof(der), out));
	cr_assert_eq(memcmp(out, raw, 65), 0);
	/* Compressed points, wrong lengths and wrong tags are refused. */
	unsigned char comp[33] = {0x02};
	cr_assert(!kw_hsm_ec_point_parse(comp, sizeof(comp), out));
	cr_assert(!kw_hsm_ec_point_parse(der, 66, out));
	der[1] = 0x40;
	cr_assert(!kw_hsm_ec_point_parse(der, sizeof(der), out));
	raw[0] = 0x03;
	cr_assert(!kw_hsm_ec_point_parse(raw, sizeof(raw), out));
}

Test(hsm_rv, names_and_translation)
{
	cr_assert_str_eq(kw_hsm_rv_name(CKR_OK), "CKR_OK");
	cr_assert_str_eq(kw_hsm_rv_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT");
	cr_assert_str_eq(kw_hsm_rv_name(CKR_SESSION_HANDLE_INVALID), "CKR_SESSION_HANDLE_INVALID");
	cr_assert_str_eq(kw_hsm_rv_name(CKR_VENDOR_DEFINED | 5), "CKR_VENDOR_DEFINED");
	cr_assert_str_eq(kw_hsm_rv_name(0x7777), "CKR_UNKNOWN");

	cr_assert_eq(kw_hsm_rv_err(CKR_OK), KW_OK);
	cr_assert_eq(kw_hsm_rv_err(CKR_ENCRYPTED_DATA_INVALID), KW_ERR_VERIFY);
	cr_assert_eq(kw_hsm_rv_err(CKR_ENCRYPTED_DATA_LEN_RANGE), KW_ERR_VERIFY);
	cr_assert_eq(kw_hsm_rv_err(CKR_SIGNATURE_INVALID), KW_ERR_VERIFY);
	cr_assert_eq(kw_hsm_rv_err(CKR_PIN_INCORRECT), KW_ERR_PIN);
	cr_assert_eq(kw_hsm_rv_err(CKR_PIN_LOCKED), KW_ERR_PIN);
	cr_assert_eq(kw_hsm_rv_err(CKR_PIN_EXPIRED), KW_ERR_PIN);
	cr_assert_eq(kw_hsm_rv_err(CKR_SESSION_HANDLE_INVALID), KW_ERR_HSM_UNAVAILABLE);
	cr_assert_eq(kw_hsm_rv_err(CKR_SESSION_CLOSED), KW_ERR_HSM_UNAVAILABLE);
	cr_assert_eq(kw_hsm_rv_err(CKR_DEVICE_REMOVED), KW_ERR_HSM_UNAVAILABLE);
	cr_assert_eq(kw_hsm_rv_err(CKR_TOKEN_NOT_PRESENT), KW_ERR_HSM_UNAVAILABLE);
	cr_assert_eq(kw_hsm_rv_err(CKR_USER_NOT_LOGGED_IN), KW_ERR_HSM_UNAVAILABLE);
	cr_assert_eq(kw_hsm_rv_err(CKR_HOST_MEMORY), KW_ERR_NOMEM);
	cr_assert_eq(kw_hsm_rv_err(CKR_ARGUMENTS_BAD), KW_ERR_INVALID);
	cr_assert_eq(kw_hsm_rv_err(CKR_SESSION_COUNT), KW_ERR_BUSY);
	cr_assert_eq(kw_hsm_rv_err(CKR_KEY_HANDLE_INVALID), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_hsm_rv_err(CKR_GENERAL_ERROR), KW_ERR_HSM);
	cr_assert_eq(kw_hsm_rv_err(CKR_VENDOR_DEFINED | 1), KW_ERR_HSM);
	cr_assert_eq(kw_hsm_rv_err(0x7777), KW_ERR_HSM);

	cr_assert(kw_hsm_rv_session_dead(CKR_SESSION_HANDLE_INVALID));
	cr_assert(kw_hsm_rv_session_dead(CKR_SESSION_CLOSED));
	cr_assert(kw_hsm_rv_session_dead(CKR_DEVICE_REMOVED));
	cr_assert(kw_hsm_rv_session_dead(CKR_TOKEN_NOT_PRESENT));
	cr_assert(kw_hsm_rv_session_dead(CKR_USER_NOT_LOGGED_IN));
	cr_assert(kw_hsm_rv_session_dead(CKR_DEVICE_ERROR));
	cr_assert(!kw_hsm_rv_session_dead(CKR_PIN_INCORRECT));
	cr_assert(!kw_hsm_rv_session_dead(CKR_ENCRYPTED_DATA_INVALID));
	cr_assert(kw_hsm_rv_stale_handles(CKR_KEY_HANDLE_INVALID));
	cr_assert(!kw_hsm_rv_stale_handles(CKR_SIGNATURE_INVALID));
}

Test(hsm_ops, names)
{
	static const char *want[] = {"random", "encrypt", "decrypt", "hmac", "ecdsa_sign", "other"};
	for (int i = 0; i < KW_HSM_OP_COUNT; i++)
		cr_assert_str_eq(kw_hsm_op_name((kw_hsm_op)i), want[i]);
	cr_assert_str_eq(kw_hsm_op_name(KW_HSM_OP_COUNT), "other");
}
