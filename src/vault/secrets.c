/* secrets.c — see keyward/vault/secrets.h. */
#include "keyward/vault/secrets.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/log.h"
#include "keyward/vault/transit.h"
#include "keyward/vault/vault.h"

#define AAD_CAP 160

static size_t value_aad(char *buf, const char *tenant, const char *id, uint32_t version)
{
	int n = snprintf(buf, AAD_CAP, "keyward:v1:secret-value:%s:%s:%" PRIu32, tenant, id, version);
	return n > 0 && n < AAD_CAP ? (size_t)n : 0;
}

static size_t dk_aad(char *buf, const char *tenant, const char *id, uint32_t version, uint32_t kek)
{
	int n =
	    snprintf(buf, AAD_CAP, "keyward:v1:secret:%s:%s:%" PRIu32 ":%" PRIu32, tenant, id, version, kek);
	return n > 0 && n < AAD_CAP ? (size_t)n : 0;
}

/* Wraps dk under the active KEK into v (kek_id, wrapped_dk, dk_iv). */
static kw_err wrap_dk(kw_hsm *hsm, kw_hsm_session *s, const unsigned char *dk, kw_secret_version *v)
{
	const kw_hsm_key *kek;
	char aad[AAD_CAP];
	kw_err err = kw_hsm_key_active(hsm, KW_KEY_KEK, &kek);
	if (err != KW_OK)
		return err;
	uint32_t kv = kw_hsm_key_version(kek);
	size_t alen = dk_aad(aad, v->tenant_id, v->secret_id, v->version, kv);
	if (alen == 0)
		return KW_ERR_INVALID;
	err = kw_hsm_gcm_encrypt(s, kek, (const unsigned char *)aad, alen, dk, KW_SECRET_DK_LEN, v->dk_iv,
	                         v->wrapped_dk);
	if (err == KW_OK)
		v->kek_id = kv;
	return err;
}

/* Unwraps v's data key into dk (locked memory of the caller). */
static kw_err unwrap_dk(kw_hsm *hsm, kw_hsm_session *s, const kw_secret_version *v, unsigned char *dk)
{
	const kw_hsm_key *kek;
	char aad[AAD_CAP];
	if (v->format_version != KW_SECRET_FORMAT)
		return KW_ERR_INVALID;
	kw_err err = kw_hsm_key_get_fresh(hsm, KW_KEY_KEK, v->kek_id, &kek);
	if (err != KW_OK)
		return err;
	size_t alen = dk_aad(aad, v->tenant_id, v->secret_id, v->version, v->kek_id);
	if (alen == 0)
		return KW_ERR_INVALID;
	err = kw_hsm_gcm_decrypt(s, kek, v->dk_iv, (const unsigned char *)aad, alen, v->wrapped_dk,
	                         KW_SECRET_WRAPPED_LEN, dk);
	if (err == KW_ERR_VERIFY)
		err = kw_kek_self_test(s, kek); /* KW_ERR_VERIFY: the row, not the token */
	return err;
}

kw_err kw_secrets_seal(kw_hsm *hsm, kw_hsm_session *s, const char *tenant_id, const char *id,
                       uint32_t version, const unsigned char *value, size_t len, kw_secret_version *v)
{
	char aad[AAD_CAP];
	memset(v, 0, sizeof(*v));
	if (len > KW_SECRET_VALUE_MAX || strlen(tenant_id) != 36 || strlen(id) != 36 || version == 0)
		return KW_ERR_INVALID;
	memcpy(v->tenant_id, tenant_id, 37);
	memcpy(v->secret_id, id, 37);
	v->version = version;
	v->format_version = KW_SECRET_FORMAT;
	kw_secret *dk = kw_secret_new(KW_SECRET_DK_LEN);
	v->value_ct = malloc(len + KW_GCM_TAG_LEN);
	v->value_len = len + KW_GCM_TAG_LEN;
	size_t alen = value_aad(aad, tenant_id, id, version);
	kw_err err = dk == NULL || v->value_ct == NULL ? KW_ERR_NOMEM : KW_OK;
	if (err == KW_OK)
		err = kw_hsm_random(s, kw_secret_data(dk), KW_SECRET_DK_LEN);
	if (err == KW_OK && RAND_bytes(v->value_iv, sizeof(v->value_iv)) != 1)
		err = KW_ERR_INTERNAL;
	if (err == KW_OK)
		err = kw_aes256_gcm(true, kw_secret_data(dk), v->value_iv, (const unsigned char *)aad, alen,
		                    value, len, v->value_ct, v->value_ct + len);
	if (err == KW_OK)
		err = wrap_dk(hsm, s, kw_secret_data(dk), v);
	kw_secret_free(dk);
	if (err != KW_OK)
		kw_secret_version_clear(v);
	return err;
}

kw_err kw_secrets_open(kw_hsm *hsm, kw_hsm_session *s, const kw_secret_version *v, kw_secret **out)
{
	char aad[AAD_CAP];
	if (v->value_len < KW_GCM_TAG_LEN || v->value_len > KW_SECRET_VALUE_MAX + KW_GCM_TAG_LEN)
		return KW_ERR_INVALID;
	size_t len = v->value_len - KW_GCM_TAG_LEN;
	kw_secret *dk = kw_secret_new(KW_SECRET_DK_LEN), *pt = kw_secret_new(len + 1);
	size_t alen = value_aad(aad, v->tenant_id, v->secret_id, v->version);
	unsigned char tag[KW_GCM_TAG_LEN];
	memcpy(tag, v->value_ct + len, sizeof(tag));
	kw_err err = dk == NULL || pt == NULL ? KW_ERR_NOMEM : alen == 0 ? KW_ERR_INVALID : KW_OK;
	if (err == KW_OK)
		err = unwrap_dk(hsm, s, v, kw_secret_data(dk));
	if (err == KW_OK)
		err = kw_aes256_gcm(false, kw_secret_data(dk), v->value_iv, (const unsigned char *)aad, alen,
		                    v->value_ct, len, kw_secret_data(pt), tag);
	kw_secret_free(dk);
	if (err != KW_OK) {
		kw_secret_free(pt);
		return err;
	}
	kw_secret_truncate(pt, len);
	*out = pt;
	return KW_OK;
}

/* --- KEK rewrap ------------------------------------------------------------ */

static kw_err secrets_lock(kw_db *db, uint32_t active, size_t batch, void **rows, size_t *n)
{
	return kw_secrets_rewrap_lock(db, active, batch, (kw_secret_version **)rows, n);
}

static kw_err secrets_set_aside(kw_db *db, const void *r, kw_err why)
{
	const kw_secret_version *v = r;
	kw_err_log("kek rewrap: version %" PRIu32
	           " of secret %s in tenant %s %s; it is left under KEK %" PRIu32,
	           v->version, v->secret_id, v->tenant_id,
	           why == KW_ERR_NOT_FOUND ? "names a KEK the token does not hold"
	                                   : "does not unwrap under its KEK (the KEK itself is sound)",
	           v->kek_id);
	return kw_secrets_set_aside(db, v);
}

/* The data key alone is re-wrapped; the value's ciphertext stays. */
static kw_err secrets_rewrap_one(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, void *r, uint32_t active)
{
	kw_secret_version *v = r;
	kw_secret *dk = kw_secret_new(KW_SECRET_DK_LEN);
	kw_err err = dk == NULL ? KW_ERR_NOMEM : unwrap_dk(hsm, s, v, kw_secret_data(dk));
	if (err == KW_OK && v->kek_id > active)
		err = KW_ERR_CONFLICT; /* a rotation ran since this batch began */
	uint32_t old = v->kek_id;
	if (err == KW_OK)
		err = wrap_dk(hsm, s, kw_secret_data(dk), v);
	if (err == KW_OK && v->kek_id != active)
		err = KW_ERR_CONFLICT;
	if (err == KW_OK)
		err = kw_secrets_rewrap_update(db, v, old);
	kw_secret_free(dk);
	return err;
}

static void secrets_clear(void *r)
{
	kw_secret_version_clear(r);
}

static const kw_rewrap_kind secrets_kind = {.target = "secret_versions",
                                            .row_size = sizeof(kw_secret_version),
                                            .lock = secrets_lock,
                                            .rewrap = secrets_rewrap_one,
                                            .set_aside = secrets_set_aside,
                                            .clear = secrets_clear};

kw_err kw_secrets_rewrap_batch(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, kw_audit_chain *audit, size_t batch,
                               size_t *done, size_t *skipped)
{
	return kw_rewrap_run(&secrets_kind, hsm, s, db, audit, batch, done, skipped);
}
