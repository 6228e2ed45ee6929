/* repo_tenants.c — the tenants table (keywardctl, as the schema owner). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/db/db.h"

#define KW_TS(col)        "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define SQL_INSERT_TENANT "INSERT INTO tenants (id, name) VALUES ($1::uuid, $2)"
#define SQL_CREATED_AT    KW_TS("created_at")
#define SQL_LIST_TENANTS                                                                                     \
	"SELECT id::text, name, " SQL_CREATED_AT " FROM tenants ORDER BY tenants.created_at, tenants.name"

kw_err kw_tenant_insert(kw_db *db, const char *id, const char *name)
{
	const char *vals[2] = {id, name};
	return kw_db_exec(db, SQL_INSERT_TENANT, 2, vals, NULL, NULL, NULL);
}

static kw_err read_tenant(const kw_db_result *r, int row, void *out)
{
	kw_tenant_row *t = out;
	bool ok = kw_db_copy_text(r, row, 0, t->id, sizeof(t->id)) &&
	          kw_db_copy_text(r, row, 1, t->name, sizeof(t->name)) &&
	          kw_db_copy_text(r, row, 2, t->created_at, sizeof(t->created_at));
	return ok ? KW_OK : KW_ERR_INTERNAL;
}

kw_err kw_tenant_list(kw_db *db, kw_tenant_row **rows, size_t *n)
{
	if (db == NULL || rows == NULL || n == NULL)
		kw_misuse("kw_tenant_list: NULL argument");
	/* Outside a tenant scope: only an owner that bypasses RLS sees rows. */
	return kw_db_query_rows(db, SQL_LIST_TENANTS, 0, NULL, sizeof(**rows), read_tenant, (void **)rows, n);
}
