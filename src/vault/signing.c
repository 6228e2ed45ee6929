/* signing.c — see keyward/vault/signing.h. */
#include "keyward/vault/signing.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/log.h"
#include "keyward/core/secret.h"
#include "keyward/vault/vault.h"

static size_t aad_of(char *buf, size_t cap, const kw_signing_row *row, uint32_t kek)
{
	int n = snprintf(buf, cap, "keyward:v1:signing-key:%s:%s:%" PRIu32, row->tenant_id, row->id, kek);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

kw_err kw_signing_wrap(kw_hsm *hsm, kw_hsm_session *s, const unsigned char *secret, kw_signing_row *row)
{
	const kw_hsm_key *kek;
	char aad[128];
	kw_err err = kw_hsm_key_active(hsm, KW_KEY_KEK, &kek);
	if (err != KW_OK)
		return err;
	uint32_t v = kw_hsm_key_version(kek);
	size_t alen = aad_of(aad, sizeof(aad), row, v);
	if (alen == 0)
		return KW_ERR_INVALID;
	err = kw_hsm_gcm_encrypt(s, kek, (const unsigned char *)aad, alen, secret, KW_SIGNING_SECRET_LEN,
	                         row->iv, row->wrapped);
	if (err == KW_OK) {
		row->kek_id = v;
		row->format_version = KW_SIGNING_FORMAT;
	}
	return err;
}

kw_err kw_signing_unwrap(kw_hsm *hsm, kw_hsm_session *s, const kw_signing_row *row, unsigned char *secret)
{
	const kw_hsm_key *kek;
	char aad[128];
	if (row->format_version != KW_SIGNING_FORMAT)
		return KW_ERR_INVALID;
	kw_err err = kw_hsm_key_get_fresh(hsm, KW_KEY_KEK, row->kek_id, &kek);
	if (err != KW_OK)
		return err;
	size_t alen = aad_of(aad, sizeof(aad), row, row->kek_id);
	if (alen == 0)
		return KW_ERR_INVALID;
	err = kw_hsm_gcm_decrypt(s, kek, row->iv, (const unsigned char *)aad, alen, row->wrapped,
	                         KW_SIGNING_WRAPPED_LEN, secret);
	if (err == KW_ERR_VERIFY)
		err = kw_kek_self_test(s, kek);
	return err;
}

static kw_err signing_lock(kw_db *db, uint32_t active, size_t batch, void **rows, size_t *n)
{
	return kw_signing_rewrap_lock(db, active, batch, (kw_signing_row **)rows, n);
}

static kw_err signing_set_aside(kw_db *db, const void *r, kw_err why)
{
	const kw_signing_row *row = r;
	(void)why;
	kw_err_log("kek rewrap: signing key %s of tenant %s does not unwrap under KEK %" PRIu32
	           "; it is left as it is (rotate it)",
	           row->id, row->tenant_id, row->kek_id);
	return kw_signing_set_aside(db, row);
}

static kw_err signing_rewrap_one(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, void *r, uint32_t active)
{
	kw_signing_row *row = r;
	kw_secret *secret = kw_secret_new(KW_SIGNING_SECRET_LEN);
	kw_err err = secret == NULL ? KW_ERR_NOMEM : kw_signing_unwrap(hsm, s, row, kw_secret_data(secret));
	if (err == KW_OK && row->kek_id > active)
		err = KW_ERR_CONFLICT;
	uint32_t old = row->kek_id;
	if (err == KW_OK)
		err = kw_signing_wrap(hsm, s, kw_secret_data(secret), row);
	if (err == KW_OK && row->kek_id != active)
		err = KW_ERR_CONFLICT;
	if (err == KW_OK)
		err = kw_signing_rewrap_update(db, row, old);
	kw_secret_free(secret);
	return err;
}

static const kw_rewrap_kind signing_kind = {.target = "signing_keys",
                                            .row_size = sizeof(kw_signing_row),
                                            .lock = signing_lock,
                                            .rewrap = signing_rewrap_one,
                                            .set_aside = signing_set_aside};

kw_err kw_signing_rewrap_batch(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, kw_audit_chain *audit, size_t batch,
                               size_t *done, size_t *skipped)
{
	return kw_rewrap_run(&signing_kind, hsm, s, db, audit, batch, done, skipped);
}
