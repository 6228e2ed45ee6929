/* repo_tenants.c — tenants, created and listed by keywardctl.
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
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/apikey.h"
#include "keyward/log.h"

#define KW_TENANT_MAX_NAME 128
#define KW_TS(col)         "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define SQL_INSERT_TENANT  "INSERT INTO tenants (id, name) VALUES ($1::uuid, $2)"
#define SQL_CREATED_AT     KW_TS("created_at")
#define SQL_LIST_TENANTS                                                                                     \
	"SELECT id::text, name, " SQL_CREATED_AT " FROM tenants ORDER BY tenants.created_at, tenants.name"

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

/* A version-4 UUID, lowercase, as the database prints it. */
static kw_err new_uuid(char out[37])
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return KW_ERR_INTERNAL;
	b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
	         b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
	return KW_OK;
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
	if ((err = new_uuid(id)) != KW_OK)
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
	const char *vals[2] = {id, name};
	if ((err = kw_db_exec(db, SQL_INSERT_TENANT, 2, vals, NULL, NULL, NULL)) != KW_OK)
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
	if (err != KW_OK)
		goto done;
	if ((err = kw_db_commit(db)) != KW_OK)
		goto done;
	kw_audit_chain_committed(chain);
	appended = false;

	memcpy(tenant_id, id, sizeof(id));
	memcpy(key, k, sizeof(k));
done:
	if (err != KW_OK && in_tx)
		kw_db_rollback(db); /* a no-op when COMMIT already ended it */
	if (appended)
		kw_audit_chain_rolled_back(chain);
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(row.key_hmac, sizeof(row.key_hmac));
	free(context);
	json_decref(ctx);
	return err;
}

kw_err kw_tenant_list(kw_db *db, kw_tenant_row **rows, size_t *n)
{
	kw_err err = KW_OK;
	PGresult *res = NULL;
	kw_tenant_row *list = NULL;
	size_t count = 0;

	if (db == NULL || rows == NULL || n == NULL)
		kw_misuse("kw_tenant_list: NULL argument");
	/* Outside a tenant scope: only an owner that bypasses RLS sees rows. */
	err = kw_db_exec(db, SQL_LIST_TENANTS, 0, NULL, NULL, NULL, &res);
	if (err != KW_OK)
		goto done;
	count = (size_t)PQntuples(res);
	list = calloc(count > 0 ? count : 1, sizeof(*list));
	if (list == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	for (size_t i = 0; i < count; i++) {
		kw_tenant_row *t = &list[i];
		int lens[3] = {PQgetlength(res, (int)i, 0), PQgetlength(res, (int)i, 1),
		               PQgetlength(res, (int)i, 2)};
		if ((size_t)lens[0] >= sizeof(t->id) || (size_t)lens[1] >= sizeof(t->name) ||
		    (size_t)lens[2] >= sizeof(t->created_at)) {
			err = KW_ERR_INTERNAL;
			goto done;
		}
		memcpy(t->id, PQgetvalue(res, (int)i, 0), (size_t)lens[0] + 1);
		memcpy(t->name, PQgetvalue(res, (int)i, 1), (size_t)lens[1] + 1);
		memcpy(t->created_at, PQgetvalue(res, (int)i, 2), (size_t)lens[2] + 1);
	}
	*rows = list;
	*n = count;
	list = NULL;
done:
	free(list);
	PQclear(res);
	return err;
}
