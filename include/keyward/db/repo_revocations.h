/* repo_revocations.h — what the revocation list reads from jwt_revocations
 * (src/db/repo_revocations.c), over a kw_listener: LISTEN on the channel
 * the table's trigger notifies (migration 0003), the live list, and a
 * cheap heartbeat that proves the table is there. Revoking is
 * keyward/sessions.h's. */
#ifndef KEYWARD_REPO_REVOCATIONS_H
#define KEYWARD_REPO_REVOCATIONS_H

#include "keyward/db/listen.h"

#define KW_REVOCATIONS_CHANNEL "keyward_revocations"

KW_MUST_CHECK kw_err kw_revocations_listen(kw_listener *l, kw_log_level level);
/* Every revocation not yet past its token's expiry: jti (or NULL), sid (or
 * NULL), expiry (Unix seconds), one row each. */
KW_MUST_CHECK kw_err kw_revocations_load(kw_listener *l, kw_log_level level, kw_db_result **out);
KW_MUST_CHECK kw_err kw_revocations_heartbeat(kw_listener *l, kw_log_level level);
/* The rows of up to 64 ids (a notification carries a row id, migration
 * 0014): jti, sid, expiry, id. */
KW_MUST_CHECK kw_err kw_revocations_by_ids(kw_listener *l, const int64_t *ids, size_t n, kw_log_level level,
                                           kw_db_result **out);

#endif
