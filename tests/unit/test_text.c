/* test_text.c — the core text codecs: hex, UUIDs, base64url. */
#include <criterion/criterion.h>
#include <string.h>

#include "keyward/core/text.h"

Test(text, hex_round_trip_and_refusals)
{
	const unsigned char raw[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
	char hex[2 * sizeof(raw) + 1];
	kw_hex_encode(raw, sizeof(raw), hex);
	cr_assert_str_eq(hex, "00017f80abff");
	unsigned char back[sizeof(raw)];
	cr_assert(kw_hex_decode("00017F80ABff", sizeof(back), back));
	cr_assert_eq(memcmp(back, raw, sizeof(raw)), 0);
	cr_assert_not(kw_hex_decode("0g", 1, back));
	cr_assert_not(kw_hex_decode("0", 1, back), "a lone digit is not a byte");
	cr_assert_eq(kw_hex_value('G'), -1);
	cr_assert(kw_is_lower_hex("0123456789abcdef", 16));
	cr_assert_not(kw_is_lower_hex("0123456789ABCDEF", 16), "upper case");
	cr_assert_not(kw_is_lower_hex("0123", 3), "longer than n");
	cr_assert_not(kw_is_lower_hex("012", 4), "shorter than n");
}

Test(text, uuids)
{
	cr_assert(kw_is_uuid("5bdc3332-ebd3-4612-a0d6-9700c1032e74"));
	cr_assert(kw_is_uuid("5BDC3332-EBD3-4612-A0D6-9700C1032E74"));
	cr_assert_not(kw_is_uuid(NULL));
	cr_assert_not(kw_is_uuid(""));
	cr_assert_not(kw_is_uuid("5bdc3332-ebd3-4612-a0d6-9700c1032e7"), "35 characters");
	cr_assert_not(kw_is_uuid("5bdc3332-ebd3-4612-a0d6-9700c1032e745"), "37 characters");
	cr_assert_not(kw_is_uuid("5bdc3332ebd3-4612-a0d6-9700c1032e74-"), "dash misplaced");
	cr_assert_not(kw_is_uuid("5bdc3332-ebd3-4612-a0d6-9700c1032e7g"), "not hex");
}

Test(text, base64url_is_canonical)
{
	unsigned char out[8];
	size_t n = 0;
	char enc[16];
	cr_assert_eq(kw_b64url_encode((const unsigned char *)"\xfb\xff", 2, enc), 3);
	cr_assert_str_eq(enc, "-_8");
	cr_assert_eq(kw_b64url_decode("-_8", 3, out, sizeof(out), &n), KW_OK);
	cr_assert_eq(n, 2);
	cr_assert_eq(kw_b64url_decode("-_9", 3, out, sizeof(out), &n), KW_ERR_INVALID, "stray low bits");
	cr_assert_eq(kw_b64url_decode("-_8=", 4, out, sizeof(out), &n), KW_ERR_INVALID, "padding");
	cr_assert_eq(kw_b64url_decode("+/8", 3, out, sizeof(out), &n), KW_ERR_INVALID, "standard alphabet");
	cr_assert_eq(kw_b64url_decode("AAAAAAAAAAAA", 12, out, sizeof(out), &n), KW_ERR_INVALID, "over cap");
}
