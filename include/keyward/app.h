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

#include "keyward/audit.h"
#include "keyward/config.h"
#include "keyward/hsm.h"

typedef struct kw_pool kw_pool;
typedef struct kw_server kw_server;

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
void kw_housekeeper_stop(kw_housekeeper *h);

/* Worker pool (src/http/pool.c). Each worker owns one HSM session, one
 * database connection and one audit chain, opened lazily and reopened when
 * they fail. */
typedef struct kw_call kw_call;
typedef void (*kw_pool_done_fn)(kw_call *call, void *arg);
KW_MUST_CHECK kw_err kw_pool_start(kw_app *app, int workers, int queue_max, kw_pool **out);
/* Queues call; `done` runs on the worker thread after the handler. Returns
 * KW_ERR_BUSY when the queue is full (the caller answers 503). */
KW_MUST_CHECK kw_err kw_pool_submit(kw_pool *pool, kw_call *call, kw_pool_done_fn done, void *arg);
int kw_pool_queue_depth(kw_pool *pool);
int kw_pool_workers(kw_pool *pool);
/* Calls run together with at least one other (a route's batch handler). */
unsigned long long kw_pool_batched_calls(kw_pool *pool);
/* How many queued calls of one route a worker takes at once. */
#define KW_POOL_BATCH_MAX 16
void kw_pool_stop(kw_pool *pool);
/* Answers every queued, not yet started call 503 without running it. */
void kw_pool_cancel_queued(kw_pool *pool);

/* HTTP server (src/http/server.c). kw_server_validate checks the listener
 * settings (address, TLS pair, loopback policy) without binding. */
KW_MUST_CHECK kw_err kw_server_validate(const kw_config *cfg, char *errbuf, size_t errlen);
/* Serves routes[0..n) (the application's table; it must outlive the
 * server). */
struct kw_route;
KW_MUST_CHECK kw_err kw_server_start(kw_app *app, const struct kw_route *routes, size_t nroutes,
                                     kw_server **out, char *errbuf, size_t errlen);
/* Stops accepting, waits up to drain_ms for requests in flight, stops the
 * loops. Returns the number of requests still in flight when it gave up. */
int kw_server_drain(kw_server *srv, int drain_ms);
void kw_server_free(kw_server *srv);
long kw_server_in_flight(kw_server *srv);

#endif
