/* signature.c — see keyward/auth/signature.h. */
#include "keyward/auth/signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyward/core/secret.h"
#include "keyward/core/text.h"

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* --- the secret ------------------------------------------------------------ */

/* in[0..n) as exactly outlen base62 digits (consumes in). */
static void b62_encode(unsigned char *in, size_t n, char *out, size_t outlen)
{
	for (size_t pos = outlen; pos > 0; pos--) {
		unsigned rem = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned cur = (rem << 8) | in[i];
			in[i] = (unsigned char)(cur / 62);
			rem = cur % 62;
		}
		out[pos - 1] = b62[rem];
	}
}

static bool checksum(const char *s, char out[6])
{
	unsigned char md[32];
	if (EVP_Digest(s, KW_SIG_SECRET_LEN - 6, md, NULL, EVP_sha256(), NULL) != 1)
		return false;
	b62_encode(md, 4, out, 6);
	OPENSSL_cleanse(md, sizeof(md));
	return true;
}

kw_err kw_sig_secret_generate(kw_hsm_session *s, char out[KW_SIG_SECRET_LEN + 1])
{
	unsigned char rnd[32];
	char k[KW_SIG_SECRET_LEN + 1];
	kw_err err = kw_hsm_random(s, rnd, sizeof(rnd));
	if (err == KW_OK) {
		memcpy(k, "kws_", 4);
		b62_encode(rnd, sizeof(rnd), k + 4, 43);
		err = checksum(k, k + 47) ? KW_OK : KW_ERR_INTERNAL;
		k[KW_SIG_SECRET_LEN] = '\0';
	}
	if (err == KW_OK)
		memcpy(out, k, sizeof(k));
	OPENSSL_cleanse(rnd, sizeof(rnd));
	OPENSSL_cleanse(k, sizeof(k));
	return err;
}

bool kw_sig_secret_ok(const char *secret, size_t len)
{
	char sum[6];
	if (secret == NULL || len != KW_SIG_SECRET_LEN || memcmp(secret, "kws_", 4) != 0)
		return false;
	for (size_t i = 4; i < len; i++)
		if (strchr(b62, secret[i]) == NULL || secret[i] == '\0')
			return false;
	bool ok = checksum(secret, sum) && CRYPTO_memcmp(sum, secret + 47, 6) == 0;
	OPENSSL_cleanse(sum, sizeof(sum));
	return ok;
}

/* --- headers and the canonical string ---------------------------------------- */

kw_err kw_sig_parse(const char *ts, const char *nonce, const char *sig, kw_sig_headers *out)
{
	memset(out, 0, sizeof(*out));
	if (ts == NULL || nonce == NULL || sig == NULL)
		return KW_ERR_INVALID;
	/* Timestamp: 1-16 decimal digits, no sign, no leading zero. */
	size_t n = strnlen(ts, 17);
	if (n == 0 || n > 16 || (ts[0] == '0' && n > 1))
		return KW_ERR_INVALID;
	int64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (ts[i] < '0' || ts[i] > '9')
			return KW_ERR_INVALID;
		v = v * 10 + (ts[i] - '0');
	}
	out->ts_ms = v;
	memcpy(out->ts_text, ts, n + 1);
	/* Nonce: 22-128 of [A-Za-z0-9_-]. */
	n = strnlen(nonce, KW_SIG_NONCE_MAX + 1);
	if (n < KW_SIG_NONCE_MIN || n > KW_SIG_NONCE_MAX)
		return KW_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		char c = nonce[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return KW_ERR_INVALID;
	}
	memcpy(out->nonce, nonce, n + 1);
	/* Exactly "kid=<uuid>;hmac-sha256=<64 lower hex>". */
	static const char k[] = "kid=", h[] = ";hmac-sha256=";
	if (strnlen(sig, 200) != 4 + 36 + 13 + 64 || strncmp(sig, k, 4) != 0 || strncmp(sig + 40, h, 13) != 0)
		return KW_ERR_INVALID;
	memcpy(out->kid, sig + 4, 36);
	out->kid[36] = '\0';
	if (!kw_is_uuid(out->kid) || !kw_is_lower_hex(sig + 53, 64) || !kw_hex_decode(sig + 53, 32, out->mac))
		return KW_ERR_INVALID;
	for (size_t i = 0; i < 36; i++)
		if (out->kid[i] >= 'A' && out->kid[i] <= 'F')
			out->kid[i] = (char)(out->kid[i] - 'A' + 'a');
	return KW_OK;
}

/* HMAC, fetched once (never freed). */
static EVP_MAC *hmac;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
	hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

kw_err kw_sig_mac(const unsigned char *secret, size_t secret_len, const char *method, const char *target,
                  const char *ts_text, const char *nonce, const unsigned char *body, size_t body_len,
                  unsigned char out[KW_SIG_MAC_LEN])
{
	unsigned char bh[32];
	char bhex[65];
	if (EVP_Digest(body_len ? body : (const unsigned char *)"", body_len, bh, NULL, EVP_sha256(), NULL) !=
	    1)
		return KW_ERR_INTERNAL;
	kw_hex_encode(bh, sizeof(bh), bhex);
	pthread_once(&hmac_once, hmac_fetch);
	EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
	                       OSSL_PARAM_construct_end()};
	size_t outl = 0;
	bool ok = ctx != NULL && EVP_MAC_init(ctx, secret, secret_len, params) == 1;
	const char *parts[9] = {method, "\n", target, "\n", ts_text, "\n", nonce, "\n", bhex};
	for (size_t i = 0; ok && i < 9; i++)
		ok = EVP_MAC_update(ctx, (const unsigned char *)parts[i], strlen(parts[i])) == 1;
	ok = ok && EVP_MAC_final(ctx, out, &outl, KW_SIG_MAC_LEN) == 1 && outl == KW_SIG_MAC_LEN;
	EVP_MAC_CTX_free(ctx); /* wipes the key it copied */
	OPENSSL_cleanse(bh, sizeof(bh));
	return ok ? KW_OK : KW_ERR_INTERNAL;
}

/* --- the cache ------------------------------------------------------------------ */

typedef struct sig_slot {
	bool used;
	kw_sigkey key;
	int64_t put_at; /* monotonic seconds */
} sig_slot;

struct kw_sigcache {
	pthread_mutex_t mu;
	size_t n; /* a power of two */
	int ttl_s;
	uint64_t generation, seed;
	sig_slot *slots;
	kw_secret *slab; /* n × KW_SIG_SECRET_LEN */
};

static int64_t mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec;
}

static size_t slot_of(const kw_sigcache *c, const char *kid)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ c->seed;
	for (const char *p = kid; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	h ^= h >> 29;
	return (size_t)(h & (c->n - 1));
}

kw_sigcache *kw_sigcache_new(size_t slots, int ttl_s)
{
	kw_sigcache *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->n = 1;
	while (c->n < slots)
		c->n <<= 1;
	c->ttl_s = ttl_s;
	pthread_mutex_init(&c->mu, NULL);
	c->slots = calloc(c->n, sizeof(*c->slots));
	c->slab = kw_secret_new(c->n * KW_SIG_SECRET_LEN);
	if (c->slots == NULL || c->slab == NULL ||
	    RAND_bytes((unsigned char *)&c->seed, sizeof(c->seed)) != 1) {
		kw_sigcache_free(c);
		return NULL;
	}
	return c;
}

void kw_sigcache_free(kw_sigcache *c)
{
	if (c == NULL)
		return;
	kw_secret_free(c->slab);
	free(c->slots);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static void wipe_slot(kw_sigcache *c, size_t i)
{
	OPENSSL_cleanse(kw_secret_data(c->slab) + i * KW_SIG_SECRET_LEN, KW_SIG_SECRET_LEN);
	memset(&c->slots[i], 0, sizeof(c->slots[i]));
}

uint64_t kw_sigcache_generation(kw_sigcache *c)
{
	pthread_mutex_lock(&c->mu);
	uint64_t g = c->generation;
	pthread_mutex_unlock(&c->mu);
	return g;
}

bool kw_sigcache_get(kw_sigcache *c, const char *kid, kw_sigkey *key, unsigned char secret[KW_SIG_SECRET_LEN])
{
	size_t i = slot_of(c, kid);
	bool hit = false;
	pthread_mutex_lock(&c->mu);
	sig_slot *s = &c->slots[i];
	if (s->used && strcmp(s->key.kid, kid) == 0) {
		if (mono_s() - s->put_at >= c->ttl_s) {
			wipe_slot(c, i);
		} else {
			*key = s->key;
			memcpy(secret, kw_secret_data(c->slab) + i * KW_SIG_SECRET_LEN, KW_SIG_SECRET_LEN);
			hit = true;
		}
	}
	pthread_mutex_unlock(&c->mu);
	return hit;
}

void kw_sigcache_put(kw_sigcache *c, uint64_t gen, const kw_sigkey *key,
                     const unsigned char secret[KW_SIG_SECRET_LEN])
{
	size_t i = slot_of(c, key->kid);
	pthread_mutex_lock(&c->mu);
	if (gen == c->generation) {
		wipe_slot(c, i);
		c->slots[i] = (sig_slot){.used = true, .key = *key, .put_at = mono_s()};
		memcpy(kw_secret_data(c->slab) + i * KW_SIG_SECRET_LEN, secret, KW_SIG_SECRET_LEN);
	}
	pthread_mutex_unlock(&c->mu);
}

void kw_sigcache_drop(kw_sigcache *c, const char *kid)
{
	if (c == NULL)
		return;
	size_t i = slot_of(c, kid);
	pthread_mutex_lock(&c->mu);
	c->generation++;
	if (c->slots[i].used && strcmp(c->slots[i].key.kid, kid) == 0)
		wipe_slot(c, i);
	pthread_mutex_unlock(&c->mu);
}

void kw_sigcache_clear(kw_sigcache *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->generation++;
	for (size_t i = 0; i < c->n; i++)
		if (c->slots[i].used)
			wipe_slot(c, i);
	pthread_mutex_unlock(&c->mu);
}
