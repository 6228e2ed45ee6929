/* repo_revocations.c — see keyward/db/repo_revocations.h. */
#include "keyward/db/repo_revocations.h"

#include <stdio.h>

#define SQL_LISTEN "LISTEN " KW_REVOCATIONS_CHANNEL
#define SQL_LOAD                                                                                             \
	"SELECT jti, sid, floor(extract(epoch FROM token_expires_at))::bigint FROM jwt_revocations "         \
	"WHERE token_expires_at > now()"
#define SQL_HEARTBEAT "SELECT id FROM jwt_revocations LIMIT 1"

kw_err kw_revocations_listen(kw_listener *l, kw_log_level level)
{
	return kw_listener_query(l, SQL_LISTEN, level, NULL);
}

kw_err kw_revocations_load(kw_listener *l, kw_log_level level, kw_db_result **out)
{
	return kw_listener_query(l, SQL_LOAD, level, out);
}

kw_err kw_revocations_heartbeat(kw_listener *l, kw_log_level level)
{
	return kw_listener_query(l, SQL_HEARTBEAT, level, NULL);
}

kw_err kw_revocations_by_ids(kw_listener *l, const int64_t *ids, size_t n, kw_log_level level,
                             kw_db_result **out)
{
	char sql[160 + 64 * 21];
	int off = snprintf(sql, sizeof(sql),
	                   "SELECT jti, sid, floor(extract(epoch FROM token_expires_at))::bigint, id FROM "
	                   "jwt_revocations WHERE id IN (");
	for (size_t i = 0; i < n && i < 64; i++)
		off +=
		    snprintf(sql + off, sizeof(sql) - (size_t)off, "%s%lld", i ? "," : "", (long long)ids[i]);
	snprintf(sql + off, sizeof(sql) - (size_t)off, ")");
	return kw_listener_query(l, sql, level, out);
}
