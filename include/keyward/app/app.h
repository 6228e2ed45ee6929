/* app.h — the service's shared state and its boot sequence.
 *
 * kw_app is built once by keywardd (or a test) before any thread starts and
 * torn down after every thread has stopped; its members are then read-only
 * except where they say otherwise. */
#ifndef KEYWARD_APP_H
#define KEYWARD_APP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "keyward/audit/audit.h"
#include "keyward/auth/apikey.h"
#include "keyward/core/config.h"
#include "keyward/db/db.h"
#include "keyward/hsm/hsm.h"
#include "keyward/http/http.h"

typedef struct kw_app kw_app;
struct kw_app {
	kw_config *cfg;
	kw_hsm *hsm;
	kw_audit_writer *audit; /* group commit for read audit rows */
	kw_pool *pool;
	kw_server *server;
	atomic_int db_connected;      /* workers holding a live connection */
	struct kw_ratelimit *rl;      /* buckets by IP, key, failures */
	struct kw_cidr_list *trusted; /* proxies whose X-Forwarded-For counts */
	struct kw_keycache *keycache; /* verified API keys, short TTL */
	struct kw_jwt_keyset *jwks;   /* access-token verification keys */
	struct kw_tokcache *tokcache; /* verified access tokens until their exp */
	struct kw_revcache *revs;     /* revoked jti / sid, kept fresh by LISTEN */
	struct kw_roles *roles;       /* role -> TTL, permissions */
	int64_t access_ttl_max_s;     /* longest role TTL + leeway */
	struct kw_housekeeper *housekeeper;
	struct kw_changes *changes;            /* the change feed: other instances' changes */
	struct kw_transit_cache *transit_keys; /* derived transit keys, dropped on change */
	struct kw_sigcache *sigkeys;           /* verified signing keys, dropped on change */
};

/* The boot checks of DESIGN §6. In production every missing part (token,
 * PIN, an active key of each family, the database, the schema version) is
 * an error with one clear line in errbuf; in development missing keys are
 * created and pending migrations applied (with a loud warning). On success
 * app->hsm is open. */
KW_MUST_CHECK kw_err kw_app_boot(kw_app *app, kw_config *cfg, char *errbuf, size_t errlen);
void kw_app_shutdown(kw_app *app);

/* Housekeeping (src/app/housekeeping.c): a thread with its own database
 * connection that purges expired revocations, nonces and refresh tokens
 * every auth.housekeeping_interval, in bounded batches. */
typedef struct kw_housekeeper kw_housekeeper;
KW_MUST_CHECK kw_err kw_housekeeper_start(kw_app *app, kw_housekeeper **out);
/* Re-reads the token's keys (a rotation or retirement by keywardctl): the
 * JWT key set, and idle workers drop copies of keys that went. Called by
 * housekeeping and by the change feed. */
void kw_app_keys_refresh(kw_app *app);
void kw_housekeeper_stop(kw_housekeeper *h);

/* A worker's resources (src/app/workers.c): one HSM session, one database
 * connection and one audit chain, opened lazily and reopened when they
 * fail; NULL members are unavailable right now. */
struct kw_worker_res {
	int index;
	kw_app *app;
	kw_hsm_session *hsm;
	kw_db *db;
	kw_audit_chain *audit;
};
/* The pool's hooks for these (ctx = the app). */
kw_pool_hooks kw_app_pool_hooks(kw_app *app);

/* Tenants (src/app/tenants.c; keywardctl, as the schema owner). */
/* Creates the tenant and its
 * first admin key in one transaction, with an audit row appended to chain
 * (whose head moves only if the commit holds); key is shown to the
 * operator once. KW_ERR_INVALID for a name that is not 1..128 bytes of
 * UTF-8 without control characters (nothing sent); KW_ERR_EXISTS for a
 * duplicate name (nothing written). Outputs are set only on success. */
KW_MUST_CHECK kw_err kw_tenant_create(kw_db *db, kw_hsm *hsm, kw_hsm_session *s, kw_audit_chain *chain,
                                      const char *name, char tenant_id[37], char key[KW_APIKEY_LEN + 1]);
#endif
