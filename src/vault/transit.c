/* transit.c — sealing, opening and the strings of transit ciphertexts
 * (see keyward/vault/transit.h). OpenSSL's EVP does the cryptography;
 * this file only frames it. Nothing here logs: plaintexts, ciphertexts
 * and keys never reach a log line, and errors never say which check
 * failed. */
#include "keyward/vault/transit.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENC_PREFIX "$enc1$v"
#define DET_PREFIX "$det1$v"

bool kw_transit_type_parse(const char *s, kw_transit_type *out)
{
	if (s != NULL && strcmp(s, "aes256-gcm") == 0)
		*out = KW_TRANSIT_AES256_GCM;
	else if (s != NULL && strcmp(s, "aes256-siv") == 0)
		*out = KW_TRANSIT_AES256_SIV;
	else
		return false;
	return true;
}

const char *kw_transit_type_name(kw_transit_type t)
{
	return t == KW_TRANSIT_AES256_SIV ? "aes256-siv" : "aes256-gcm";
}

size_t kw_transit_key_len(kw_transit_type t)
{
	return t == KW_TRANSIT_AES256_SIV ? KW_TRANSIT_SIV_KEY : KW_TRANSIT_GCM_KEY;
}

/* --- base64 (standard alphabet, padded, canonical) ------------------------ */

static size_t b64_len(size_t n)
{
	return 4 * ((n + 2) / 3);
}

/* Appends base64 of in to *at (room checked by the caller). */
static void b64_put(char **at, const unsigned char *in, size_t n)
{
	*at += EVP_EncodeBlock((unsigned char *)*at, in, (int)n);
}

/* Decodes exactly in[0..len) into out (cap bytes): canonical spellings
 * only (re-encoding gives the input back). -1 when it is not that. */
static long b64_get(const char *in, size_t len, unsigned char *out, size_t cap)
{
	if (len == 0)
		return 0;
	if (len % 4 != 0 || len / 4 * 3 > cap + 2)
		return -1;
	size_t pad = (in[len - 1] == '=') + (len > 1 && in[len - 2] == '=');
	unsigned char *tmp = malloc(len / 4 * 3);
	char *check = malloc(len + 1);
	long n = -1;
	if (tmp == NULL || check == NULL)
		goto done;
	int got = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
	if (got < 0 || (size_t)got < pad || (size_t)got - pad > cap)
		goto done;
	n = (long)((size_t)got - pad);
	if (EVP_EncodeBlock((unsigned char *)check, tmp, (int)n) != (int)len || memcmp(check, in, len) != 0) {
		n = -1; /* not canonical (stray bits, misplaced padding) */
		goto done;
	}
	memcpy(out, tmp, (size_t)n);
done:
	if (tmp != NULL)
		OPENSSL_cleanse(tmp, len / 4 * 3);
	free(tmp);
	free(check);
	return n;
}

/* --- AES-SIV -------------------------------------------------------------- */

/* The ciphers, fetched from the default provider once (an implicit fetch
 * per operation costs more than sealing 64 bytes). Never freed. */
static EVP_CIPHER *cipher_gcm, *cipher_siv128, *cipher_siv256;
static pthread_once_t ciphers_once = PTHREAD_ONCE_INIT;

static void ciphers_fetch(void)
{
	cipher_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	cipher_siv128 = EVP_CIPHER_fetch(NULL, "AES-128-SIV", NULL);
	cipher_siv256 = EVP_CIPHER_fetch(NULL, "AES-256-SIV", NULL);
}

static const EVP_CIPHER *gcm_cipher(void)
{
	pthread_once(&ciphers_once, ciphers_fetch);
	return cipher_gcm;
}

static const EVP_CIPHER *siv_cipher(size_t keylen)
{
	pthread_once(&ciphers_once, ciphers_fetch);
	if (keylen != 32 && keylen != 64)
		return NULL;
	return keylen == 32 ? cipher_siv128 : cipher_siv256;
}

kw_err kw_aes_siv_seal(const unsigned char *key, size_t keylen, const unsigned char *const *ad,
                       const size_t *adlen, size_t nad, const unsigned char *pt, size_t ptlen,
                       unsigned char siv[16], unsigned char *ct)
{
	const EVP_CIPHER *c = siv_cipher(keylen);
	EVP_CIPHER_CTX *x = c ? EVP_CIPHER_CTX_new() : NULL;
	int n = 0;
	bool ok = x != NULL && ptlen <= INT32_MAX && EVP_EncryptInit_ex2(x, c, key, NULL, NULL) == 1;
	for (size_t i = 0; ok && i < nad; i++)
		ok = adlen[i] <= INT32_MAX && EVP_EncryptUpdate(x, NULL, &n, ad[i], (int)adlen[i]) == 1;
	/* The plaintext goes in one update (SIV computes S2V over all of it). */
	ok = ok && EVP_EncryptUpdate(x, ct, &n, pt, (int)ptlen) == 1 && (size_t)n == ptlen &&
	     EVP_EncryptFinal_ex(x, ct + n, &n) == 1 &&
	     EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, siv) == 1;
	EVP_CIPHER_CTX_free(x);
	return ok ? KW_OK : KW_ERR_INTERNAL;
}

kw_err kw_aes_siv_open(const unsigned char *key, size_t keylen, const unsigned char *const *ad,
                       const size_t *adlen, size_t nad, const unsigned char siv[16], const unsigned char *ct,
                       size_t ctlen, unsigned char *pt)
{
	const EVP_CIPHER *c = siv_cipher(keylen);
	EVP_CIPHER_CTX *x = c ? EVP_CIPHER_CTX_new() : NULL;
	int n = 0;
	if (x == NULL || ctlen > INT32_MAX || EVP_DecryptInit_ex2(x, c, key, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, (void *)siv) != 1) {
		EVP_CIPHER_CTX_free(x);
		return KW_ERR_INTERNAL;
	}
	bool ok = true;
	for (size_t i = 0; ok && i < nad; i++)
		ok = adlen[i] <= INT32_MAX && EVP_DecryptUpdate(x, NULL, &n, ad[i], (int)adlen[i]) == 1;
	ok = ok && ctlen > 0 && EVP_DecryptUpdate(x, pt, &n, ct, (int)ctlen) == 1 && (size_t)n == ctlen;
	ok = ok && EVP_DecryptFinal_ex(x, pt + ctlen, &n) == 1;
	EVP_CIPHER_CTX_free(x);
	if (!ok && ctlen > 0)
		OPENSSL_cleanse(pt, ctlen);
	return ok ? KW_OK : KW_ERR_VERIFY;
}

/* --- AES-GCM -------------------------------------------------------------- */

/* One GCM operation. With keyed (a context already keyed for this
 * direction), only the IV is set and the context is kept; otherwise one is
 * made for key and freed (wiped by OpenSSL). */
static bool gcm(bool enc, EVP_CIPHER_CTX *keyed, const unsigned char *key, const unsigned char *iv,
                const unsigned char *aad, size_t aadlen, const unsigned char *in, size_t len,
                unsigned char *out, unsigned char tag[KW_TRANSIT_TAG])
{
	EVP_CIPHER_CTX *x = keyed ? keyed : EVP_CIPHER_CTX_new();
	const EVP_CIPHER *c = gcm_cipher();
	int n = 0;
	bool ok = x != NULL && c != NULL && len <= INT32_MAX && aadlen <= INT32_MAX &&
	          EVP_CipherInit_ex2(x, keyed ? NULL : c, keyed ? NULL : key, iv, enc ? 1 : 0, NULL) == 1 &&
	          (enc || EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, KW_TRANSIT_TAG, tag) == 1) &&
	          (aadlen == 0 || EVP_CipherUpdate(x, NULL, &n, aad, (int)aadlen) == 1) &&
	          (len == 0 || (EVP_CipherUpdate(x, out, &n, in, (int)len) == 1 && (size_t)n == len)) &&
	          EVP_CipherFinal_ex(x, out + len, &n) == 1 &&
	          (!enc || EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, KW_TRANSIT_TAG, tag) == 1);
	if (keyed == NULL)
		EVP_CIPHER_CTX_free(x);
	return ok;
}

/* --- sealers -------------------------------------------------------------- */

struct kw_transit_sealer {
	kw_transit_type type;
	const unsigned char *key; /* the caller's (locked) memory */
	EVP_CIPHER_CTX *gcm;      /* keyed once, for GCM */
};

kw_transit_sealer *kw_transit_sealer_new(kw_transit_type t, const unsigned char *key)
{
	kw_transit_sealer *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->type = t;
	s->key = key;
	if (t == KW_TRANSIT_AES256_GCM) {
		const EVP_CIPHER *c = gcm_cipher();
		s->gcm = c ? EVP_CIPHER_CTX_new() : NULL;
		if (s->gcm == NULL || EVP_EncryptInit_ex2(s->gcm, c, key, NULL, NULL) != 1) {
			kw_transit_sealer_free(s);
			return NULL;
		}
	}
	return s;
}

void kw_transit_sealer_free(kw_transit_sealer *s)
{
	if (s == NULL)
		return;
	EVP_CIPHER_CTX_free(s->gcm); /* OpenSSL wipes the key schedule */
	free(s);
}

/* --- strings -------------------------------------------------------------- */

kw_err kw_transit_seal(kw_transit_type t, uint32_t version, const unsigned char *key,
                       const unsigned char iv[KW_TRANSIT_GCM_IV], const unsigned char *ctx, size_t ctxlen,
                       const unsigned char *pt, size_t ptlen, char **out)
{
	kw_transit_sealer one = {.type = t, .key = key};
	return kw_transit_seal_with(&one, version, iv, ctx, ctxlen, pt, ptlen, out);
}

kw_err kw_transit_seal_with(kw_transit_sealer *sealer, uint32_t version,
                            const unsigned char iv[KW_TRANSIT_GCM_IV], const unsigned char *ctx,
                            size_t ctxlen, const unsigned char *pt, size_t ptlen, char **out)
{
	kw_transit_type t = sealer->type;
	const unsigned char *key = sealer->key;
	if (ptlen > KW_TRANSIT_MAX_PLAINTEXT || version == 0 || version > INT32_MAX ||
	    (t == KW_TRANSIT_AES256_SIV && ptlen == 0))
		return KW_ERR_INVALID;
	unsigned char *ct = malloc(ptlen + 1), tag[KW_TRANSIT_TAG], siv[16];
	size_t cap = 24 + b64_len(KW_TRANSIT_GCM_IV) + b64_len(ptlen) + b64_len(KW_TRANSIT_TAG) + 4;
	char *s = malloc(cap), *at = s;
	kw_err err = ct == NULL || s == NULL ? KW_ERR_NOMEM : KW_OK;
	if (err == KW_OK && t == KW_TRANSIT_AES256_GCM) {
		if (!gcm(true, sealer->gcm, key, iv, ctx, ctx ? ctxlen : 0, pt, ptlen, ct, tag))
			err = KW_ERR_INTERNAL;
		if (err == KW_OK) {
			at += snprintf(at, cap, ENC_PREFIX "%u$", (unsigned)version);
			b64_put(&at, iv, KW_TRANSIT_GCM_IV);
			*at++ = '$';
			b64_put(&at, ct, ptlen);
			*at++ = '$';
			b64_put(&at, tag, KW_TRANSIT_TAG);
		}
	} else if (err == KW_OK) {
		const unsigned char *ad[1] = {ctx};
		size_t adlen[1] = {ctxlen};
		err = kw_aes_siv_seal(key, KW_TRANSIT_SIV_KEY, ad, adlen, ctx ? 1 : 0, pt, ptlen, siv, ct);
		if (err == KW_OK) {
			at += snprintf(at, cap, DET_PREFIX "%u$", (unsigned)version);
			b64_put(&at, siv, sizeof(siv));
			*at++ = '$';
			b64_put(&at, ct, ptlen);
		}
	}
	if (ct != NULL)
		OPENSSL_cleanse(ct, ptlen + 1);
	free(ct);
	if (err != KW_OK) {
		free(s);
		return err;
	}
	*at = '\0';
	*out = s;
	return KW_OK;
}

/* The version after "v": 1..2^31-1, no leading zero, then '$'. */
static bool parse_version(const char **p, const char *end, uint32_t *v)
{
	const char *s = *p;
	uint64_t n = 0;
	size_t digits = 0;
	while (s < end && *s >= '0' && *s <= '9' && digits < 11) {
		n = n * 10 + (uint64_t)(*s - '0');
		s++, digits++;
	}
	if (digits == 0 || (digits > 1 && (*p)[0] == '0') || n == 0 || n > INT32_MAX || s >= end || *s != '$')
		return false;
	*v = (uint32_t)n;
	*p = s + 1;
	return true;
}

/* The next '$'-terminated part (or the rest, when last). */
static bool next_part(const char **p, const char *end, bool last, const char **part, size_t *len)
{
	const char *s = *p, *d = last ? end : memchr(s, '$', (size_t)(end - s));
	if (d == NULL)
		return false;
	*part = s;
	*len = (size_t)(d - s);
	*p = last ? end : d + 1;
	return true;
}

kw_err kw_transit_parse(const char *s, size_t len, kw_transit_ct *out)
{
	kw_transit_ct c;
	memset(&c, 0, sizeof(c));
	const char *p = s, *end = s + len;
	if (len < sizeof(ENC_PREFIX) || len > 16 + b64_len(KW_TRANSIT_MAX_PLAINTEXT) + 64 ||
	    memchr(s, '\0', len) != NULL)
		return KW_ERR_INVALID;
	if (memcmp(s, ENC_PREFIX, sizeof(ENC_PREFIX) - 1) == 0)
		c.type = KW_TRANSIT_AES256_GCM;
	else if (memcmp(s, DET_PREFIX, sizeof(DET_PREFIX) - 1) == 0)
		c.type = KW_TRANSIT_AES256_SIV;
	else
		return KW_ERR_INVALID;
	p += sizeof(ENC_PREFIX) - 1;
	bool gcm_type = c.type == KW_TRANSIT_AES256_GCM;
	const char *iv_s, *ct_s, *tag_s = NULL;
	size_t iv_n, ct_n, tag_n = 0;
	if (!parse_version(&p, end, &c.version) || !next_part(&p, end, false, &iv_s, &iv_n) ||
	    !next_part(&p, end, !gcm_type, &ct_s, &ct_n) ||
	    (gcm_type && !next_part(&p, end, true, &tag_s, &tag_n)) || memchr(ct_s, '$', ct_n) != NULL ||
	    (tag_s != NULL && memchr(tag_s, '$', tag_n) != NULL))
		return KW_ERR_INVALID;
	size_t ivlen = gcm_type ? KW_TRANSIT_GCM_IV : 16;
	c.buf = malloc(ivlen + KW_TRANSIT_TAG + ct_n / 4 * 3 + 1);
	if (c.buf == NULL)
		return KW_ERR_NOMEM;
	unsigned char *iv = c.buf, *tag = c.buf + ivlen, *ct = c.buf + ivlen + KW_TRANSIT_TAG;
	long n_iv = b64_get(iv_s, iv_n, iv, ivlen), n_ct = b64_get(ct_s, ct_n, ct, ct_n / 4 * 3),
	     n_tag = gcm_type ? b64_get(tag_s, tag_n, tag, KW_TRANSIT_TAG) : KW_TRANSIT_TAG;
	if (n_iv != (long)ivlen || n_ct < 0 || n_ct > KW_TRANSIT_MAX_PLAINTEXT || n_tag != KW_TRANSIT_TAG ||
	    (!gcm_type && n_ct == 0)) {
		kw_transit_ct_free(&c);
		return KW_ERR_INVALID;
	}
	c.iv = iv;
	c.tag = gcm_type ? tag : NULL;
	c.ct = ct;
	c.ctlen = (size_t)n_ct;
	*out = c;
	return KW_OK;
}

void kw_transit_ct_free(kw_transit_ct *c)
{
	free(c->buf);
	memset(c, 0, sizeof(*c));
}

kw_err kw_transit_open(const kw_transit_ct *c, const unsigned char *key, const unsigned char *ctx,
                       size_t ctxlen, unsigned char **pt, size_t *ptlen)
{
	unsigned char *out = malloc(c->ctlen + 1);
	if (out == NULL)
		return KW_ERR_NOMEM;
	kw_err err = KW_OK;
	if (c->type == KW_TRANSIT_AES256_GCM) {
		unsigned char tag[KW_TRANSIT_TAG];
		memcpy(tag, c->tag, sizeof(tag));
		if (!gcm(false, NULL, key, c->iv, ctx, ctx ? ctxlen : 0, c->ct, c->ctlen, out, tag))
			err = KW_ERR_VERIFY;
	} else {
		const unsigned char *ad[1] = {ctx};
		size_t adlen[1] = {ctxlen};
		err = kw_aes_siv_open(key, KW_TRANSIT_SIV_KEY, ad, adlen, ctx ? 1 : 0, c->iv, c->ct, c->ctlen,
		                      out);
		if (err != KW_OK)
			err = KW_ERR_VERIFY;
	}
	if (err != KW_OK) {
		OPENSSL_cleanse(out, c->ctlen + 1);
		free(out);
		return err;
	}
	*pt = out;
	*ptlen = c->ctlen;
	return KW_OK;
}

kw_err kw_aes256_gcm(bool enc, const unsigned char key[32], const unsigned char iv[KW_TRANSIT_GCM_IV],
                     const unsigned char *aad, size_t aadlen, const unsigned char *in, size_t len,
                     unsigned char *out, unsigned char tag[KW_TRANSIT_TAG])
{
	return gcm(enc, NULL, key, iv, aad, aadlen, in, len, out, tag)
	           ? KW_OK
	           : (enc ? KW_ERR_INTERNAL : KW_ERR_VERIFY);
}
