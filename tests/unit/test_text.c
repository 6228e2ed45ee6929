/* test_text.c — the core text codecs: hex, UUIDs, base64url, UTF-8 cleaning. */
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

/* Expected outputs are Python's bytes.decode("utf-8", "replace"), which
 * replaces maximal subparts as Unicode recommends: an independent oracle. */
static const struct {
	const char *name, *in, *want;
} utf8_cases[] = {
    {"ascii", "plain ascii", "plain ascii"},
    {"Latin-1 e-acute", "caf\xe9", "caf\xef\xbf\xbd"},
    {"lone continuation", "\x80", "\xef\xbf\xbd"},
    {"two continuations", "\xbf\x80", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"overlong slash (C0)", "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"overlong (C1)", "\xc1\xbf", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"overlong 3-byte", "\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"overlong 4-byte", "\xf0\x80\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"surrogate D800", "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"surrogate DFFF", "\xed\xbf\xbf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"above U+10FFFF", "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"F5 lead", "\xf5\x80\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"FF FE", "\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"truncated 3-byte at end", "\xe2\x82", "\xef\xbf\xbd"},
    {"truncated 3-byte then ascii", "\xe2\x82x", "\xef\xbf\xbdx"},
    {"truncated 4-byte", "\xf0\x9f\x98", "\xef\xbf\xbd"},
    {"truncated 2-byte", "\xc3", "\xef\xbf\xbd"},
    {"valid 1-4 byte", "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
    {"U+FFFE noncharacter (valid)", "\xef\xbf\xbe", "\xef\xbf\xbe"},
    {"U+10FFFF (valid)", "\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"},
};

Test(text, utf8_clean_replaces_every_ill_formed_sequence)
{
	for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
		char out[64];
		bool cut = true;
		size_t n =
		    kw_utf8_clean(utf8_cases[i].in, strlen(utf8_cases[i].in), 100, out, sizeof(out), &cut);
		cr_assert_str_eq(out, utf8_cases[i].want, "%s", utf8_cases[i].name);
		cr_assert_eq(n, strlen(utf8_cases[i].want), "%s", utf8_cases[i].name);
		cr_assert_not(cut, "%s", utf8_cases[i].name);
	}
	/* A NUL inside the given length is not text either. */
	char out[16];
	cr_assert_eq(kw_utf8_clean("a\0b", 3, 10, out, sizeof(out), NULL), 5);
	cr_assert_str_eq(out, "a\xef\xbf\xbd"
	                      "b");
}

Test(text, utf8_clean_bounds_by_characters_and_never_splits_one)
{
	char out[64];
	bool cut = false;
	/* "é" is two bytes: three characters are six bytes. */
	const char *e5 = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9";
	cr_assert_eq(kw_utf8_clean(e5, strlen(e5), 3, out, sizeof(out), &cut), 6);
	cr_assert(cut);
	cr_assert_str_eq(out, "\xc3\xa9\xc3\xa9\xc3\xa9");
	/* Five bytes of room (and the NUL): two whole characters, not two and a half. */
	cr_assert_eq(kw_utf8_clean(e5, strlen(e5), 100, out, 6, &cut), 4);
	cr_assert(cut);
	cr_assert_str_eq(out, "\xc3\xa9\xc3\xa9");
	/* A replacement counts as one character and needs three bytes. */
	cr_assert_eq(kw_utf8_clean("\xff\xff", 2, 100, out, 4, &cut), 3);
	cr_assert(cut);
	cr_assert_eq(kw_utf8_clean("", 0, 100, out, 1, &cut), 0);
	cr_assert_not(cut);
	cr_assert_str_eq(out, "");
}
