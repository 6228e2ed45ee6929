/* revocation.h — the in-process list of revoked access tokens.
 *
 * Access tokens are verified without a database round trip, so revocation
 * (by jti: one token; by sid: a whole refresh family) is checked against
 * a copy of the jwt_revocations table held in memory. One listener thread
 * per process keeps it fresh over its own PostgreSQL connection: LISTEN
 * keyward_revocations first, then load every unexpired row, then apply
 * each notification ("<jti|-> <sid|-> <expiry unix>", sent by a trigger at
 * commit). It also asks the database at least once a second (a cheap
 * query on jwt_revocations), so a lost connection or a missing table is
 * noticed within that time. After a reconnect the whole list is loaded
 * again.
 *
 * Fail closed: while the list is not known to be fresh (never loaded,
 * connection lost, table missing, last successful contact older than
 * stale_ms) every check answers KW_ERR_DB_UNAVAILABLE, which the caller
 * turns into 503 — never "valid". Entries are dropped after their expiry
 * (a token past exp is refused for that reason anyway). Thread-safe. */
#ifndef KEYWARD_REVOCATION_H
#define KEYWARD_REVOCATION_H

#include <stdbool.h>
#include <stdint.h>

#include "keyward/core/error.h"

#define KW_JTI_HEX_LEN 32 /* 128 bits, lower-case hex */

typedef struct kw_revcache kw_revcache;

/* Starts the listener thread with conninfo (the service role). Returns at
 * once; the cache becomes ready after the first load. stale_ms: how long
 * without a successful contact before checks fail closed (>= 1000). */
KW_MUST_CHECK kw_err kw_revcache_start(const char *conninfo, int stale_ms, kw_revcache **out);
/* Stops and joins the thread, frees everything. NULL is fine. */
void kw_revcache_stop(kw_revcache *rc);

/* KW_OK: neither jti nor sid is revoked. KW_ERR_VERIFY: one of them is.
 * KW_ERR_DB_UNAVAILABLE: the list is not known to be fresh. jti or sid may
 * be NULL (not checked). now_unix: the caller's clock (entries expired
 * before it are ignored). */
KW_MUST_CHECK kw_err kw_revcache_check(kw_revcache *rc, const char *jti, const char *sid, int64_t now_unix);

/* Records a revocation this process has just committed, so it holds here
 * before the notification comes back. jti or sid may be NULL. */
void kw_revcache_add(kw_revcache *rc, const char *jti, const char *sid, int64_t expires_unix);

/* Blocks up to timeout_ms for the first load; true when ready (for boot and
 * tests). */
bool kw_revcache_wait_ready(kw_revcache *rc, int timeout_ms);
bool kw_revcache_ready(kw_revcache *rc);

typedef struct kw_revcache_stats {
	uint64_t entries;       /* live entries now */
	uint64_t loads;         /* full loads (first, and after each reconnect) */
	uint64_t notifications; /* applied notifications */
	uint64_t refused_stale; /* checks answered KW_ERR_DB_UNAVAILABLE */
	uint64_t ignored;       /* notifications that named no row (forged, garbage) */
} kw_revcache_stats;
void kw_revcache_stats_get(kw_revcache *rc, kw_revcache_stats *out);

#endif
