/* repo_rotations.c — key rotations as keywardctl records and waits on them
 * (key_rotations, which the service's roles cannot write), the advisory
 * lock that serialises rotations, and the rows a rewrap run set aside. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/db/db.h"

kw_err kw_db_try_lock(kw_db *db, const char *name, bool *got)
{
	const char *vals[1] = {name};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(db, "SELECT pg_try_advisory_lock(hashtext($1))", 1, vals, NULL, NULL, &res);
	*got = err == KW_OK && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return err;
}

kw_err kw_rotation_record(kw_db *db, const char *family, uint32_t version, uint32_t previous)
{
	char v[12], p[12];
	snprintf(v, sizeof(v), "%" PRIu32, version);
	snprintf(p, sizeof(p), "%" PRIu32, previous);
	const char *vals[3] = {family, v, p};
	/* A version number seen before (a token re-initialised against the same
	 * database) starts its wait again. */
	return kw_db_exec(db,
	                  "INSERT INTO key_rotations (family, version, previous) "
	                  "VALUES ($1, $2::int, $3::int) ON CONFLICT (family, version) DO UPDATE "
	                  "SET previous = EXCLUDED.previous, rotated_at = now()",
	                  3, vals, NULL, NULL, NULL);
}

kw_err kw_rotation_wait(kw_db *db, const char *family, uint32_t previous, int64_t wait_s, bool *known,
                        long long *wait)
{
	char vs[24], ws[24];
	snprintf(vs, sizeof(vs), "%" PRIu32, previous);
	snprintf(ws, sizeof(ws), "%" PRId64, wait_s);
	const char *vals[3] = {family, vs, ws};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(
	    db,
	    "SELECT floor(extract(epoch FROM max(rotated_at) + $3::bigint * interval '1 second' - now()))"
	    "::bigint FROM key_rotations WHERE family = $1 AND previous = $2::int",
	    3, vals, NULL, NULL, &res);
	if (err != KW_OK)
		return err;
	*known = !PQgetisnull(res, 0, 0);
	*wait = *known ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	PQclear(res);
	return KW_OK;
}

kw_err kw_rewrap_set_aside(kw_db *db, size_t max,
                           void (*each)(void *arg, const char *tenant_id, const char *user_id), void *arg,
                           size_t *listed)
{
	char lim[24];
	snprintf(lim, sizeof(lim), "%zu", max);
	const char *vals[1] = {lim};
	PGresult *res = NULL;
	kw_err err = kw_db_exec(
	    db, "SELECT tenant_id, user_id FROM pg_temp.kek_rewrap_skip ORDER BY 1, 2 LIMIT $1::int", 1, vals,
	    NULL, NULL, &res);
	if (err != KW_OK)
		return err;
	int n = PQntuples(res);
	for (int i = 0; i < n; i++)
		each(arg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
	*listed = (size_t)n;
	PQclear(res);
	return KW_OK;
}
