/* tenants.c — a tenant and its first admin API key (keywardctl).
 *
 * Runs as the schema owner. A tenant, its first admin API key and the
 * audit row that records them are written in one transaction scoped to the
 * new tenant's id (chosen here), so the FORCEd row-level security on
 * tenants admits the insert even for an owner that is not a superuser, and
 * nothing is half-written when any step fails. The key leaves this file
 * only through the caller's buffer, once; it is never logged, audited or
 * stored (only HMAC(pepper, key) is). */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/app/app.h"
#include "keyward/auth/apikey.h"
#include "keyward/core/log.h"
#include "keyward/core/text.h"

#define KW_TENANT_MAX_NAME 128

/* 1..128 bytes of UTF-8 without control characters (C0, DEL, C1). */
static bool tenant_name_ok(const char *name)
{
	const unsigned char *p = (const unsigned char *)name;
	size_t len = name != NULL ? strnlen(name, KW_TENANT_MAX_NAME + 1) : 0;

	if (len == 0 || len > KW_TENANT_MAX_NAME)
		return false;
	for (size_t i = 0; i < len;) {
		unsigned c = p[i];
		size_t n = c < 0x80             ? 1
		           : (c & 0xE0) == 0xC0 ? 2
		           : (c & 0xF0) == 0xE0 ? 3
		           : (c & 0xF8) == 0xF0 ? 4
		                                : 0;
		uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
		if (n == 0 || i + n > len)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((p[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		/* Overlong forms, surrogates and beyond U+10FFFF are not UTF-8. */
		if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
		    (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
			return false;
		if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
			return false;
		i += n;
	}
	return true;
}

kw_err kw_tenant_create(kw_db *db, kw_hsm *hsm, kw_hsm_session *s, kw_audit_chain *chain, const char *name,
                        char tenant_id[37], char key[KW_APIKEY_LEN + 1])
{
	kw_err err = KW_OK;
	const kw_hsm_key *pepper = NULL;
	kw_apikey_row row;
	char id[37];
	char k[KW_APIKEY_LEN + 1] = "";
	char *context = NULL;
	json_t *ctx = NULL;
	bool in_tx = false, appended = false;

	if (db == NULL || hsm == NULL || s == NULL || chain == NULL || tenant_id == NULL || key == NULL)
		kw_misuse("kw_tenant_create: NULL argument");
	memset(&row, 0, sizeof(row));
	if (!tenant_name_ok(name)) {
		err = KW_ERR_INVALID;
		goto done;
	}
	if ((err = kw_random_uuid(id)) != KW_OK)
		goto done;

	/* The key and its HMAC first: token work stays out of the transaction. */
	if ((err = kw_hsm_key_active(hsm, KW_KEY_PEPPER, &pepper)) != KW_OK) {
		kw_err_log("tenant create: no active pepper key: %s", kw_err_str(err));
		goto done;
	}
	memcpy(row.tenant_id, id, sizeof(id));
	snprintf(row.name, sizeof(row.name), "%s", "initial admin key");
	row.scopes = KW_SCOPE_ADMIN;
	row.pepper_version = kw_hsm_key_version(pepper);
	if ((err = kw_apikey_generate(s, k, row.prefix)) != KW_OK ||
	    (err = kw_apikey_hmac(s, pepper, k, KW_APIKEY_LEN, row.key_hmac)) != KW_OK)
		goto done;

	ctx = json_pack("{s:s, s:s}", "name", name, "api_key_prefix", row.prefix);
	context = ctx != NULL ? json_dumps(ctx, JSON_COMPACT) : NULL;
	if (context == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}

	if ((err = kw_db_begin(db, id, NULL)) != KW_OK)
		goto done;
	in_tx = true;
	if ((err = kw_tenant_insert(db, id, name)) != KW_OK)
		goto done; /* KW_ERR_EXISTS: the name is taken */
	if ((err = kw_apikey_insert(db, &row)) != KW_OK) {
		/* A prefix collision (72 random bits) is not a duplicate name. */
		if (err == KW_ERR_EXISTS)
			err = KW_ERR_CONFLICT;
		goto done;
	}
	kw_audit_event ev = {.tenant_id = id,
	                     .actor = "keywardctl",
	                     .action = "tenant.create",
	                     .target = id,
	                     .status = "ok",
	                     .context = context};
	err = kw_audit_append(chain, s, db, &ev);
	appended = true;
done:
	if (in_tx)
		err = kw_audit_end_tx(appended ? chain : NULL, db, err);
	if (err == KW_OK) {
		memcpy(tenant_id, id, sizeof(id));
		memcpy(key, k, sizeof(k));
	}
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(row.key_hmac, sizeof(row.key_hmac));
	free(context);
	json_decref(ctx);
	return err;
}
