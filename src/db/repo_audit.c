/* repo_audit.c — see keyward/db/repo_audit.h. */
#include "keyward/db/repo_audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SQL_INSERT_ROW                                                                                       \
	"INSERT INTO audit_log (chain_id, seq, at, tenant_id, actor, action, target, status, ip, "           \
	"user_agent, "                                                                                       \
	"request_id, context, key_version, prev_mac, mac) VALUES ($1::uuid, $2::bigint, $3::timestamptz, "   \
	"$4::uuid, $5, $6, $7, $8, $9, $10, $11, $12::json, $13::int, $14::bytea, $15::bytea)"
#define SQL_INSERT_ROWS_HEAD                                                                                 \
	"INSERT INTO audit_log (chain_id, seq, at, tenant_id, actor, action, target, status, ip, "           \
	"user_agent, request_id, context, key_version, prev_mac, mac) VALUES "
/* One row's placeholders, from parameter b + 1. */
#define SQL_ROW_FMT                                                                                          \
	"%s($%zu::uuid,$%zu::bigint,$%zu::timestamptz,$%zu::uuid,$%zu,$%zu,$%zu,$%zu,$%zu,$%zu,$%zu,$%zu::"  \
	"json,"                                                                                              \
	"$%zu::int,$%zu::bytea,$%zu::bytea)"
#define SQL_INSERT_HEAD                                                                                      \
	"INSERT INTO audit_chains (chain_id, writer, last_seq, last_mac, key_version, head_mac) VALUES "     \
	"($1::uuid, $2, $3::bigint, $4::bytea, $5::int, $6::bytea)"
#define SQL_UPDATE_HEAD                                                                                      \
	"UPDATE audit_chains SET last_seq = $3::bigint, last_mac = $4::bytea, key_version = $5::int, "       \
	"head_mac = $6::bytea WHERE chain_id = $1::uuid AND last_seq = $2::bigint"

#define PAGE "1000" /* KW_AUDIT_PAGE */
/* Output columns are text casts named like the table's columns: ORDER BY
 * qualifies the column so it sorts by number and uuid, not by text. */
#define SQL_ROWS_COLS                                                                                        \
	"SELECT id::text, seq::text, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "  \
	"tenant_id::text, actor, action, target, status, ip, user_agent, request_id, context::text, "        \
	"key_version::text, encode(prev_mac, 'hex'), encode(mac, 'hex') FROM audit_log "
#define SQL_ROWS_FIRST SQL_ROWS_COLS "WHERE chain_id = $1::uuid ORDER BY audit_log.seq LIMIT " PAGE
#define SQL_ROWS_NEXT                                                                                        \
	SQL_ROWS_COLS "WHERE chain_id = $1::uuid AND seq > $2::bigint ORDER BY audit_log.seq LIMIT " PAGE
#define SQL_HEADS_COLS                                                                                       \
	"SELECT chain_id::text, last_seq::text, encode(last_mac, 'hex'), key_version::text, "                \
	"encode(head_mac, 'hex') FROM audit_chains "
#define SQL_HEADS_FIRST SQL_HEADS_COLS "ORDER BY audit_chains.chain_id LIMIT " PAGE
#define SQL_HEADS_NEXT  SQL_HEADS_COLS "WHERE chain_id > $1::uuid ORDER BY audit_chains.chain_id LIMIT " PAGE
#define SQL_ORPHAN                                                                                           \
	"SELECT a.chain_id::text, a.seq::text, a.id::text FROM audit_log a WHERE NOT EXISTS "                \
	"(SELECT 1 FROM audit_chains c WHERE c.chain_id = a.chain_id) ORDER BY a.chain_id, a.seq LIMIT 1"

kw_db_stmt kw_audit_stmt_row(const char *const *values, const int *lengths, const int *formats)
{
	return (kw_db_stmt){SQL_INSERT_ROW, KW_AUDIT_INSERT_NPARAMS, values, lengths, formats};
}

char *kw_audit_rows_sql(size_t n)
{
	size_t cap = sizeof(SQL_INSERT_ROWS_HEAD) + n * 256, len = strlen(SQL_INSERT_ROWS_HEAD);
	char *sql = n > 0 ? malloc(cap) : NULL;
	if (sql == NULL)
		return NULL;
	memcpy(sql, SQL_INSERT_ROWS_HEAD, len + 1);
	for (size_t i = 0; i < n; i++) {
		size_t b = i * KW_AUDIT_INSERT_NPARAMS;
		int w = snprintf(sql + len, cap - len, SQL_ROW_FMT, i > 0 ? "," : "", b + 1, b + 2, b + 3,
		                 b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10, b + 11, b + 12, b + 13,
		                 b + 14, b + 15);
		if (w < 0 || (size_t)w >= cap - len) {
			free(sql);
			return NULL;
		}
		len += (size_t)w;
	}
	return sql;
}

kw_db_stmt kw_audit_stmt_writer(void)
{
	return (kw_db_stmt){"SELECT set_config('app.audit_writer', 'on', true)", 0, NULL, NULL, NULL};
}

kw_db_stmt kw_audit_stmt_head(bool update, const char *const *values, const int *lengths, const int *formats)
{
	return (kw_db_stmt){update ? SQL_UPDATE_HEAD : SQL_INSERT_HEAD, 6, values, lengths, formats};
}

kw_err kw_audit_read_begin(kw_db *db)
{
	return kw_db_exec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL, NULL, NULL);
}

kw_err kw_audit_rows_page(kw_db *db, const char *chain, const char *after_seq, kw_db_result **out)
{
	const char *params[2] = {chain, after_seq};
	bool first = after_seq[0] == '\0';
	return kw_db_exec(db, first ? SQL_ROWS_FIRST : SQL_ROWS_NEXT, first ? 1 : 2, params, NULL, NULL, out);
}

kw_err kw_audit_heads_page(kw_db *db, const char *after, kw_db_result **out)
{
	const char *params[1] = {after};
	bool first = after[0] == '\0';
	return kw_db_exec(db, first ? SQL_HEADS_FIRST : SQL_HEADS_NEXT, first ? 0 : 1, params, NULL, NULL,
	                  out);
}

kw_err kw_audit_orphan(kw_db *db, kw_db_result **out)
{
	return kw_db_exec(db, SQL_ORPHAN, 0, NULL, NULL, NULL, out);
}
