/* jwt.c — ES256 JWS: sign through the token, verify with OpenSSL.
 *
 * Signing never sees the private key: the JWS signing input is hashed in
 * process and signed by the token (CKM_ECDSA, raw r || s, as RFC 7518
 * §3.4 wants). Verification uses only public points. The parser refuses
 * anything but the one shape this service issues. */
#include "keyward/auth/jwt.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdlib.h>
#include <string.h>

kw_err kw_jwk_thumbprint(const unsigned char point[KW_EC_POINT_LEN], char kid[KW_JWK_KID_LEN + 1])
{
	if (point[0] != 0x04)
		return KW_ERR_INVALID;
	char x[48], y[48], json[160], out[48];
	kw_b64url_encode(point + 1, 32, x);
	kw_b64url_encode(point + 33, 32, y);
	/* RFC 7638 §3.2: the required members, lexicographic order, no spaces. */
	int n = snprintf(json, sizeof(json), "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
	                 x, y);
	unsigned char h[32];
	if (n <= 0 || EVP_Digest(json, (size_t)n, h, NULL, EVP_sha256(), NULL) != 1)
		return KW_ERR_INTERNAL;
	kw_b64url_encode(h, sizeof(h), out);
	memcpy(kid, out, KW_JWK_KID_LEN + 1);
	return KW_OK;
}

kw_err kw_jwt_key_from_hsm(kw_hsm *hsm, const kw_hsm_key *k, kw_jwt_key *out)
{
	kw_jwt_key key = {.kid = "", .version = kw_hsm_key_version(k)};
	kw_err err = kw_hsm_public_key(hsm, k, key.point);
	if (err == KW_OK)
		err = kw_jwk_thumbprint(key.point, key.kid);
	if (err == KW_OK)
		*out = key;
	return err;
}

kw_err kw_jwt_sign_text(kw_hsm_session *s, const kw_hsm_key *k, const char *kid, const char *payload,
                        size_t pl, char **out)
{
	/* kid is base64url (checked), so the header needs no escaping. */
	char h[128];
	size_t kl = strlen(kid);
	if (kl == 0 || kl > KW_JWK_KID_LEN ||
	    strspn(kid, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != kl)
		return KW_ERR_INVALID;
	size_t hl = (size_t)snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
	size_t cap = (hl + pl) * 4 / 3 + 8 + 4 * ((KW_ECDSA_SIG_LEN + 2) / 3) + 8;
	if (cap > KW_JWT_MAX_LEN)
		return KW_ERR_INVALID;
	char *tok = malloc(cap);
	if (tok == NULL)
		return KW_ERR_NOMEM;
	size_t n = kw_b64url_encode((const unsigned char *)h, hl, tok);
	tok[n++] = '.';
	n += kw_b64url_encode((const unsigned char *)payload, pl, tok + n);
	unsigned char sig[KW_ECDSA_SIG_LEN];
	kw_err err = kw_hsm_ecdsa_sign(s, k, (const unsigned char *)tok, n, sig);
	if (err != KW_OK) {
		free(tok);
		return err;
	}
	tok[n++] = '.';
	kw_b64url_encode(sig, sizeof(sig), tok + n);
	*out = tok;
	return KW_OK;
}

kw_err kw_jwt_sign(kw_hsm_session *s, const kw_hsm_key *k, const char *kid, json_t *claims, char **out)
{
	char *p = json_is_object(claims) ? json_dumps(claims, JSON_COMPACT) : NULL;
	if (p == NULL)
		return KW_ERR_NOMEM;
	kw_err err = kw_jwt_sign_text(s, k, kid, p, strlen(p), out);
	free(p);
	return err;
}

static EVP_PKEY *pkey_from_point(const unsigned char point[KW_EC_POINT_LEN])
{
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	if (b == NULL || !OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, point, KW_EC_POINT_LEN) ||
	    (params = OSSL_PARAM_BLD_to_param(b)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	return pkey;
}

static bool verify_sig(const kw_jwt_key *key, const char *input, size_t len, const unsigned char sig[64])
{
	bool ok = false;
	EVP_PKEY *own = key->pkey ? NULL : pkey_from_point(key->point);
	EVP_PKEY *pkey = key->pkey ? key->pkey : own;
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	unsigned char *der = NULL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (pkey == NULL || es == NULL || r == NULL || s == NULL || md == NULL ||
	    ECDSA_SIG_set0(es, r, s) != 1) {
		BN_free(r);
		BN_free(s);
		goto done;
	}
	int dlen = i2d_ECDSA_SIG(es, &der);
	ok = dlen > 0 && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
	     EVP_DigestVerify(md, der, (size_t)dlen, (const unsigned char *)input, len) == 1;
done:
	OPENSSL_free(der);
	EVP_MD_CTX_free(md);
	ECDSA_SIG_free(es);
	EVP_PKEY_free(own);
	return ok;
}

kw_err kw_jwt_key_prepare(kw_jwt_key *key)
{
	if (key->pkey != NULL)
		return KW_OK;
	key->pkey = pkey_from_point(key->point);
	return key->pkey ? KW_OK : KW_ERR_INVALID;
}

void kw_jwt_key_release(kw_jwt_key *key)
{
	EVP_PKEY_free(key->pkey);
	key->pkey = NULL;
}

kw_err kw_jwt_verify(const char *token, size_t len, const kw_jwt_key *keys, size_t nkeys, json_t **claims)
{
	if (token == NULL || len == 0 || len > KW_JWT_MAX_LEN || memchr(token, '\0', len) != NULL)
		return KW_ERR_INVALID;
	const char *d1 = memchr(token, '.', len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
	if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) != NULL)
		return KW_ERR_INVALID;
	size_t hl = (size_t)(d1 - token), pl = (size_t)(d2 - d1 - 1), sl = len - (size_t)(d2 + 1 - token);
	unsigned char hbuf[512], sig[KW_ECDSA_SIG_LEN + 1];
	unsigned char *pbuf = malloc(KW_JWT_MAX_LEN);
	size_t hn = 0, pn = 0, sn = 0;
	json_t *hdr = NULL, *payload = NULL;
	kw_err err = KW_ERR_INVALID;
	if (pbuf == NULL)
		return KW_ERR_NOMEM;
	if (hl == 0 || pl == 0 || kw_b64url_decode(token, hl, hbuf, sizeof(hbuf), &hn) != KW_OK ||
	    kw_b64url_decode(d1 + 1, pl, pbuf, KW_JWT_MAX_LEN, &pn) != KW_OK ||
	    kw_b64url_decode(d2 + 1, sl, sig, sizeof(sig), &sn) != KW_OK || sn != KW_ECDSA_SIG_LEN)
		goto done;
	hdr = json_loadb((const char *)hbuf, hn, JSON_REJECT_DUPLICATES, NULL);
	const char *alg = json_string_value(json_object_get(hdr, "alg"));
	const char *kid = json_string_value(json_object_get(hdr, "kid"));
	const char *typ = json_string_value(json_object_get(hdr, "typ"));
	json_t *crit = json_object_get(hdr, "crit");
	if (!json_is_object(hdr) || alg == NULL || strcmp(alg, "ES256") != 0 || kid == NULL || crit != NULL ||
	    (json_object_get(hdr, "typ") != NULL && (typ == NULL || strcmp(typ, "JWT") != 0)))
		goto done;
	const kw_jwt_key *key = NULL;
	for (size_t i = 0; i < nkeys; i++)
		if (strcmp(keys[i].kid, kid) == 0)
			key = &keys[i];
	err = KW_ERR_VERIFY;
	if (key == NULL || !verify_sig(key, token, (size_t)(d2 - token), sig))
		goto done;
	err = KW_ERR_INVALID;
	payload = json_loadb((const char *)pbuf, pn, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(payload))
		goto done;
	*claims = payload;
	payload = NULL;
	err = KW_OK;
done:
	json_decref(hdr);
	json_decref(payload);
	free(pbuf);
	return err;
}

char *kw_jwks_json(const kw_jwt_key *keys, size_t nkeys)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < nkeys; i++) {
		char x[48], y[48];
		kw_b64url_encode(keys[i].point + 1, 32, x);
		kw_b64url_encode(keys[i].point + 33, 32, y);
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC",
		                                     "crv", "P-256", "x", x, "y", y, "kid", keys[i].kid,
		                                     "alg", "ES256", "use", "sig"));
	}
	json_t *o = arr ? json_pack("{s:o}", "keys", arr) : NULL;
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return text;
}
