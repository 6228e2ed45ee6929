/* apikey.c — API key format: generation, parsing, checksum, keyed hash.
 *
 * A key is "kw_" + public id (12 base62) + "_" + secret (43 base62: the
 * 256 random bits from the token, as one big-endian number) + checksum (6
 * base62: the first 4 bytes of SHA-256 over the 59 characters before it).
 * Every random character comes from the token's RNG and is unbiased. The
 * parser does no I/O and reads exactly len bytes, so a typo or garbage is
 * refused before any database or token work. This file never logs a key,
 * and wipes every temporary that held part of one. */
#include "keyward/auth/apikey.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#define KW_B62          "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#define KW_ID_LEN       12
#define KW_SECRET_BYTES 32
#define KW_SECRET_LEN   43
#define KW_CHECKSUM_LEN 6
#define KW_CHECKED_LEN  (KW_APIKEY_LEN - KW_CHECKSUM_LEN) /* 59 */
#define KW_SECRET_AT    (KW_APIKEY_PREFIX_LEN + 1)        /* 16 */
/* Bytes below 248 = 4 * 62 map to a base62 digit without bias. */
#define KW_B62_REJECT 248
#define KW_ID_RANDOM  32

static const char b62[] = KW_B62;

static bool is_b62(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Writes the big-endian number in[0..n) as exactly outlen base62 digits,
 * left-padded with '0'. The caller sizes outlen so the number fits
 * (62^43 > 2^256, 62^6 > 2^32). Consumes (zeroes) in. */
static void b62_encode(unsigned char *in, size_t n, char *out, size_t outlen)
{
	for (size_t pos = outlen; pos > 0; pos--) {
		unsigned rem = 0;
		/* One long division of the whole number by 62. */
		for (size_t i = 0; i < n; i++) {
			unsigned cur = (rem << 8) | in[i];
			in[i] = (unsigned char)(cur / 62);
			rem = cur % 62;
		}
		out[pos - 1] = b62[rem];
	}
}

/* The 6 checksum characters of the first KW_CHECKED_LEN characters. */
static kw_err checksum(const char *key, char out[KW_CHECKSUM_LEN])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned char be[4];
	unsigned int mdlen = 0;
	kw_err err = KW_OK;

	if (EVP_Digest(key, KW_CHECKED_LEN, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 4) {
		err = KW_ERR_INTERNAL;
		goto done;
	}
	memcpy(be, md, sizeof(be));
	b62_encode(be, sizeof(be), out, KW_CHECKSUM_LEN);
done:
	OPENSSL_cleanse(md, sizeof(md));
	OPENSSL_cleanse(be, sizeof(be));
	return err;
}

kw_err kw_apikey_generate(kw_hsm_session *s, char key[KW_APIKEY_LEN + 1],
                          char prefix[KW_APIKEY_PREFIX_LEN + 1])
{
	kw_err err = KW_OK;
	unsigned char secret[KW_SECRET_BYTES];
	unsigned char rnd[KW_ID_RANDOM];
	char k[KW_APIKEY_LEN + 1];
	size_t have = 0;

	if (s == NULL || key == NULL || prefix == NULL)
		kw_misuse("kw_apikey_generate: NULL argument");
	memcpy(k, "kw_", 3);
	/* The public id: rejection sampling, so each character is uniform. */
	while (have < KW_ID_LEN) {
		err = kw_hsm_random(s, rnd, sizeof(rnd));
		if (err != KW_OK)
			goto done;
		for (size_t i = 0; i < sizeof(rnd) && have < KW_ID_LEN; i++)
			if (rnd[i] < KW_B62_REJECT)
				k[3 + have++] = b62[rnd[i] % 62];
	}
	k[KW_APIKEY_PREFIX_LEN] = '_';
	err = kw_hsm_random(s, secret, sizeof(secret));
	if (err != KW_OK)
		goto done;
	b62_encode(secret, sizeof(secret), k + KW_SECRET_AT, KW_SECRET_LEN);
	err = checksum(k, k + KW_CHECKED_LEN);
	if (err != KW_OK)
		goto done;
	k[KW_APIKEY_LEN] = '\0';

	memcpy(key, k, sizeof(k));
	memcpy(prefix, k, KW_APIKEY_PREFIX_LEN);
	prefix[KW_APIKEY_PREFIX_LEN] = '\0';
done:
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(rnd, sizeof(rnd));
	OPENSSL_cleanse(k, sizeof(k));
	return err;
}

kw_err kw_apikey_parse(const char *key, size_t len, char prefix[KW_APIKEY_PREFIX_LEN + 1])
{
	kw_err err = KW_OK;
	char sum[KW_CHECKSUM_LEN];

	if (prefix == NULL)
		kw_misuse("kw_apikey_parse: NULL prefix");
	if (key == NULL || len != KW_APIKEY_LEN)
		return KW_ERR_INVALID;
	if (key[0] != 'k' || key[1] != 'w' || key[2] != '_' || key[KW_APIKEY_PREFIX_LEN] != '_')
		return KW_ERR_INVALID;
	for (size_t i = 3; i < KW_APIKEY_LEN; i++)
		if (i != KW_APIKEY_PREFIX_LEN && !is_b62(key[i]))
			return KW_ERR_INVALID;
	err = checksum(key, sum);
	if (err != KW_OK)
		goto done;
	if (CRYPTO_memcmp(sum, key + KW_CHECKED_LEN, KW_CHECKSUM_LEN) != 0) {
		err = KW_ERR_INVALID;
		goto done;
	}
	memcpy(prefix, key, KW_APIKEY_PREFIX_LEN);
	prefix[KW_APIKEY_PREFIX_LEN] = '\0';
done:
	OPENSSL_cleanse(sum, sizeof(sum));
	return err;
}

kw_err kw_apikey_hmac(kw_hsm_session *s, const kw_hsm_key *pepper, const char *key, size_t len,
                      unsigned char out[KW_HMAC_LEN])
{
	if (s == NULL || pepper == NULL || out == NULL)
		kw_misuse("kw_apikey_hmac: NULL argument");
	if (key == NULL || len == 0)
		return KW_ERR_INVALID;
	if (kw_hsm_key_family(pepper) != KW_KEY_PEPPER)
		kw_misuse("kw_apikey_hmac: not a pepper key");
	return kw_hsm_hmac(s, pepper, (const unsigned char *)key, len, out);
}
