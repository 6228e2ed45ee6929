/* ops.c — the operations keyward asks of the token, and their counters.
 *
 * Random bytes, AES-256-GCM (single-part C_Encrypt/C_Decrypt, 96-bit IV,
 * 128-bit tag), HMAC-SHA256, HKDF-Expand (one C_Sign per block), ECDSA
 * P-256 over a SHA-256 computed in process, and the JWT public point.
 * Each operation is one attempt function run by kw_hsm_run, so a dead
 * session is revived and the whole operation retried once. Results land in
 * a temporary buffer (mlocked when secret) and reach the caller's buffer
 * only on success; every secret temporary is wiped with OPENSSL_cleanse. */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsm_internal.h"
#include "keyward/core/log.h"

/* Some modules reject a NULL input pointer even with a zero length. */
static const unsigned char empty_input[1];

const char *kw_hsm_op_name(kw_hsm_op op)
{
	switch (op) {
	case KW_HSM_OP_RANDOM:
		return "random";
	case KW_HSM_OP_ENCRYPT:
		return "encrypt";
	case KW_HSM_OP_DECRYPT:
		return "decrypt";
	case KW_HSM_OP_SIGN_HMAC:
		return "hmac";
	case KW_HSM_OP_SIGN_ECDSA:
		return "ecdsa_sign";
	case KW_HSM_OP_OTHER:
		return "other";
	case KW_HSM_OP_COUNT:
		break;
	}
	return "other";
}

void kw_hsm_stats_add(kw_hsm *hsm, kw_hsm_op op, bool ok, uint64_t usec)
{
	if ((unsigned)op >= KW_HSM_OP_COUNT)
		op = KW_HSM_OP_OTHER;
	atomic_fetch_add_explicit(&hsm->st_count[op], 1, memory_order_relaxed);
	if (!ok)
		atomic_fetch_add_explicit(&hsm->st_errors[op], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&hsm->st_usec[op], usec, memory_order_relaxed);
}

void kw_hsm_stats_get(kw_hsm *hsm, kw_hsm_stats *out)
{
	kw_hsm_stats st;
	memset(&st, 0, sizeof(st));
	for (int i = 0; i < KW_HSM_OP_COUNT; i++) {
		st.count[i] = atomic_load_explicit(&hsm->st_count[i], memory_order_relaxed);
		st.errors[i] = atomic_load_explicit(&hsm->st_errors[i], memory_order_relaxed);
		st.usec[i] = atomic_load_explicit(&hsm->st_usec[i], memory_order_relaxed);
	}
	st.revived_sessions = atomic_load(&hsm->st_revived);
	*out = st;
}

static bool is_mac_family(kw_key_family f)
{
	return f == KW_KEY_DERIVE || f == KW_KEY_PEPPER || f == KW_KEY_AUDIT;
}

/* ---- random ---------------------------------------------------------- */

typedef struct random_ctx {
	unsigned char *buf;
	size_t len;
} random_ctx;

static CK_RV random_attempt(kw_hsm_session *s, void *arg)
{
	random_ctx *c = arg;
	return kw_p11_GenerateRandom(s->hsm, s->h, c->buf, (CK_ULONG)c->len);
}

#define KW_RAND_POOL 4096

kw_err kw_hsm_random(kw_hsm_session *s, unsigned char *buf, size_t len)
{
	kw_err err;
	random_ctx c = {.len = len};

	if (len == 0)
		return KW_OK;
	if (len > KW_RAND_POOL / 16) {
		c.buf = buf;
		err = kw_hsm_run(s, KW_HSM_OP_RANDOM, random_attempt, &c);
		if (err != KW_OK)
			OPENSSL_cleanse(buf, len);
		return err;
	}
	/* Small requests (tokens, nonces, IVs) come from a per-session pool
	 * filled by one C_GenerateRandom: one token call per ~100 requests. */
	if (s->rand_pool == NULL || s->rand_used + len > KW_RAND_POOL) {
		if (s->rand_pool == NULL && (s->rand_pool = kw_secret_new(KW_RAND_POOL)) == NULL)
			return KW_ERR_NOMEM;
		c.buf = kw_secret_data(s->rand_pool);
		c.len = KW_RAND_POOL;
		err = kw_hsm_run(s, KW_HSM_OP_RANDOM, random_attempt, &c);
		if (err != KW_OK) {
			s->rand_used = KW_RAND_POOL; /* nothing usable */
			return err;
		}
		s->rand_used = 0;
	}
	unsigned char *p = kw_secret_data(s->rand_pool) + s->rand_used;
	memcpy(buf, p, len);
	OPENSSL_cleanse(p, len);
	s->rand_used += len;
	return KW_OK;
}

/* ---- in-process subkeys ------------------------------------------------ */

static EVP_MAC *hmac_alg;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
	hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* OpenSSL's HMAC, fetched once per process (holds no key). */
static EVP_MAC *kw_hmac_mac(void)
{
	pthread_once(&hmac_once, hmac_fetch);
	return hmac_alg;
}

kw_err kw_hsm_subkey_hmac(kw_hsm_session *s, const kw_hsm_key *k, const char *purpose,
                          const unsigned char *data, size_t len, unsigned char out[KW_HMAC_LEN])
{
	kw_hsm *hsm = s->hsm;
	kw_key_family f = kw_hsm_key_family(k);
	uint32_t v = kw_hsm_key_version(k);
	if (strlen(purpose) >= sizeof(((struct kw_hsm_subkey *)0)->purpose))
		return KW_ERR_INVALID;
	pthread_mutex_lock(&hsm->subkeys_lock);
	struct kw_hsm_subkey *sk = hsm->subkeys;
	while (sk != NULL && (sk->family != f || sk->version != v || strcmp(sk->purpose, purpose) != 0))
		sk = sk->next;
	pthread_mutex_unlock(&hsm->subkeys_lock);
	if (sk == NULL) {
		/* Derive outside the lock; a racing thread derives the same bytes. */
		struct kw_hsm_subkey *n = calloc(1, sizeof(*n));
		kw_secret *key = n ? kw_secret_new(KW_HMAC_LEN) : NULL;
		kw_err err = key ? kw_hsm_hkdf_expand(s, k, (const unsigned char *)purpose, strlen(purpose),
		                                      kw_secret_data(key), KW_HMAC_LEN)
		                 : KW_ERR_NOMEM;
		if (err != KW_OK) {
			kw_secret_free(key);
			free(n);
			return err;
		}
		n->family = f;
		n->version = v;
		snprintf(n->purpose, sizeof(n->purpose), "%s", purpose);
		n->key = key;
		pthread_mutex_lock(&hsm->subkeys_lock);
		n->next = hsm->subkeys;
		hsm->subkeys = n;
		pthread_mutex_unlock(&hsm->subkeys_lock);
		sk = n;
	}
	/* Keyed afresh for each MAC from the locked copy: no keyed context
	 * (its ipad/opad states are as good as the key) outlives the call;
	 * OpenSSL wipes them when the context is freed, and keeps its own copy
	 * of the key in its secure heap (locked, when kw_secure_heap_init ran). */
	static const OSSL_PARAM sha256[] = {OSSL_PARAM_utf8_string("digest", (char *)"SHA256", 6),
	                                    OSSL_PARAM_END};
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(kw_hmac_mac());
	size_t ml = 0;
	bool ok = ctx != NULL && EVP_MAC_init(ctx, kw_secret_data(sk->key), KW_HMAC_LEN, sha256) == 1 &&
	          EVP_MAC_update(ctx, data, len) == 1 && EVP_MAC_final(ctx, out, &ml, KW_HMAC_LEN) == 1 &&
	          ml == KW_HMAC_LEN;
	EVP_MAC_CTX_free(ctx);
	if (!ok)
		return KW_ERR_INTERNAL;
	return KW_OK;
}

/* ---- AES-256-GCM ----------------------------------------------------- */

typedef struct gcm_ctx {
	const kw_hsm_key *k;
	bool decrypt;
	bool fresh_iv; /* draw the IV from the token's RNG on this session */
	unsigned char iv[KW_GCM_IV_LEN];
	const unsigned char *aad;
	size_t aadlen;
	const unsigned char *in;
	size_t inlen;
	unsigned char *out;
	size_t outcap, outlen;
} gcm_ctx;

static CK_RV gcm_attempt(kw_hsm_session *s, void *arg)
{
	gcm_ctx *c = arg;
	kw_hsm *hsm = s->hsm;
	CK_OBJECT_HANDLE key;
	CK_RV rv = kw_hsm_key_use(s, c->k, &key);
	if (rv != CKR_OK)
		return rv;
	if (c->fresh_iv) {
		rv = kw_p11_GenerateRandom(hsm, s->h, c->iv, KW_GCM_IV_LEN);
		if (rv != CKR_OK)
			return rv;
		/* Never a zero IV: an all-zero draw means a broken RNG. */
		static const unsigned char zero_iv[KW_GCM_IV_LEN];
		if (CRYPTO_memcmp(c->iv, zero_iv, KW_GCM_IV_LEN) == 0) {
			kw_err_log("hsm: the token's RNG returned an all-zero IV");
			return CKR_FUNCTION_FAILED;
		}
	}
	CK_GCM_PARAMS p = {
	    .pIv = c->iv,
	    .ulIvLen = KW_GCM_IV_LEN,
	    .ulIvBits = KW_GCM_IV_LEN * 8,
	    .pAAD = c->aadlen ? (CK_BYTE_PTR)c->aad : NULL,
	    .ulAADLen = (CK_ULONG)c->aadlen,
	    .ulTagBits = KW_GCM_TAG_LEN * 8,
	};
	CK_MECHANISM m = {CKM_AES_GCM, &p, sizeof(p)};
	const unsigned char *in = c->inlen ? c->in : empty_input;
	CK_ULONG outlen = (CK_ULONG)c->outcap;
	if (c->decrypt) {
		rv = kw_p11_DecryptInit(hsm, s->h, &m, key);
		if (rv == CKR_OK) {
			rv = kw_p11_Decrypt(hsm, s->h, in, (CK_ULONG)c->inlen, c->out, &outlen);
			/* SoftHSM reports a GCM tag mismatch as a general error;
			 * an AEAD decrypt that fails must fail closed anyway. */
			if (rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED)
				rv = CKR_ENCRYPTED_DATA_INVALID;
		}
	} else {
		rv = kw_p11_EncryptInit(hsm, s->h, &m, key);
		if (rv == CKR_OK)
			rv = kw_p11_Encrypt(hsm, s->h, in, (CK_ULONG)c->inlen, c->out, &outlen);
	}
	if (rv == CKR_OK)
		c->outlen = outlen;
	return rv;
}

/* Every input was checked before the call: a token that still calls one
 * invalid (CKR_DATA_INVALID, CKR_KEY_FUNCTION_NOT_PERMITTED, ...) is at
 * fault, and its answer must not read as "this caller's data is bad". */
static kw_err tokens_fault(kw_err err)
{
	return err == KW_ERR_INVALID ? KW_ERR_HSM : err;
}

static kw_err gcm_encrypt(kw_hsm_session *s, const kw_hsm_key *k, bool fresh_iv,
                          unsigned char iv[KW_GCM_IV_LEN], const unsigned char *aad, size_t aadlen,
                          const unsigned char *pt, size_t ptlen, unsigned char *out)
{
	kw_err err;
	gcm_ctx c = {.k = k, .fresh_iv = fresh_iv, .aad = aad, .aadlen = aadlen, .in = pt, .inlen = ptlen};

	if (k->family != KW_KEY_KEK || (aadlen && aad == NULL) || (ptlen && pt == NULL))
		return KW_ERR_INVALID;
	if (ptlen > SIZE_MAX / 2)
		return KW_ERR_INVALID;
	if (!fresh_iv)
		memcpy(c.iv, iv, KW_GCM_IV_LEN);
	/* Room for the tag plus slack: a module that asks for more than it
	 * writes must not leave the operation active. */
	c.outcap = ptlen + 2 * KW_GCM_TAG_LEN;
	c.out = malloc(c.outcap);
	if (c.out == NULL)
		return KW_ERR_NOMEM;
	err = tokens_fault(kw_hsm_run(s, KW_HSM_OP_ENCRYPT, gcm_attempt, &c));
	if (err == KW_OK && c.outlen != ptlen + KW_GCM_TAG_LEN) {
		kw_err_log("hsm: AES-GCM returned %zu bytes for %zu", c.outlen, ptlen);
		err = KW_ERR_HSM;
	}
	if (err == KW_OK) {
		memcpy(out, c.out, c.outlen);
		if (fresh_iv)
			memcpy(iv, c.iv, KW_GCM_IV_LEN);
	}
	free(c.out);
	return err;
}

kw_err kw_hsm_gcm_encrypt(kw_hsm_session *s, const kw_hsm_key *k, const unsigned char *aad, size_t aadlen,
                          const unsigned char *pt, size_t ptlen, unsigned char iv[KW_GCM_IV_LEN],
                          unsigned char *out)
{
	return gcm_encrypt(s, k, true, iv, aad, aadlen, pt, ptlen, out);
}

kw_err kw_hsm_gcm_encrypt_iv(kw_hsm_session *s, const kw_hsm_key *k, const unsigned char iv[KW_GCM_IV_LEN],
                             const unsigned char *aad, size_t aadlen, const unsigned char *pt, size_t ptlen,
                             unsigned char *out)
{
	unsigned char ivc[KW_GCM_IV_LEN];
	memcpy(ivc, iv, KW_GCM_IV_LEN);
	return gcm_encrypt(s, k, false, ivc, aad, aadlen, pt, ptlen, out);
}

kw_err kw_hsm_gcm_decrypt(kw_hsm_session *s, const kw_hsm_key *k, const unsigned char iv[KW_GCM_IV_LEN],
                          const unsigned char *aad, size_t aadlen, const unsigned char *ct, size_t ctlen,
                          unsigned char *out)
{
	kw_err err;
	kw_secret *pt = NULL;
	gcm_ctx c = {.k = k, .decrypt = true, .aad = aad, .aadlen = aadlen, .in = ct, .inlen = ctlen};

	if (k->family != KW_KEY_KEK || (aadlen && aad == NULL) || ct == NULL)
		return KW_ERR_INVALID;
	/* Shorter than a tag cannot be anything we wrote. */
	if (ctlen < KW_GCM_TAG_LEN)
		return KW_ERR_VERIFY;
	if (ctlen > SIZE_MAX / 2)
		return KW_ERR_INVALID;
	memcpy(c.iv, iv, KW_GCM_IV_LEN);
	/* Tokens (SoftHSM) want room for the whole input, tag included. */
	c.outcap = ctlen + KW_GCM_TAG_LEN;
	pt = kw_secret_new(c.outcap);
	if (pt == NULL)
		return KW_ERR_NOMEM;
	c.out = kw_secret_data(pt);
	err = tokens_fault(kw_hsm_run(s, KW_HSM_OP_DECRYPT, gcm_attempt, &c));
	if (err == KW_OK && c.outlen != ctlen - KW_GCM_TAG_LEN) {
		kw_err_log("hsm: AES-GCM decrypt returned %zu bytes for %zu", c.outlen, ctlen);
		err = KW_ERR_HSM;
	}
	if (err == KW_OK && c.outlen > 0)
		memcpy(out, c.out, c.outlen);
	kw_secret_free(pt);
	return err;
}

/* ---- HMAC, HKDF, ECDSA ----------------------------------------------- */

typedef struct sign_ctx {
	const kw_hsm_key *k;
	CK_MECHANISM_TYPE mech;
	const unsigned char *in;
	size_t inlen;
	unsigned char out[64];
	size_t outlen;
} sign_ctx;

static CK_RV sign_attempt(kw_hsm_session *s, void *arg)
{
	sign_ctx *c = arg;
	CK_OBJECT_HANDLE key;
	CK_MECHANISM m = {c->mech, NULL, 0};
	CK_ULONG outlen = sizeof(c->out);
	CK_RV rv = kw_hsm_key_use(s, c->k, &key);
	if (rv == CKR_OK)
		rv = kw_p11_SignInit(s->hsm, s->h, &m, key);
	if (rv == CKR_OK)
		rv = kw_p11_Sign(s->hsm, s->h, c->inlen ? c->in : empty_input, (CK_ULONG)c->inlen, c->out,
		                 &outlen);
	if (rv == CKR_OK)
		c->outlen = outlen;
	return rv;
}

kw_err kw_hsm_hmac(kw_hsm_session *s, const kw_hsm_key *k, const unsigned char *data, size_t len,
                   unsigned char out[KW_HMAC_LEN])
{
	kw_err err;
	sign_ctx c = {.k = k, .mech = CKM_SHA256_HMAC, .in = data, .inlen = len};

	if (!is_mac_family(k->family) || (len && data == NULL))
		return KW_ERR_INVALID;
	err = kw_hsm_run(s, KW_HSM_OP_SIGN_HMAC, sign_attempt, &c);
	if (err == KW_OK && c.outlen != KW_HMAC_LEN) {
		kw_err_log("hsm: HMAC-SHA256 returned %zu bytes", c.outlen);
		err = KW_ERR_HSM;
	}
	if (err == KW_OK)
		memcpy(out, c.out, KW_HMAC_LEN);
	OPENSSL_cleanse(c.out, sizeof(c.out));
	return err;
}

typedef struct hkdf_ctx {
	const kw_hsm_key *k;
	const unsigned char *info;
	size_t infolen;
	unsigned char *buf; /* T(i-1) || info || i, mlocked */
	unsigned char *out; /* mlocked */
	size_t outlen;
} hkdf_ctx;

static CK_RV hkdf_attempt(kw_hsm_session *s, void *arg)
{
	hkdf_ctx *c = arg;
	CK_OBJECT_HANDLE key;
	CK_MECHANISM m = {CKM_SHA256_HMAC, NULL, 0};
	unsigned char t[KW_HMAC_LEN] = {0};
	size_t tlen = 0, done = 0;
	CK_RV rv = kw_hsm_key_use(s, c->k, &key);

	/* RFC 5869 §2.3: T(i) = HMAC(PRK, T(i-1) || info || i), T(0) = "". */
	for (unsigned i = 1; rv == CKR_OK && done < c->outlen; i++) {
		size_t n = 0;
		memcpy(c->buf, t, tlen);
		n += tlen;
		if (c->infolen > 0)
			memcpy(c->buf + n, c->info, c->infolen);
		n += c->infolen;
		c->buf[n++] = (unsigned char)i;
		CK_ULONG got = sizeof(t);
		rv = kw_p11_SignInit(s->hsm, s->h, &m, key);
		if (rv == CKR_OK)
			rv = kw_p11_Sign(s->hsm, s->h, c->buf, (CK_ULONG)n, t, &got);
		if (rv == CKR_OK && got != KW_HMAC_LEN) {
			kw_err_log("hsm: HMAC-SHA256 returned %lu bytes", (unsigned long)got);
			rv = CKR_GENERAL_ERROR;
		}
		if (rv != CKR_OK)
			break;
		tlen = KW_HMAC_LEN;
		size_t take = c->outlen - done < KW_HMAC_LEN ? c->outlen - done : KW_HMAC_LEN;
		memcpy(c->out + done, t, take);
		done += take;
	}
	OPENSSL_cleanse(t, sizeof(t));
	return rv;
}

kw_err kw_hsm_hkdf_expand(kw_hsm_session *s, const kw_hsm_key *prk, const unsigned char *info, size_t infolen,
                          unsigned char *out, size_t outlen)
{
	kw_err err;
	kw_secret *buf = NULL, *okm = NULL;
	hkdf_ctx c = {.k = prk, .info = info, .infolen = infolen, .outlen = outlen};

	if (!is_mac_family(prk->family) || outlen == 0 || outlen > 255 * KW_HMAC_LEN ||
	    (infolen && info == NULL))
		return KW_ERR_INVALID;
	if (infolen > SIZE_MAX - KW_HMAC_LEN - 1)
		return KW_ERR_INVALID;
	buf = kw_secret_new(KW_HMAC_LEN + infolen + 1);
	okm = kw_secret_new(outlen);
	if (buf == NULL || okm == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	c.buf = kw_secret_data(buf);
	c.out = kw_secret_data(okm);
	err = kw_hsm_run(s, KW_HSM_OP_SIGN_HMAC, hkdf_attempt, &c);
	if (err == KW_OK)
		memcpy(out, c.out, outlen);
done:
	kw_secret_free(buf);
	kw_secret_free(okm);
	return err;
}

kw_err kw_hsm_ecdsa_sign(kw_hsm_session *s, const kw_hsm_key *k, const unsigned char *msg, size_t len,
                         unsigned char sig[KW_ECDSA_SIG_LEN])
{
	kw_err err;
	unsigned char md[32];
	unsigned int mdlen = 0;
	sign_ctx c = {.k = k, .mech = CKM_ECDSA, .in = md, .inlen = sizeof(md)};

	if (k->family != KW_KEY_JWT || (len && msg == NULL))
		return KW_ERR_INVALID;
	if (EVP_Digest(len ? msg : empty_input, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != sizeof(md))
		return KW_ERR_INTERNAL;
	err = kw_hsm_run(s, KW_HSM_OP_SIGN_ECDSA, sign_attempt, &c);
	if (err == KW_OK && c.outlen != KW_ECDSA_SIG_LEN) {
		kw_err_log("hsm: ECDSA returned a %zu-byte signature", c.outlen);
		err = KW_ERR_HSM;
	}
	if (err == KW_OK)
		memcpy(sig, c.out, KW_ECDSA_SIG_LEN);
	return err;
}

kw_err kw_hsm_public_key(kw_hsm *hsm, const kw_hsm_key *k, unsigned char pub[KW_EC_POINT_LEN])
{
	kw_err err = KW_ERR_NOT_FOUND;
	if (k->family != KW_KEY_JWT)
		return KW_ERR_INVALID;
	pthread_rwlock_rdlock(&hsm->keys_lock);
	if (!k->gone && k->have_pub) {
		memcpy(pub, k->pub, KW_EC_POINT_LEN);
		err = KW_OK;
	}
	pthread_rwlock_unlock(&hsm->keys_lock);
	return err;
}
