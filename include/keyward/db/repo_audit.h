/* repo_audit.h — the audit_log and audit_chains tables (src/db/repo_audit.c).
 *
 * The statements the audit chain appends with (a row, and its chain's
 * head, inserted or moved on only from the head it read), and the pages
 * the verifier walks. Computing and checking MACs is src/audit's. */
#ifndef KEYWARD_REPO_AUDIT_H
#define KEYWARD_REPO_AUDIT_H

#include <stdbool.h>

#include "keyward/db/db.h"

/* Parameters of a row: chain_id, seq, at, tenant_id, actor, action,
 * target, status, ip, user_agent, request_id, context, key_version,
 * prev_mac (binary), mac (binary). */
#define KW_AUDIT_INSERT_NPARAMS 15
kw_db_stmt kw_audit_stmt_row(const char *const *values, const int *lengths, const int *formats);
/* The SQL of one INSERT of n rows (n * KW_AUDIT_INSERT_NPARAMS parameters,
 * row after row, in the order above), malloc'd; NULL when out of memory. */
char *kw_audit_rows_sql(size_t n);
/* Marks the transaction as the group-commit writer's: its rows, of any
 * tenant and user, are admitted by their own INSERT policy (migration
 * 0007); their integrity is the MAC chain's. */
kw_db_stmt kw_audit_stmt_writer(void);
/* Parameters of a head: chain_id, writer (insert) or the seq it was at
 * (update), last_seq, last_mac (binary), key_version, head_mac (binary).
 * An update touches no row unless the head is still where it was. */
kw_db_stmt kw_audit_stmt_head(bool update, const char *const *values, const int *lengths, const int *formats);

/* The verifier's read: one REPEATABLE READ, READ ONLY transaction. */
KW_MUST_CHECK kw_err kw_audit_read_begin(kw_db *db);
/* Pages of KW_AUDIT_PAGE, in order. Rows of chain after seq after_seq
 * ("" = from the start): id, seq, at, tenant_id, actor, action, target,
 * status, ip, user_agent, request_id, context, key_version, prev_mac
 * (hex), mac (hex). Heads after chain id after ("" = from the start):
 * chain_id, last_seq, last_mac (hex), key_version, head_mac (hex). */
#define KW_AUDIT_PAGE 1000
KW_MUST_CHECK kw_err kw_audit_rows_page(kw_db *db, const char *chain, const char *after_seq,
                                        kw_db_result **out);
KW_MUST_CHECK kw_err kw_audit_heads_page(kw_db *db, const char *after, kw_db_result **out);
/* A row whose chain has no head (chain_id, seq, id), if any. */
KW_MUST_CHECK kw_err kw_audit_orphan(kw_db *db, kw_db_result **out);

#endif
