/* http.h — requests, responses and the route table.
 *
 * A request is copied off its evhttp connection on the I/O thread that
 * received it (method, path, headers, body, peer, request id), so a handler
 * never touches libevent. Handlers marked `on_worker` run on the worker
 * pool, where they may call the HSM and the database; the others run on the
 * I/O thread and must not block. Every request ends in exactly one reply,
 * sent on its own I/O thread. */
#ifndef KEYWARD_HTTP_H
#define KEYWARD_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "keyward/core/config.h"
#include "keyward/core/error.h"

/* The application's shared state and a worker's resources: the transport
 * hands them to handlers (kw_call) and never looks inside. */
typedef struct kw_app kw_app;
typedef struct kw_worker_res kw_worker_res;

typedef struct kw_header {
	char *name;
	char *value;
} kw_header;

typedef struct kw_request {
	const char *method; /* "GET", "POST", ... (static) */
	char *path;         /* decoded path, no query */
	char *query;        /* raw query or NULL */
	char *target;       /* the request target exactly as sent (path and query) */
	kw_header *headers;
	size_t nheaders;
	unsigned char *body;
	size_t body_len;
	char peer_ip[64];     /* "127.0.0.1", "::1", "unix" */
	char client_ip[64];   /* peer_ip, or from X-Forwarded-For of a trusted proxy */
	char request_id[129]; /* echoed or generated */
	char path_param[128]; /* the {id} segment of a matched pattern */
} kw_request;

#define KW_RESP_MAX_HEADERS 8
typedef struct kw_response {
	int status;
	const char *content_type;
	char *body; /* malloc'd; freed by the server */
	size_t body_len;
	kw_header headers[KW_RESP_MAX_HEADERS]; /* malloc'd names and values */
	size_t nheaders;
} kw_response;

typedef struct kw_call kw_call;
/* What a handler did with its call: answered it (the transport sends the
 * reply and finishes it), or kept it (it detached the call, and whoever
 * holds it now calls kw_call_finish exactly once, from any thread; the
 * transport touches it no more). */
typedef enum kw_handled { KW_CALL_ANSWERED, KW_CALL_KEPT } kw_handled;
typedef kw_handled (*kw_handler_fn)(kw_call *call);

struct kw_call {
	kw_app *app;
	kw_request req;
	kw_response resp;
	kw_worker_res *res;         /* NULL on an I/O thread */
	const struct kw_route *def; /* the matched row of the server's route table */
	int route;                  /* its index in that table */
	/* Set by a handler running on an I/O thread that cannot finish there
	 * (it needs the token or the database, e.g. to audit a refusal): the
	 * server then runs this on a worker, with no answer written yet. */
	kw_handler_fn defer;
	/* The application's, untouched by the transport: what its pipeline has
	 * done already, kept across a defer to a worker. */
	unsigned app_flags;
	/* Set by the pool: finishes the call (hands the reply to its loop). */
	void (*finish)(kw_call *call, void *arg);
	void *finish_arg;
};

/* A worker handler that hands its call to another thread (e.g. the audit
 * writer) calls this first, returns KW_CALL_KEPT, and then must not touch
 * the call or the worker's resources again: the other thread answers it
 * and calls kw_call_finish() exactly once. */
void kw_call_detach(kw_call *call);
void kw_call_finish(kw_call *call);

/* Runs n calls of one route that were queued together, on one worker;
 * handled[i] says what became of calls[i]. */
typedef void (*kw_batch_fn)(kw_call **calls, size_t n, kw_handled *handled);

/* A row of the route table the server is handed. The transport matches
 * method and pattern, runs fn on the I/O thread or a worker, counts
 * under name; spec is the application's own declaration of the route,
 * which the transport never reads. */
typedef struct kw_route {
	const char *method;
	const char *pattern; /* "/api/v1/api-keys/{id}": one {param} segment at most */
	const char *name;    /* metrics label */
	bool on_worker;
	kw_handler_fn fn;
	/* Optional, for on_worker routes: takes calls of this route that wait
	 * next to each other in the worker queue (up to KW_POOL_BATCH_MAX). */
	kw_batch_fn batch;
	const void *spec;
	/* With http.admin_listen, served there and only there (metrics,
	 * readiness); without one, on every listener. */
	bool admin;
} kw_route;

/* Finds a route of routes[0..n) for method + path; *path_allowed tells
 * whether another method would match (405 rather than 404). Writes the
 * {param} into param (cap bytes). Returns the index, or -1. The table is
 * the application's (kw_server_start is handed it); the transport only
 * matches and runs its rows. */
int kw_route_match(const kw_route *routes, size_t n, const char *method, const char *path, char *param,
                   size_t cap, bool *path_allowed);

/* Wipes, in place, the copies of a request's header values, query and
 * body (they may carry credentials); the transport does so before it
 * frees every request. */
void kw_request_wipe(kw_request *r);

/* The query parameter name (decoded by libevent) into buf: 1 when it is
 * there once, 0 when absent, -1 when the query does not parse, the name
 * appears twice, or its value does not fit cap bytes. */
int kw_request_query(const kw_request *req, const char *name, char *buf, size_t cap);

/* Case-insensitive lookup; NULL if absent. *count is how many times the
 * header appears (for "two Authorization headers" checks). */
const char *kw_request_header(const kw_request *req, const char *name, int *count);

/* Response helpers. The body is JSON unless content_type says otherwise. */
void kw_respond_json(kw_call *call, int status, const char *json_text);
void kw_respond_text(kw_call *call, int status, const char *content_type, char *body, size_t len);
/* {"error": code, "message": message, "request_id": ...} */
void kw_respond_error(kw_call *call, int status, const char *code, const char *message);
void kw_respond_header(kw_call *call, const char *name, const char *value);

/* --- the worker pool (pool.c) ---------------------------------------------
 *
 * N threads take calls from one bounded FIFO. What a worker holds (a token
 * session, a database connection, ...) is the application's: the pool asks
 * its hooks to open it when the worker starts, to make sure it is usable
 * before each run, and to close it when the worker stops. */
typedef struct kw_pool kw_pool;
typedef struct kw_pool_hooks {
	void *ctx;
	kw_worker_res *(*open)(void *ctx, int index); /* NULL = no resources (handlers see NULL) */
	void (*prepare)(void *ctx, kw_worker_res *res);
	void (*close)(void *ctx, kw_worker_res *res);
} kw_pool_hooks;
typedef void (*kw_pool_done_fn)(kw_call *call, void *arg);
KW_MUST_CHECK kw_err kw_pool_start(const kw_pool_hooks *hooks, int workers, int queue_max, kw_pool **out);
/* Queues call; `done` runs on the worker thread after the handler. Returns
 * KW_ERR_BUSY when the queue is full (the caller answers 503). */
KW_MUST_CHECK kw_err kw_pool_submit(kw_pool *pool, kw_call *call, kw_pool_done_fn done, void *arg);
/* Every idle worker runs the prepare hook once, now (e.g. to drop what
 * it holds of a key that was retired), then waits for calls again. */
void kw_pool_prepare_idle(kw_pool *pool);
int kw_pool_queue_depth(kw_pool *pool);
int kw_pool_workers(kw_pool *pool);
/* Calls run together with at least one other (a route's batch handler). */
unsigned long long kw_pool_batched_calls(kw_pool *pool);
/* How many queued calls of one route a worker takes at once. */
#define KW_POOL_BATCH_MAX 16
void kw_pool_stop(kw_pool *pool);
/* Answers every queued, not yet started call 503 without running it. */
void kw_pool_cancel_queued(kw_pool *pool);

/* --- the server (server.c) -------------------------------------------------
 * kw_server_validate checks the listener settings (address, TLS pair,
 * loopback policy) without binding. */
typedef struct kw_server kw_server;
struct kw_cidr_list;
typedef struct kw_server_opts {
	const kw_config *cfg;
	const struct kw_cidr_list *trusted; /* proxies whose X-Forwarded-For counts */
	kw_pool *pool;
	kw_app *app;            /* handed to every call */
	const kw_route *routes; /* the application's table; it must outlive the server */
	size_t nroutes;
} kw_server_opts;
KW_MUST_CHECK kw_err kw_server_validate(const kw_config *cfg, char *errbuf, size_t errlen);
KW_MUST_CHECK kw_err kw_server_start(const kw_server_opts *opts, kw_server **out, char *errbuf,
                                     size_t errlen);
/* Stops accepting, waits up to drain_ms for requests in flight, stops the
 * loops. Returns the number of requests still in flight when it gave up. */
int kw_server_drain(kw_server *srv, int drain_ms);
void kw_server_free(kw_server *srv);
long kw_server_in_flight(kw_server *srv);

/* A valid incoming X-Request-Id: 1-128 of [A-Za-z0-9._-]. */
bool kw_request_id_valid(const char *s);
/* 32 hex characters from OpenSSL's RNG into out (>= 33 bytes). */
void kw_request_id_new(char *out);

#endif
