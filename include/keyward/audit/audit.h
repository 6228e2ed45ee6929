/* audit.h — the append-only, MAC-chained audit trail.
 *
 * Rows are written in chains: each writer (a worker, the group-commit
 * writer, keywardctl) starts its own chain with a random id and numbers
 * its rows 1, 2, ... Each row's mac = HMAC_audit(prev_mac || canonical(row))
 * computed in the token, prev_mac of row 1 being 32 zero bytes. Each chain's
 * head (last seq, last mac, and an HMAC over both) lives in audit_chains and
 * is updated in the same transaction, so a deleted tail is detected too.
 * Chains never fork: a chain is used by one thread at a time, and its
 * in-memory head advances only when the transaction commits.
 *
 * Audit rows never hold a secret: callers pass ids, names and outcomes. */
#ifndef KEYWARD_AUDIT_H
#define KEYWARD_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "keyward/core/error.h"
#include "keyward/db/db.h"
#include "keyward/hsm/hsm.h"

typedef struct kw_audit_event {
	const char *tenant_id;  /* UUID text or NULL */
	const char *actor;      /* e.g. "api_key:<id>", "user:<sub>", "keywardctl" */
	const char *action;     /* e.g. "vault.init" */
	const char *target;     /* object id or NULL */
	const char *status;     /* "ok", "denied", "error", or an error code */
	const char *ip;         /* NULL if none */
	const char *user_agent; /* NULL if none; truncated to 256 bytes */
	const char *request_id; /* NULL if none */
	const char *context;    /* a JSON object as text, or NULL for {} */
	/* Not part of the row: the app.user_id scope its INSERT runs under.
	 * A vault.* row is admitted only when this is the user its actor
	 * names (see migration 0004). NULL for none. */
	const char *user_id;
} kw_audit_event;

typedef struct kw_audit_chain kw_audit_chain;

/* A new chain (random UUID) that the caller's thread owns. `writer` names
 * it in audit_chains (e.g. "keywardd:worker-3"). No SQL runs until the
 * first append. */
KW_MUST_CHECK kw_err kw_audit_chain_new(kw_hsm *hsm, const char *writer, kw_audit_chain **out);
void kw_audit_chain_free(kw_audit_chain *c);
const char *kw_audit_chain_id(const kw_audit_chain *c);

/* Appends one row inside the caller's open transaction on db. The chain's
 * head advances only after kw_audit_chain_committed(); call
 * kw_audit_chain_rolled_back() if the transaction is abandoned. */
KW_MUST_CHECK kw_err kw_audit_append(kw_audit_chain *c, kw_hsm_session *s, kw_db *db,
                                     const kw_audit_event *ev);
void kw_audit_chain_committed(kw_audit_chain *c);
void kw_audit_chain_rolled_back(kw_audit_chain *c);
/* The COMMIT itself was lost (KW_ERR_DB_UNAVAILABLE): the rows may or may
 * not be in, so the chain goes on under a new id rather than fork. */
void kw_audit_chain_commit_unknown(kw_audit_chain *c);
/* Ends the caller's transaction on db: COMMIT when err is KW_OK, else
 * ROLLBACK; when chain appended rows in it (chain may be NULL), moves the
 * chain's head only if the COMMIT held (committed, rolled back, or unknown
 * when the COMMIT itself was lost). Returns the final error. */
KW_MUST_CHECK kw_err kw_audit_end_tx(kw_audit_chain *chain, kw_db *db, kw_err err);

/* Convenience: BEGIN (scoped to ev->tenant_id, so the INSERT policy admits
 * the row; system scope when it is NULL), append, COMMIT, and the chain's
 * committed/rolled_back bookkeeping — for callers with no transaction of
 * their own (keywardctl). Must not be called inside an open transaction. */
KW_MUST_CHECK kw_err kw_audit_write_one(kw_audit_chain *c, kw_hsm_session *s, kw_db *db,
                                        const kw_audit_event *ev);

/* Group commit: one thread, its own connection, session and chain, that
 * batches rows from many requests into one transaction. kw_audit_writer_log
 * blocks the caller until its row is durable (KW_OK) or failed
 * (KW_ERR_DB_UNAVAILABLE, KW_ERR_DB for a row the database refuses); a
 * malformed event is KW_ERR_INVALID and a full queue or a stopping writer
 * KW_ERR_BUSY, both without waiting. Thread-safe. */
typedef struct kw_audit_writer kw_audit_writer;
KW_MUST_CHECK kw_err kw_audit_writer_start(kw_hsm *hsm, const char *conninfo, size_t max_batch,
                                           kw_audit_writer **out);
KW_MUST_CHECK kw_err kw_audit_writer_log(kw_audit_writer *w, const kw_audit_event *ev);
/* As kw_audit_writer_log, and the npre statements (parameters owned by the
 * caller, who blocks) run in the same transaction just before the row,
 * with app.tenant_id set to ev->tenant_id: the change and its audit row are
 * durable together, or neither is. */
KW_MUST_CHECK kw_err kw_audit_writer_log_with(kw_audit_writer *w, const kw_audit_event *ev,
                                              const kw_db_stmt *pre, size_t npre);
/* Asynchronous form: queues and returns at once (KW_ERR_BUSY when full,
 * then cb is never called); cb(arg, outcome) runs later on the writer's
 * thread once the row (and pre) is durable or failed. ev and pre must stay
 * valid until then. */
typedef void (*kw_audit_done_fn)(void *arg, kw_err result);
KW_MUST_CHECK kw_err kw_audit_writer_submit(kw_audit_writer *w, const kw_audit_event *ev,
                                            const kw_db_stmt *pre, size_t npre, kw_audit_done_fn cb,
                                            void *arg);
/* Fire and forget, for rows nobody waits for (refusals): queues a copy of
 * ev (nothing of the caller's is kept) and returns at once; a row that
 * cannot be written later is logged as a warning. KW_ERR_INVALID for a
 * malformed event, KW_ERR_BUSY for a full queue or a stopping writer.
 * Every row queued before kw_audit_writer_join is written. */
KW_MUST_CHECK kw_err kw_audit_writer_post(kw_audit_writer *w, const kw_audit_event *ev);
/* Rows written and transactions committed so far (for tests and metrics). */
void kw_audit_writer_stats(kw_audit_writer *w, unsigned long long *rows, unsigned long long *commits);
/* Rows queued or being written, whose outcome is not settled yet. */
unsigned long long kw_audit_writer_pending(kw_audit_writer *w);
/* Writes every queued row, refuses new ones (KW_ERR_BUSY) and ends the
 * thread; the writer stays readable (stats) until stopped.
 * Idempotent. */
void kw_audit_writer_join(kw_audit_writer *w);
/* kw_audit_writer_join, then frees the writer. */
void kw_audit_writer_stop(kw_audit_writer *w);

/* --- checkpoints: each chain's progress, kept outside the database ------
 *
 * A checkpoint is a chain head as keyward wrote it: chain id, seq, that
 * row's mac, and head_mac (the head's MAC under audit key `key`, see
 * audit_internal.h), so nobody without the token can make one up. keywardd
 * logs, as one NOTICE line each, the checkpoints of its chains that moved,
 * every audit.checkpoint_interval and at shutdown; shipped off the host
 * (journald forwarding, a SIEM), they let `keywardctl audit verify
 * --checkpoints FILE` refuse a database whose chain was cut back behind
 * one, or deleted whole. */
#define KW_AUDIT_CHECKPOINT_TAG "audit checkpoint v1"
typedef struct kw_audit_checkpoint {
	char chain_id[37];
	uint64_t seq;
	uint32_t key_version;
	unsigned char mac[32], head_mac[32];
} kw_audit_checkpoint;
/* "audit checkpoint v1 chain=<uuid> seq=<n> key=<v> mac=<hex> head_mac=<hex>" */
void kw_audit_checkpoint_format(const kw_audit_checkpoint *cp, char *out, size_t cap);
/* A checkpoint found anywhere in line (so a log line with its timestamp
 * will do): KW_OK; KW_ERR_NOT_FOUND when the line holds none;
 * KW_ERR_INVALID when it holds a malformed one. */
KW_MUST_CHECK kw_err kw_audit_checkpoint_parse(const char *line, kw_audit_checkpoint *out);
/* Logs the checkpoints of this process's chains that moved since their
 * last one (all: every chain with a row). Returns how many it logged.
 * From the first call on, a chain also logs its last checkpoint when it
 * is freed (a worker that stops, a chain that restarts under a new id is
 * logged at its next call). keywardctl never calls it. */
size_t kw_audit_checkpoints_log(bool all);
/* Prints, one line each, the checkpoint of every chain head the database
 * holds now, after checking each head's MAC (KW_ERR_VERIFY if one fails). */
KW_MUST_CHECK kw_err kw_audit_checkpoints_current(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, FILE *out);

/* Walks every chain; returns KW_OK if all verify, then writes one summary
 * line "audit verify: <n> chains, <m> rows: ok" to `report` (may be NULL)
 * and sets *rows_checked (may be NULL). On the first broken row writes
 * "audit chain <id> broken at seq <n> (row id <id>|-): <reason>" and returns
 * KW_ERR_VERIFY. With checkpoints (cps[0..ncps), may be 0), also refuses
 * (KW_ERR_VERIFY, one line) a database that lacks any checkpoint's row or
 * holds another mac there: a tail cut back, or a chain deleted. A
 * checkpoint whose own MAC does not verify is KW_ERR_INVALID (the file is
 * not keyward's). Needs a connection that can read every row (schema owner
 * with BYPASSRLS, or superuser). */
KW_MUST_CHECK kw_err kw_audit_verify(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, FILE *report,
                                     unsigned long long *rows_checked, const kw_audit_checkpoint *cps,
                                     size_t ncps);

#endif
