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
