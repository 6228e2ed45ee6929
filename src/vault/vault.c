/* vault.c — wrapping per-user master keys, and re-wrapping their rows.
 *
 * Wrap and unwrap are one C_Encrypt / C_Decrypt each (AES-256-GCM under a
 * KEK object in the token). The AAD names the purpose, tenant, user and
 * KEK version; the blob, its IV, the format and the KEK version are all
 * the row stores (src/db/repo_vaults.c reads and writes the rows). */
#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/core/log.h"
#include "keyward/core/text.h"
#include "keyward/vault/vault.h"

size_t kw_vault_aad(char *buf, size_t cap, const char *tenant_id, const char *user_id, uint32_t kek_id)
{
	char tenant[37];
	size_t tl = strnlen(tenant_id, sizeof(tenant));
	if (tl != 36)
		return 0;
	/* The database prints uuids in lowercase: bind to that form. */
	for (size_t i = 0; i < 36; i++)
		tenant[i] = (char)tolower((unsigned char)tenant_id[i]);
	tenant[36] = '\0';
	int n = snprintf(buf, cap, "keyward:v1:" KW_VAULT_PURPOSE ":%s:%s:%" PRIu32, tenant, user_id, kek_id);
	return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

kw_err kw_vault_new_mk(kw_hsm_session *s, unsigned char mk[KW_MK_LEN])
{
	return kw_hsm_random(s, mk, KW_MK_LEN);
}

#define AAD_CAP (64 + 37 + KW_VAULT_USER_MAX + 12)

kw_err kw_vault_wrap(kw_hsm *hsm, kw_hsm_session *s, const unsigned char mk[KW_MK_LEN], kw_vault_row *row)
{
	const kw_hsm_key *kek;
	char aad[AAD_CAP];
	kw_err err = kw_hsm_key_active(hsm, KW_KEY_KEK, &kek);
	if (err != KW_OK)
		return err;
	uint32_t v = kw_hsm_key_version(kek);
	size_t alen = kw_vault_aad(aad, sizeof(aad), row->tenant_id, row->user_id, v);
	if (alen == 0)
		return KW_ERR_INVALID;
	err = kw_hsm_gcm_encrypt(s, kek, (const unsigned char *)aad, alen, mk, KW_MK_LEN, row->iv,
	                         row->wrapped);
	if (err != KW_OK)
		return err;
	row->kek_id = v;
	row->format_version = KW_VAULT_FORMAT;
	return KW_OK;
}

/* Tokens report a failed GCM tag and a failing device alike (SoftHSM says
 * CKR_GENERAL_ERROR for both). Before a row is called corrupt, the same
 * KEK must round-trip a block of its own: if it cannot, the token is at
 * fault (KW_ERR_HSM) and the row may be fine. */
kw_err kw_kek_self_test(kw_hsm_session *s, const kw_hsm_key *kek)
{
	static const unsigned char aad[] = "keyward:v1:kek-self-test";
	unsigned char pt[KW_MK_LEN] = {0}, ct[KW_MK_LEN + KW_GCM_TAG_LEN], back[KW_MK_LEN], iv[KW_GCM_IV_LEN];
	kw_err err = kw_hsm_gcm_encrypt(s, kek, aad, sizeof(aad) - 1, pt, sizeof(pt), iv, ct);
	if (err == KW_OK)
		err = kw_hsm_gcm_decrypt(s, kek, iv, aad, sizeof(aad) - 1, ct, sizeof(ct), back);
	if (err == KW_OK && CRYPTO_memcmp(back, pt, sizeof(pt)) != 0)
		err = KW_ERR_HSM;
	if (err != KW_OK) {
		kw_err_log("hsm: KEK %" PRIu32 " fails its own round trip (%s): the token, not the row, "
		           "is at fault",
		           kw_hsm_key_version(kek), kw_err_str(err));
		return err == KW_ERR_VERIFY ? KW_ERR_HSM : err;
	}
	return KW_ERR_VERIFY;
}

kw_err kw_vault_unwrap(kw_hsm *hsm, kw_hsm_session *s, const kw_vault_row *row, unsigned char mk[KW_MK_LEN])
{
	const kw_hsm_key *kek;
	char aad[AAD_CAP];
	if (row->format_version != KW_VAULT_FORMAT)
		return KW_ERR_INVALID;
	kw_err err = kw_hsm_key_get_fresh(hsm, KW_KEY_KEK, row->kek_id, &kek);
	if (err != KW_OK)
		return err;
	size_t alen = kw_vault_aad(aad, sizeof(aad), row->tenant_id, row->user_id, row->kek_id);
	if (alen == 0)
		return KW_ERR_INVALID;
	err = kw_hsm_gcm_decrypt(s, kek, row->iv, (const unsigned char *)aad, alen, row->wrapped,
	                         KW_VAULT_WRAPPED_LEN, mk);
	if (err == KW_ERR_VERIFY) {
		err = kw_kek_self_test(s, kek);
		/* The KEK is sound now; it may not have been a moment ago. One
		 * more try before the row is called corrupt. */
		if (err == KW_ERR_VERIFY)
			err = kw_hsm_gcm_decrypt(s, kek, row->iv, (const unsigned char *)aad, alen,
			                         row->wrapped, KW_VAULT_WRAPPED_LEN, mk);
	}
	return err;
}

/* --- KEK rewrap ---------------------------------------------------------- */

kw_err kw_rewrap_run(const kw_rewrap_kind *k, kw_hsm *hsm, kw_hsm_session *s, kw_db *db,
                     kw_audit_chain *audit, size_t batch, size_t *done, size_t *skipped)
{
	const kw_hsm_key *active;
	*done = *skipped = 0;
	if (batch == 0 || batch > 100000)
		return KW_ERR_INVALID;
	kw_err err = kw_hsm_key_active(hsm, KW_KEY_KEK, &active);
	if (err != KW_OK)
		return err;
	uint32_t v = kw_hsm_key_version(active);
	void *rows = NULL;
	size_t n = 0;
	err = k->lock(db, v, batch, &rows, &n);
	for (size_t i = 0; i < n && err == KW_OK; i++) {
		void *row = (char *)rows + i * k->row_size;
		err = k->rewrap(hsm, s, db, row, v);
		/* A row that does not unwrap under its own (sound) KEK, or names a
		 * KEK the token lacks, is set aside for the rest of the run. */
		if (err == KW_ERR_VERIFY || err == KW_ERR_INVALID || err == KW_ERR_NOT_FOUND) {
			err = k->set_aside(db, row, err);
			if (err == KW_OK)
				(*skipped)++;
		} else if (err == KW_OK) {
			(*done)++;
		}
	}
	for (size_t i = 0; rows != NULL && k->clear != NULL && i < n; i++)
		k->clear((char *)rows + i * k->row_size);
	if (rows != NULL)
		OPENSSL_cleanse(rows, n * k->row_size);
	free(rows);
	return kw_kek_rewrap_end(audit, s, db, err, v, k->target, done, skipped);
}

static kw_err vault_lock(kw_db *db, uint32_t active, size_t batch, void **rows, size_t *n)
{
	return kw_vault_rewrap_lock(db, active, batch, (kw_vault_row **)rows, n);
}

/* Sets a row aside for the rest of the run (in the batch's transaction). */
static kw_err vault_set_aside(kw_db *db, const void *r, kw_err why)
{
	const kw_vault_row *row = r;
	kw_err_log("kek rewrap: the vault of user %s in tenant %s %s; it is left under KEK %" PRIu32,
	           row->user_id, row->tenant_id,
	           why == KW_ERR_NOT_FOUND ? "names a KEK the token does not hold"
	                                   : "does not unwrap under its KEK (the KEK itself is sound)",
	           row->kek_id);
	return kw_vault_set_aside(db, row);
}

static kw_err vault_rewrap_one(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, void *r, uint32_t active)
{
	const kw_vault_row *row = r;
	unsigned char mk[KW_MK_LEN];
	kw_err err = kw_vault_unwrap(hsm, s, row, mk);
	/* It unwraps under a KEK newer than ours: another rotation ran since
	 * this batch began. Not a bad row; stop, and let the next run go on
	 * with the new KEK. */
	if (err == KW_OK && row->kek_id > active)
		err = KW_ERR_CONFLICT;
	kw_vault_row fresh = *row;
	if (err == KW_OK)
		err = kw_vault_wrap(hsm, s, mk, &fresh);
	OPENSSL_cleanse(mk, sizeof(mk));
	if (err == KW_OK && fresh.kek_id != active)
		err = KW_ERR_CONFLICT; /* the active KEK changed under us */
	if (err == KW_OK)
		err = kw_vault_rewrap_update(db, &fresh, row->kek_id);
	OPENSSL_cleanse(&fresh, sizeof(fresh));
	return err;
}

static const kw_rewrap_kind vault_kind = {.target = "encryption_vaults",
                                          .row_size = sizeof(kw_vault_row),
                                          .lock = vault_lock,
                                          .rewrap = vault_rewrap_one,
                                          .set_aside = vault_set_aside};

kw_err kw_vault_rewrap_batch(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, kw_audit_chain *audit, size_t batch,
                             size_t *done, size_t *skipped)
{
	return kw_rewrap_run(&vault_kind, hsm, s, db, audit, batch, done, skipped);
}

kw_err kw_kek_rewrap_end(kw_audit_chain *audit, kw_hsm_session *s, kw_db *db, kw_err err, uint32_t kek,
                         const char *target, size_t *done, size_t *skipped)
{
	bool audited = err == KW_OK && (*done > 0 || *skipped > 0);
	if (audited) {
		char ctx[96];
		snprintf(ctx, sizeof(ctx), "{\"rows\":%zu,\"skipped\":%zu,\"kek\":%" PRIu32 "}", *done,
		         *skipped, kek);
		kw_audit_event ev = {.actor = "keywardctl",
		                     .action = "kek.rewrap",
		                     .target = target,
		                     .status = *skipped > 0 ? "partial" : "ok",
		                     .context = ctx};
		err = kw_audit_append(audit, s, db, &ev);
	}
	err = kw_audit_end_tx(audited ? audit : NULL, db, err);
	if (err != KW_OK)
		*done = *skipped = 0;
	return err;
}
