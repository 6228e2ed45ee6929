/* test_apikey.c — the API key format: parser, checksum, scope names.
 *
 * No token here: keys are built by hand, their checksum computed with
 * OpenSSL the way the format defines it, independently of src/auth. Keys
 * from the token's RNG are tested in tests/integration/test_apikeys.c. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/auth/apikey.h"

static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* The 6-character checksum of key[0..59): SHA-256, first 4 bytes as a
 * big-endian number, base62 left-padded with '0'. */
static void checksum_of(const char *key, char out[6])
{
	unsigned char md[32];
	unsigned int n = 0;
	cr_assert_eq(EVP_Digest(key, 59, md, &n, EVP_sha256(), NULL), 1);
	uint32_t v = (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 | (uint32_t)md[2] << 8 | md[3];
	for (int i = 5; i >= 0; i--) {
		out[i] = alphabet[v % 62];
		v /= 62;
	}
	cr_assert_eq(v, 0);
}

/* "kw_" + id + "_" + secret + checksum, with id 12 and secret 43 chars. */
static void make_key(const char *id, const char *secret, char key[KW_APIKEY_LEN + 1])
{
	cr_assert_eq(strlen(id), 12);
	cr_assert_eq(strlen(secret), 43);
	snprintf(key, KW_APIKEY_LEN + 1, "kw_%s_%s", id, secret);
	checksum_of(key, key + 59);
	key[KW_APIKEY_LEN] = '\0';
}

static const char *good_id = "AbCdEf012345";
static const char *good_secret = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg";

static kw_err parse(const char *key, size_t len)
{
	char prefix[KW_APIKEY_PREFIX_LEN + 1] = "unchanged";
	kw_err err = kw_apikey_parse(key, len, prefix);
	if (err != KW_OK)
		cr_assert_str_eq(prefix, "unchanged", "prefix written on failure");
	return err;
}

Test(apikey, known_good_key_parses)
{
	char key[KW_APIKEY_LEN + 1], prefix[KW_APIKEY_PREFIX_LEN + 1];
	make_key(good_id, good_secret, key);
	cr_assert_eq(strlen(key), 65);
	cr_assert_eq(kw_apikey_parse(key, strlen(key), prefix), KW_OK);
	cr_assert_str_eq(prefix, "kw_AbCdEf012345");
}

Test(apikey, extreme_keys_parse)
{
	char key[KW_APIKEY_LEN + 1], prefix[KW_APIKEY_PREFIX_LEN + 1];
	make_key("000000000000", "0000000000000000000000000000000000000000000", key);
	cr_assert_eq(kw_apikey_parse(key, KW_APIKEY_LEN, prefix), KW_OK);
	make_key("zzzzzzzzzzzz", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", key);
	cr_assert_eq(kw_apikey_parse(key, KW_APIKEY_LEN, prefix), KW_OK);
	cr_assert_str_eq(prefix, "kw_zzzzzzzzzzzz");
}

Test(apikey, parser_reads_only_len_bytes)
{
	/* The key inside a longer buffer, not NUL terminated after it. */
	char buf[KW_APIKEY_LEN + 8], key[KW_APIKEY_LEN + 1], prefix[KW_APIKEY_PREFIX_LEN + 1];
	make_key(good_id, good_secret, key);
	char *heap = malloc(KW_APIKEY_LEN);
	cr_assert_not_null(heap);
	memcpy(heap, key, KW_APIKEY_LEN); /* no terminator: ASan catches an overread */
	cr_assert_eq(kw_apikey_parse(heap, KW_APIKEY_LEN, prefix), KW_OK);
	free(heap);
	memcpy(buf, key, KW_APIKEY_LEN);
	memcpy(buf + KW_APIKEY_LEN, "trailer", 8);
	cr_assert_eq(kw_apikey_parse(buf, KW_APIKEY_LEN, prefix), KW_OK);
	cr_assert_eq(parse(buf, strlen(buf)), KW_ERR_INVALID);
}

Test(apikey, every_single_character_mutation_is_rejected)
{
	char key[KW_APIKEY_LEN + 1], m[KW_APIKEY_LEN + 1];
	make_key(good_id, good_secret, key);
	int tried = 0;
	for (size_t pos = 0; pos < KW_APIKEY_LEN; pos++) {
		for (size_t a = 0; a < sizeof(alphabet) - 1; a++) {
			if (alphabet[a] == key[pos])
				continue;
			memcpy(m, key, sizeof(m));
			m[pos] = alphabet[a];
			cr_assert_eq(parse(m, KW_APIKEY_LEN), KW_ERR_INVALID,
			             "mutation at %zu to %c accepted", pos, alphabet[a]);
			tried++;
		}
	}
	/* The two '_' positions take any of the 62 characters, the others 61. */
	cr_assert_eq(tried, 63 * 61 + 2 * 62, "tried %d", tried);
}

Test(apikey, transpositions_are_rejected)
{
	char key[KW_APIKEY_LEN + 1], m[KW_APIKEY_LEN + 1];
	make_key(good_id, good_secret, key);
	for (size_t pos = 3; pos + 1 < KW_APIKEY_LEN; pos++) {
		if (key[pos] == key[pos + 1])
			continue;
		memcpy(m, key, sizeof(m));
		m[pos] = key[pos + 1];
		m[pos + 1] = key[pos];
		cr_assert_eq(parse(m, KW_APIKEY_LEN), KW_ERR_INVALID, "swap at %zu accepted", pos);
	}
}

Test(apikey, wrong_lengths_are_rejected)
{
	char key[KW_APIKEY_LEN + 1], longer[KW_APIKEY_LEN + 2];
	make_key(good_id, good_secret, key);
	for (size_t len = 0; len < KW_APIKEY_LEN; len++)
		cr_assert_eq(parse(key, len), KW_ERR_INVALID, "length %zu accepted", len);
	snprintf(longer, sizeof(longer), "%sA", key);
	cr_assert_eq(parse(longer, KW_APIKEY_LEN + 1), KW_ERR_INVALID);
	cr_assert_eq(parse(NULL, 0), KW_ERR_INVALID);
	cr_assert_eq(parse(NULL, KW_APIKEY_LEN), KW_ERR_INVALID);
	cr_assert_eq(parse("", 0), KW_ERR_INVALID);
}

Test(apikey, prefix_and_separator_are_checked)
{
	char key[KW_APIKEY_LEN + 1], m[KW_APIKEY_LEN + 1];
	make_key(good_id, good_secret, key);
	static const char *heads[] = {"KW_", "kW_", "kv_", "kw-", "kw.", "xx_", "kwX"};
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		memcpy(m, key, sizeof(m));
		memcpy(m, heads[i], 3);
		cr_assert_eq(parse(m, KW_APIKEY_LEN), KW_ERR_INVALID, "head %s accepted", heads[i]);
	}
	static const char seps[] = {'-', '.', ' ', 'A', '0', '+', '/', '='};
	for (size_t i = 0; i < sizeof(seps); i++) {
		memcpy(m, key, sizeof(m));
		m[15] = seps[i];
		cr_assert_eq(parse(m, KW_APIKEY_LEN), KW_ERR_INVALID, "separator %c accepted", seps[i]);
	}
	/* An extra '_' anywhere else. */
	for (size_t pos = 3; pos < KW_APIKEY_LEN; pos++) {
		if (pos == 15)
			continue;
		memcpy(m, key, sizeof(m));
		m[pos] = '_';
		cr_assert_eq(parse(m, KW_APIKEY_LEN), KW_ERR_INVALID);
	}
}

Test(apikey, non_base62_and_nul_are_rejected)
{
	char key[KW_APIKEY_LEN + 1], m[KW_APIKEY_LEN + 1];
	make_key(good_id, good_secret, key);
	static const char bad[] = {'\0', ' ',    '-',        '+',        '/',        '=', '.', '\n',
	                           '\t', '\x7f', (char)0x80, (char)0xc3, (char)0xff, '~', '!', '\\'};
	for (size_t pos = 3; pos < KW_APIKEY_LEN; pos++) {
		if (pos == 15)
			continue;
		for (size_t i = 0; i < sizeof(bad); i++) {
			memcpy(m, key, sizeof(m));
			m[pos] = bad[i];
			cr_assert_eq(parse(m, KW_APIKEY_LEN), KW_ERR_INVALID, "byte %02x at %zu accepted",
			             (unsigned char)bad[i], pos);
		}
	}
	/* A NUL right after the prefix, the rest intact. */
	memcpy(m, key, sizeof(m));
	m[15] = '\0';
	cr_assert_eq(parse(m, KW_APIKEY_LEN), KW_ERR_INVALID);
}

Test(apikey, checksum_of_the_wrong_text_is_rejected)
{
	/* A valid checksum for another key, grafted on. */
	char a[KW_APIKEY_LEN + 1], b[KW_APIKEY_LEN + 1];
	make_key(good_id, good_secret, a);
	make_key("ZZZZZZZZZZZZ", good_secret, b);
	memcpy(a + 59, b + 59, 6);
	cr_assert_eq(parse(a, KW_APIKEY_LEN), KW_ERR_INVALID);
}

Test(apikey, garbage_is_rejected)
{
	size_t n = 16384;
	char *g = malloc(n);
	cr_assert_not_null(g);
	for (size_t i = 0; i < n; i++)
		g[i] = (char)(i * 131 + 7);
	cr_assert_eq(parse(g, n), KW_ERR_INVALID);
	memset(g, 'A', n);
	cr_assert_eq(parse(g, n), KW_ERR_INVALID);
	/* 16 KiB that starts with a valid key. */
	char key[KW_APIKEY_LEN + 1];
	make_key(good_id, good_secret, key);
	memcpy(g, key, KW_APIKEY_LEN);
	cr_assert_eq(parse(g, n), KW_ERR_INVALID);
	/* Every 65-byte window of pseudo-random bytes. */
	for (size_t i = 0; i < n; i++)
		g[i] = (char)((i * 2654435761u) >> 13);
	for (size_t off = 0; off + KW_APIKEY_LEN <= n; off += 97)
		cr_assert_eq(parse(g + off, KW_APIKEY_LEN), KW_ERR_INVALID);
	free(g);
}

Test(apikey, scope_names_round_trip)
{
	static const char *names[] = {"admin",           "auth:issue",   "transit:encrypt",
	                              "transit:decrypt", "secrets:read", "secrets:write"};
	uint32_t all = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		uint32_t bit = kw_scope_from_name(names[i]);
		cr_assert_neq(bit, 0, "%s unknown", names[i]);
		cr_assert_eq(bit & (bit - 1), 0, "%s is not one bit", names[i]);
		cr_assert_eq(all & bit, 0, "%s shares a bit", names[i]);
		all |= bit;
		cr_assert_str_eq(kw_scope_name(bit), names[i]);
	}
	cr_assert_eq(kw_scope_from_name("admin"), KW_SCOPE_ADMIN);
	cr_assert_eq(kw_scope_from_name("secrets:write"), KW_SCOPE_SECRETS_WRITE);
}

Test(apikey, unknown_scopes)
{
	cr_assert_eq(kw_scope_from_name("Admin"), 0);
	cr_assert_eq(kw_scope_from_name("admin "), 0);
	cr_assert_eq(kw_scope_from_name(""), 0);
	cr_assert_eq(kw_scope_from_name("transit:*"), 0);
	cr_assert_eq(kw_scope_from_name("root"), 0);
	cr_assert_eq(kw_scope_from_name(NULL), 0);
	cr_assert_null(kw_scope_name(0));
	cr_assert_null(kw_scope_name(KW_SCOPE_ADMIN | KW_SCOPE_AUTH_ISSUE));
	cr_assert_null(kw_scope_name(1u << 20));
	cr_assert_null(kw_scope_name(1u << 31));
}
