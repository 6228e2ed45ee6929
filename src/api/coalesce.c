/* coalesce.c — request coalescing (DESIGN 5.8): identical concurrent GETs
 * of a route that allows it run once.
 *
 * Identical: the same route, the request target as sent and the same
 * credential (the Authorization header's value): the key is SHA-256 over
 * the three, each prefixed by its length, so no two different requests
 * share one. A call joins only after the pipeline admitted it on its own
 * (its credential, budgets and scopes), so only the work is shared: the
 * first call of a key leads and runs the handler; calls arriving while it
 * runs park (no thread waits) and are settled by the leader's worker,
 * each with its own copy of the outcome: its own request id, its own
 * audit row (durable before its answer when the route wants that), its
 * own rate-limit headers. The shared result is held in locked memory while
 * it is copied out and wiped after. A waiter parked longer than
 * coalesce.timeout_ms is handed back to the worker pool to run on its own.
 * Nothing is kept after the leader finishes: no result outlives its run
 * (a TTL would serve an answer after a revocation or rotation). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handlers.h"
#include "keyward/api/api.h"
#include "keyward/app/app.h"
#include "keyward/core/log.h"
#include "keyward/core/secret.h"
#include "keyward/core/strbuf.h"

#define MAX_ROUTES 64
#define NBUCKETS   10 /* wait histogram (ms): 0.5 1 2 5 10 25 50 100 250 +Inf */

static const double bucket_ms[NBUCKETS - 1] = {0.5, 1, 2, 5, 10, 25, 50, 100, 250};

typedef struct waiter {
	kw_call *call;
	kw_caller who;
	double since; /* monotonic seconds */
	struct waiter *next;
} waiter;

struct kw_flight {
	unsigned char key[32];
	int route;
	waiter *waiters;
	struct kw_flight *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tick = PTHREAD_COND_INITIALIZER;
static kw_flight *flights;
static bool sweeper_started, stopping;
static pthread_t sweeper;
static kw_pool *sweeper_pool;
static int timeout_ms = 2000;

static atomic_ullong m_leaders[MAX_ROUTES], m_followers[MAX_ROUTES], m_timeouts[MAX_ROUTES],
    m_errors[MAX_ROUTES];
static atomic_ullong m_wait[MAX_ROUTES][NBUCKETS], m_wait_us[MAX_ROUTES];

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether coalesce.routes names route (a comma-separated list). */
static bool route_enabled(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; p && *p;) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		while (len > 0 && *p == ' ')
			p++, len--;
		while (len > 0 && p[len - 1] == ' ')
			len--;
		if (len == n && strncmp(p, name, n) == 0)
			return true;
		p = e ? e + 1 : NULL;
	}
	return false;
}

bool kw_coalesce_wanted(const kw_call *call)
{
	const kw_api_spec *s = call->def->spec;
	return s->coalesce && call->res != NULL && strcmp(call->req.method, "GET") == 0 &&
	       (call->app_flags & KW_FLAG_NO_COALESCE) == 0 && call->route >= 0 && call->route < MAX_ROUTES &&
	       route_enabled(call->app->cfg->coalesce_routes, call->def->name);
}

static void key_of(const kw_call *call, unsigned char out[32])
{
	const char *auth = kw_request_header(&call->req, "Authorization", NULL);
	const char *parts[3] = {call->def->name, call->req.target ? call->req.target : "", auth ? auth : ""};
	EVP_MD_CTX *x = EVP_MD_CTX_new();
	EVP_DigestInit_ex(x, EVP_sha256(), NULL);
	for (int i = 0; i < 3; i++) {
		unsigned char len[8];
		uint64_t n = strlen(parts[i]);
		for (int b = 0; b < 8; b++)
			len[b] = (unsigned char)(n >> (56 - 8 * b));
		EVP_DigestUpdate(x, len, sizeof(len));
		EVP_DigestUpdate(x, parts[i], (size_t)n);
	}
	EVP_DigestFinal_ex(x, out, NULL);
	EVP_MD_CTX_free(x);
}

static void *sweep(void *arg);

kw_flight *kw_coalesce_enter(kw_call *call, const kw_caller *who, bool *parked)
{
	unsigned char key[32];
	key_of(call, key);
	*parked = false;
	pthread_mutex_lock(&mu);
	if (!sweeper_started && call->app->pool != NULL) {
		timeout_ms = call->app->cfg->coalesce_timeout_ms;
		sweeper_pool = call->app->pool;
		sweeper_started = pthread_create(&sweeper, NULL, sweep, NULL) == 0;
	}
	kw_flight *f = flights;
	while (f != NULL && (f->route != call->route || CRYPTO_memcmp(f->key, key, 32) != 0))
		f = f->next;
	if (f != NULL) {
		waiter *w = calloc(1, sizeof(*w));
		if (w != NULL) {
			w->call = call;
			w->who = *who;
			w->since = mono();
			w->next = f->waiters;
			f->waiters = w;
			kw_call_detach(call); /* the leader's worker (or the sweeper) finishes it */
			atomic_fetch_add(&m_followers[call->route], 1);
			*parked = true;
		}
		pthread_mutex_unlock(&mu);
		return NULL; /* parked, or (out of memory) runs on its own */
	}
	f = calloc(1, sizeof(*f));
	if (f != NULL) {
		memcpy(f->key, key, 32);
		f->route = call->route;
		f->next = flights;
		flights = f;
		atomic_fetch_add(&m_leaders[call->route], 1);
	}
	pthread_mutex_unlock(&mu);
	return f;
}

typedef struct follower_hold {
	kw_caller who;
	char status[64], context[512], target[160];
	kw_audit_event ev;
} follower_hold;

static void hold_free(void *h)
{
	OPENSSL_cleanse(h, sizeof(follower_hold));
	free(h);
}

/* A waiter's own copy of the leader's outcome (its body from shared). */
static kw_outcome copy_for(const waiter *w, const kw_outcome *o, const unsigned char *shared)
{
	kw_outcome c = *o;
	c.body = NULL;
	c.release = NULL;
	c.hold = NULL;
	if (o->kind == KW_OUT_ERROR)
		return c;
	char *body = malloc(o->len + 1);
	if (body == NULL)
		return kw_out_failure(KW_ERR_NOMEM);
	if (o->len > 0)
		memcpy(body, shared, o->len);
	body[o->len] = '\0';
	c.body = body;
	if (o->kind == KW_OUT_ANSWER)
		return c;
	/* After audit: the waiter's own row, for its own request. */
	follower_hold *h = calloc(1, sizeof(*h));
	if (h == NULL || o->npre > 0) {
		OPENSSL_cleanse(body, o->len);
		free(body);
		free(h);
		return kw_out_failure(o->npre > 0 ? KW_ERR_BUSY : KW_ERR_NOMEM);
	}
	h->who = w->who;
	snprintf(h->status, sizeof(h->status), "%s", o->ev.status ? o->ev.status : "ok");
	snprintf(h->context, sizeof(h->context), "%s", o->ev.context ? o->ev.context : "");
	snprintf(h->target, sizeof(h->target), "%s", o->ev.target ? o->ev.target : "");
	h->ev = kw_api_call_event(w->call, &h->who, h->status, o->ev.context ? h->context : NULL);
	h->ev.target = o->ev.target ? h->target : NULL;
	c.ev = h->ev;
	c.release = hold_free;
	c.hold = h;
	return c;
}

static void observe_wait(int route, double secs)
{
	double ms = secs * 1e3;
	int b = 0;
	while (b < NBUCKETS - 1 && ms > bucket_ms[b])
		b++;
	atomic_fetch_add(&m_wait[route][b], 1);
	atomic_fetch_add(&m_wait_us[route], (unsigned long long)(secs * 1e6));
}

void kw_coalesce_finish(kw_flight *f, kw_call *leader, const kw_outcome *o)
{
	if (f == NULL)
		return;
	pthread_mutex_lock(&mu);
	kw_flight **link = &flights;
	while (*link != f)
		link = &(*link)->next;
	*link = f->next; /* later arrivals start a flight of their own */
	waiter *w = f->waiters;
	f->waiters = NULL;
	pthread_mutex_unlock(&mu);
	if (o->kind == KW_OUT_ERROR)
		atomic_fetch_add(&m_errors[f->route], 1);
	/* The shared result, in locked memory while it is handed out. */
	kw_secret *shared = w != NULL && o->body != NULL && o->len > 0 ? kw_secret_new(o->len) : NULL;
	if (shared != NULL)
		memcpy(kw_secret_data(shared), o->body, o->len);
	double now = mono();
	while (w != NULL) {
		waiter *next = w->next;
		kw_call *c = w->call;
		observe_wait(f->route, now - w->since);
		kw_outcome mine = shared != NULL || o->len == 0 || o->kind == KW_OUT_ERROR
		                      ? copy_for(w, o, shared ? kw_secret_data(shared) : NULL)
		                      : kw_out_failure(KW_ERR_NOMEM);
		c->res = leader->res; /* settled on the leader's worker */
		if (kw_api_settle(c, &w->who, mine) == KW_CALL_ANSWERED) {
			c->res = NULL;
			kw_call_finish(c);
		}
		OPENSSL_cleanse(w, sizeof(*w));
		free(w);
		w = next;
	}
	kw_secret_free(shared);
	free(f);
}

/* Waiters parked longer than the timeout run on their own. */
static void *sweep(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	while (!stopping) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 10 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&tick, &mu, &until);
		double now = mono(), limit = timeout_ms / 1e3;
		for (kw_flight *f = flights; f != NULL; f = f->next) {
			waiter **link = &f->waiters;
			while (*link != NULL) {
				waiter *w = *link;
				if (now - w->since < limit) {
					link = &w->next;
					continue;
				}
				*link = w->next;
				kw_call *c = w->call;
				atomic_fetch_add(&m_timeouts[f->route], 1);
				observe_wait(f->route, now - w->since);
				OPENSSL_cleanse(w, sizeof(*w));
				free(w);
				c->app_flags |= KW_FLAG_NO_COALESCE;
				if (kw_pool_submit(sweeper_pool, c, c->finish, c->finish_arg) != KW_OK) {
					kw_respond_error(c, 503, "overloaded",
					                 "the service is overloaded; retry shortly");
					kw_respond_header(c, "Retry-After", "1");
					kw_call_finish(c);
				}
			}
		}
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

void kw_coalesce_metrics(kw_strbuf *b)
{
	static const char *const names[4][2] = {
	    {"keyward_coalesce_leaders_total", "Coalesced GETs that ran the work (one read each), by route."},
	    {"keyward_coalesce_followers_total", "Identical GETs that waited for a leader's work, by route."},
	    {"keyward_coalesce_timeouts_total",
	     "Followers that waited past coalesce.timeout_ms and ran on their own."},
	    {"keyward_coalesce_errors_total",
	     "Leaders whose outcome was an error (fanned out to their followers)."}};
	atomic_ullong *const v[4] = {m_leaders, m_followers, m_timeouts, m_errors};
	for (int m = 0; m < 4; m++) {
		kw_strbuf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", names[m][0], names[m][1],
		                 names[m][0]);
		for (size_t r = 0; r < kw_api_routes_count && r < MAX_ROUTES; r++)
			if (kw_api_routes[r].spec && ((const kw_api_spec *)kw_api_routes[r].spec)->coalesce)
				kw_strbuf_printf(b, "%s{route=\"%s\"} %llu\n", names[m][0],
				                 kw_api_routes[r].name,
				                 (unsigned long long)atomic_load(&v[m][r]));
	}
	kw_strbuf_printf(b,
	                 "# HELP keyward_coalesce_wait_seconds How long followers waited for their leader.\n"
	                 "# TYPE keyward_coalesce_wait_seconds histogram\n");
	for (size_t r = 0; r < kw_api_routes_count && r < MAX_ROUTES; r++) {
		if (!kw_api_routes[r].spec || !((const kw_api_spec *)kw_api_routes[r].spec)->coalesce)
			continue;
		unsigned long long cum = 0;
		for (int i = 0; i < NBUCKETS; i++) {
			cum += atomic_load(&m_wait[r][i]);
			if (i < NBUCKETS - 1)
				kw_strbuf_printf(
				    b, "keyward_coalesce_wait_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
				    kw_api_routes[r].name, bucket_ms[i] / 1e3, cum);
			else
				kw_strbuf_printf(
				    b,
				    "keyward_coalesce_wait_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
				    kw_api_routes[r].name, cum);
		}
		kw_strbuf_printf(b, "keyward_coalesce_wait_seconds_sum{route=\"%s\"} %.6f\n",
		                 kw_api_routes[r].name, (double)atomic_load(&m_wait_us[r]) / 1e6);
		kw_strbuf_printf(b, "keyward_coalesce_wait_seconds_count{route=\"%s\"} %llu\n",
		                 kw_api_routes[r].name, cum);
	}
}

void kw_coalesce_stop(void)
{
	pthread_mutex_lock(&mu);
	bool started = sweeper_started;
	stopping = true;
	pthread_cond_broadcast(&tick);
	pthread_mutex_unlock(&mu);
	if (started)
		pthread_join(sweeper, NULL);
	pthread_mutex_lock(&mu);
	sweeper_started = false;
	stopping = false;
	pthread_mutex_unlock(&mu);
}
