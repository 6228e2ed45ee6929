/* test_hsm_fault.c — the token pulled out under a running kw_hsm, and back.
 *
 * kw_hsm loads libkwt_p11fault.so (tests/support/p11_fault.c) over the
 * real SoftHSM module of KEYWARD_HSM_MODULE. While the fault file exists
 * the shim answers CKR_DEVICE_REMOVED / CKR_TOKEN_NOT_PRESENT; every
 * operation must then fail with KW_ERR_HSM_UNAVAILABLE, and once the file
 * is gone the same kw_hsm_session must revive and work again. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/core/log.h"
#include "kwtest.h"

#ifndef KWT_P11FAULT_PATH
#error "KWT_P11FAULT_PATH is set by CMake when the kwt_p11fault target exists"
#endif

static char dir[64];
static char fault_file[128];
static char copy_fault_file[128];
static kw_hsm *hsm;
static kw_hsm_session *sess;

static void device_removed(bool removed)
{
	if (removed) {
		FILE *f = fopen(fault_file, "w");
		cr_assert_not_null(f, "cannot create %s: %s", fault_file, strerror(errno));
		fclose(f);
	} else {
		cr_assert_eq(unlink(fault_file), 0, "cannot remove %s: %s", fault_file, strerror(errno));
	}
}

static void setup(void)
{
	/* The failures provoked here are logged at warn; keep the output to errors. */
	kw_log_set_level(KW_LOG_ERR);
	snprintf(dir, sizeof(dir), "/tmp/kwt-fault-XXXXXX");
	cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	snprintf(fault_file, sizeof(fault_file), "%s/removed", dir);
	snprintf(copy_fault_file, sizeof(copy_fault_file), "%s/no-copies", dir);
	cr_assert_eq(setenv("KWT_P11_COPY_FAULT_FILE", copy_fault_file, 1), 0);
	cr_assert_eq(setenv("KWT_P11_REAL_MODULE", kwt_env("KEYWARD_HSM_MODULE"), 1), 0);
	cr_assert_eq(setenv("KWT_P11_FAULT_FILE", fault_file, 1), 0);
	(void)kwt_env("SOFTHSM2_CONF");

	kw_hsm_options opt = {
	    .module_path = KWT_P11FAULT_PATH,
	    .token_uri = kwt_env("KEYWARD_HSM_URI"),
	    .pin_file = kwt_env("KEYWARD_HSM_PIN_SOURCE"),
	};
	kw_err err = kw_hsm_open(&opt, &hsm);
	cr_assert_eq(err, KW_OK, "kw_hsm_open through the shim: %s", kw_err_str(err));
	err = kw_hsm_session_open(hsm, &sess);
	cr_assert_eq(err, KW_OK, "kw_hsm_session_open: %s", kw_err_str(err));
	int created = 0;
	err = kw_hsm_token_init(sess, &created);
	cr_assert_eq(err, KW_OK, "kw_hsm_token_init: %s", kw_err_str(err));
}

static void teardown(void)
{
	(void)unlink(fault_file);
	(void)unlink(copy_fault_file);
	kw_hsm_session_close(sess);
	sess = NULL;
	kw_hsm_close(hsm);
	hsm = NULL;
	(void)rmdir(dir);
}

TestSuite(hsm_fault, .init = setup, .fini = teardown);

static const kw_hsm_key *kek(void)
{
	const kw_hsm_key *k = NULL;
	kw_err err = kw_hsm_key_active(hsm, KW_KEY_KEK, &k);
	cr_assert_eq(err, KW_OK, "no active kek: %s", kw_err_str(err));
	return k;
}

static const unsigned char aad[] = "tenant=7";
static const unsigned char pt[] = "a secret worth wrapping";

/* Encrypts pt under the KEK and decrypts it back; asserts both worked. */
static void round_trip(const char *when, unsigned char iv[KW_GCM_IV_LEN],
                       unsigned char ct[sizeof(pt) + KW_GCM_TAG_LEN])
{
	unsigned char back[sizeof(pt)];
	kw_err err = kw_hsm_gcm_encrypt(sess, kek(), aad, sizeof(aad), pt, sizeof(pt), iv, ct);
	cr_assert_eq(err, KW_OK, "%s: encrypt: %s", when, kw_err_str(err));
	err = kw_hsm_gcm_decrypt(sess, kek(), iv, aad, sizeof(aad), ct, sizeof(pt) + KW_GCM_TAG_LEN, back);
	cr_assert_eq(err, KW_OK, "%s: decrypt: %s", when, kw_err_str(err));
	cr_assert_arr_eq(back, pt, sizeof(pt), "%s: round trip changed the plaintext", when);
}

Test(hsm_fault, shim_forwards_while_the_token_is_present)
{
	unsigned char iv[KW_GCM_IV_LEN], ct[sizeof(pt) + KW_GCM_TAG_LEN];
	round_trip("present", iv, ct);
	cr_assert_eq(kw_hsm_session_ping(sess), KW_OK);
	unsigned char mac[KW_HMAC_LEN];
	const kw_hsm_key *audit = NULL;
	cr_assert_eq(kw_hsm_key_active(hsm, KW_KEY_AUDIT, &audit), KW_OK);
	cr_assert_eq(kw_hsm_hmac(sess, audit, (const unsigned char *)"row", 3, mac), KW_OK);
}

Test(hsm_fault, device_removed_then_back)
{
	unsigned char iv[KW_GCM_IV_LEN], ct[sizeof(pt) + KW_GCM_TAG_LEN];
	unsigned char iv2[KW_GCM_IV_LEN], ct2[sizeof(pt) + KW_GCM_TAG_LEN];
	unsigned char back[sizeof(pt)], big[512];
	kw_hsm_stats before, after;

	round_trip("before removal", iv, ct);
	kw_hsm_stats_get(hsm, &before);

	device_removed(true);
	kw_err err = kw_hsm_gcm_encrypt(sess, kek(), aad, sizeof(aad), pt, sizeof(pt), iv2, ct2);
	cr_assert_eq(err, KW_ERR_HSM_UNAVAILABLE, "encrypt while removed: %s", kw_err_str(err));
	err = kw_hsm_session_ping(sess);
	cr_assert_eq(err, KW_ERR_HSM_UNAVAILABLE, "ping while removed: %s", kw_err_str(err));
	err = kw_hsm_gcm_decrypt(sess, kek(), iv, aad, sizeof(aad), ct, sizeof(ct), back);
	cr_assert_eq(err, KW_ERR_HSM_UNAVAILABLE, "decrypt while removed: %s", kw_err_str(err));
	err = kw_hsm_random(sess, big, sizeof(big)); /* > pool: goes to the token */
	cr_assert_eq(err, KW_ERR_HSM_UNAVAILABLE, "random while removed: %s", kw_err_str(err));
	kw_hsm_session *s2 = NULL;
	err = kw_hsm_session_open(hsm, &s2);
	cr_assert_eq(err, KW_ERR_HSM_UNAVAILABLE, "session open while removed: %s", kw_err_str(err));
	cr_assert_null(s2);
	/* Still removed: a second try does not succeed by accident. */
	cr_assert_eq(kw_hsm_session_ping(sess), KW_ERR_HSM_UNAVAILABLE);

	device_removed(false);
	err = kw_hsm_session_ping(sess);
	cr_assert_eq(err, KW_OK, "ping after the token came back: %s", kw_err_str(err));
	kw_hsm_stats_get(hsm, &after);
	cr_assert_gt(after.revived_sessions, before.revived_sessions, "the session was not reopened");
	/* What was encrypted before the removal still decrypts. */
	err = kw_hsm_gcm_decrypt(sess, kek(), iv, aad, sizeof(aad), ct, sizeof(ct), back);
	cr_assert_eq(err, KW_OK, "decrypt after the token came back: %s", kw_err_str(err));
	cr_assert_arr_eq(back, pt, sizeof(pt));
	round_trip("after the token came back", iv2, ct2);
	cr_assert_eq(kw_hsm_random(sess, big, sizeof(big)), KW_OK);
	cr_assert_eq(kw_hsm_session_open(hsm, &s2), KW_OK);
	cr_assert_eq(kw_hsm_session_ping(s2), KW_OK);
	kw_hsm_session_close(s2);
}

/* The first call after the removal is a ping on a live session handle. */
Test(hsm_fault, ping_sees_the_removal_first)
{
	unsigned char iv[KW_GCM_IV_LEN], ct[sizeof(pt) + KW_GCM_TAG_LEN];
	cr_assert_eq(kw_hsm_session_ping(sess), KW_OK);
	device_removed(true);
	kw_err err = kw_hsm_session_ping(sess);
	cr_assert_eq(err, KW_ERR_HSM_UNAVAILABLE, "ping while removed: %s", kw_err_str(err));
	err = kw_hsm_gcm_encrypt(sess, kek(), aad, sizeof(aad), pt, sizeof(pt), iv, ct);
	cr_assert_eq(err, KW_ERR_HSM_UNAVAILABLE, "encrypt while removed: %s", kw_err_str(err));
	device_removed(false);
	round_trip("after the token came back", iv, ct);
	cr_assert_eq(kw_hsm_session_ping(sess), KW_OK);
}

/* A token that refuses C_CopyObject: every operation names the token
 * object, and still works. */
Test(hsm_fault, copies_refused_means_token_objects)
{
	FILE *f = fopen(copy_fault_file, "w");
	cr_assert_not_null(f);
	fclose(f);
	kw_hsm_session *s2 = NULL;
	cr_assert_eq(kw_hsm_session_open(hsm, &s2), KW_OK);
	unsigned char iv[KW_GCM_IV_LEN], ct[sizeof(pt) + KW_GCM_TAG_LEN], back[sizeof(pt)];
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(kw_hsm_gcm_encrypt(s2, kek(), aad, sizeof(aad), pt, sizeof(pt), iv, ct), KW_OK);
		cr_assert_eq(kw_hsm_gcm_decrypt(s2, kek(), iv, aad, sizeof(aad), ct, sizeof(ct), back),
		             KW_OK);
		cr_assert_arr_eq(back, pt, sizeof(pt));
	}
	kw_hsm_key_info copies[8];
	size_t n = 9;
	cr_assert_eq(kw_hsm_test_session_copies(s2, copies, 8, &n), KW_OK);
	cr_assert_eq(n, 0);
	/* Copies allowed again: a new session makes one. */
	cr_assert_eq(unlink(copy_fault_file), 0);
	kw_hsm_session *s3 = NULL;
	cr_assert_eq(kw_hsm_session_open(hsm, &s3), KW_OK);
	cr_assert_eq(kw_hsm_gcm_decrypt(s3, kek(), iv, aad, sizeof(aad), ct, sizeof(ct), back), KW_OK);
	cr_assert_eq(kw_hsm_test_session_copies(s3, copies, 8, &n), KW_OK);
	cr_assert_eq(n, 1);
	kw_hsm_session_close(s3);
	kw_hsm_session_close(s2);
}
