/* keyward-sign.c — see keyward-sign.h. Independent of the server's code:
 * the scheme as DESIGN 5.6 writes it, with OpenSSL's SHA-256 and HMAC. */
#include "keyward-sign.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
static const char nonce_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int secret_ok(const char *s)
{
	unsigned char md[32];
	if (s == NULL || strlen(s) != 53 || strncmp(s, "kws_", 4) != 0)
		return 0;
	for (size_t i = 4; i < 53; i++)
		if (strchr(b62, s[i]) == NULL)
			return 0;
	if (EVP_Digest(s, 47, md, NULL, EVP_sha256(), NULL) != 1)
		return 0;
	/* The first 4 bytes of the digest, big-endian, as 6 base62 digits. */
	unsigned long v =
	    (unsigned long)md[0] << 24 | (unsigned long)md[1] << 16 | (unsigned long)md[2] << 8 | md[3];
	char sum[6];
	for (int i = 5; i >= 0; i--) {
		sum[i] = b62[v % 62];
		v /= 62;
	}
	return CRYPTO_memcmp(sum, s + 47, 6) == 0;
}

static int kid_ok(const char *k)
{
	if (k == NULL || strlen(k) != 36)
		return 0;
	for (int i = 0; i < 36; i++) {
		char c = k[i];
		int dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? c != '-'
		         : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return 0;
	}
	return 1;
}

static int nonce_ok(const char *n)
{
	size_t len = n ? strlen(n) : 0;
	if (len < 22 || len > 128)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (strchr(nonce_chars, n[i]) == NULL)
			return 0;
	return 1;
}

long keyward_sign_canonical(const char *method, const char *target, const char *timestamp, const char *nonce,
                            const unsigned char *body, size_t body_len, char *buf, size_t cap)
{
	unsigned char h[32];
	char hex[65];
	if (EVP_Digest(body_len ? (const void *)body : "", body_len, h, NULL, EVP_sha256(), NULL) != 1)
		return -1;
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	int n = snprintf(buf, cap, "%s\n%s\n%s\n%s\n%s", method, target, timestamp, nonce, hex);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

int keyward_sign(const char *kid, const char *secret, const char *method, const char *target,
                 const unsigned char *body, size_t body_len, int64_t now_ms, const char *nonce,
                 keyward_sign_headers *out)
{
	if (!kid_ok(kid) || !secret_ok(secret) || method == NULL || target == NULL ||
	    (nonce && !nonce_ok(nonce)))
		return -1;
	if (now_ms == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	}
	snprintf(out->timestamp, sizeof(out->timestamp), "%lld", (long long)now_ms);
	if (nonce != NULL) {
		snprintf(out->nonce, sizeof(out->nonce), "%s", nonce);
	} else {
		unsigned char r[32];
		if (RAND_bytes(r, sizeof(r)) != 1)
			return -1;
		for (int i = 0; i < 32; i++)
			out->nonce[i] = nonce_chars[r[i] & 63];
		out->nonce[32] = '\0';
	}
	size_t cap = strlen(method) + strlen(target) + 256;
	char *canon = OPENSSL_malloc(cap);
	long len = canon ? keyward_sign_canonical(method, target, out->timestamp, out->nonce, body, body_len,
	                                          canon, cap)
	                 : -1;
	unsigned char mac[32];
	unsigned int maclen = 0;
	int ok = len >= 0 &&
	         HMAC(EVP_sha256(), secret, 53, (const unsigned char *)canon, (size_t)len, mac, &maclen) &&
	         maclen == 32;
	OPENSSL_free(canon);
	if (!ok)
		return -1;
	int n = snprintf(out->signature, sizeof(out->signature), "kid=%s;hmac-sha256=", kid);
	for (int i = 0; i < 32; i++)
		n += snprintf(out->signature + n, sizeof(out->signature) - (size_t)n, "%02x", mac[i]);
	OPENSSL_cleanse(mac, sizeof(mac));
	for (char *p = out->signature + 4; p < out->signature + 40; p++) /* the kid in lower case */
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	return 0;
}
