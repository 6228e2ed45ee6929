/* pool.c — the bounded worker pool.
 *
 * N threads take calls from one bounded FIFO. Each worker owns what the
 * application's hooks open for it (keywardd: one HSM session, one
 * PostgreSQL connection and one audit chain, src/app/workers.c) for its
 * whole life; the hooks reopen what failed before each run, so a token or
 * database outage degrades answers (503) instead of killing threads. When
 * the queue is full kw_pool_submit refuses at once: the caller answers 503
 * with Retry-After instead of letting latency grow without bound.
 *
 * A route with a batch handler (the vault key fetch) is taken in runs: a
 * worker that dequeues one of its calls also takes the calls of the same
 * route queued right behind it (KW_POOL_BATCH_MAX in all, and no more than
 * its share when other workers are idle), so their database reads share
 * one round trip. Order is kept: a run stops at the first call of another
 * route. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "keyward/core/log.h"
#include "keyward/http/http.h"

typedef struct kw_job {
	kw_call *call;
	kw_pool_done_fn done;
	void *arg;
} kw_job;

typedef struct kw_worker {
	kw_pool *pool;
	int index;
	pthread_t thread;
	kw_worker_res *res;
	unsigned prepared_gen; /* the pool's prepare_gen it has acted on; guarded by the pool's lock */
} kw_worker;

struct kw_pool {
	kw_pool_hooks hooks;
	pthread_mutex_t lock;
	pthread_cond_t nonempty;
	kw_job *ring; /* guarded by lock */
	int cap, head, count;
	int idle;             /* workers waiting for a call; guarded by lock */
	unsigned prepare_gen; /* kw_pool_prepare_idle calls; guarded by lock */
	bool stopping;
	int nworkers;
	kw_worker *workers;
	atomic_int depth;
	atomic_ullong batched;
};

static void worker_prepare(kw_pool *pool, kw_worker *w)
{
	if (w->res != NULL && pool->hooks.prepare != NULL)
		pool->hooks.prepare(pool->hooks.ctx, w->res);
}

/* A queued call its route's batch handler may take. */
static bool batchable(const kw_job *job)
{
	return job->call->defer == NULL && job->call->def->batch != NULL;
}

void kw_call_detach(kw_call *call)
{
	if (call->res == NULL || call->finish == NULL)
		kw_misuse("kw_call_detach: not on a worker");
	call->res = NULL;
}

void kw_call_finish(kw_call *call)
{
	call->finish(call, call->finish_arg);
}

static void *worker_main(void *arg)
{
	kw_worker *w = arg;
	kw_pool *pool = w->pool;
	/* Open now, not on the first request. */
	w->res = pool->hooks.open ? pool->hooks.open(pool->hooks.ctx, w->index) : NULL;
	kw_job run[KW_POOL_BATCH_MAX];
	kw_call *calls[KW_POOL_BATCH_MAX];
	kw_handled handled[KW_POOL_BATCH_MAX];
	for (;;) {
		pthread_mutex_lock(&pool->lock);
		while (pool->count == 0 && !pool->stopping && w->prepared_gen == pool->prepare_gen) {
			pool->idle++;
			pthread_cond_wait(&pool->nonempty, &pool->lock);
			pool->idle--;
		}
		if (pool->count == 0 && pool->stopping) {
			pthread_mutex_unlock(&pool->lock);
			break;
		}
		if (pool->count == 0) {
			/* Asked to look at its resources while idle
			 * (kw_pool_prepare_idle): a retired key's copies go now. */
			w->prepared_gen = pool->prepare_gen;
			pthread_mutex_unlock(&pool->lock);
			worker_prepare(pool, w);
			continue;
		}
		w->prepared_gen = pool->prepare_gen; /* a run prepares anyway */
		/* A run leaves idle workers their share of the queue: batching
		 * saves round trips, it must not take parallel work away. */
		size_t n = 0, max = 1 + (size_t)(pool->count - 1) / (size_t)(pool->idle + 1);
		if (max > KW_POOL_BATCH_MAX)
			max = KW_POOL_BATCH_MAX;
		do {
			run[n++] = pool->ring[pool->head];
			pool->head = (pool->head + 1) % pool->cap;
			pool->count--;
		} while (batchable(&run[0]) && n < max && pool->count > 0 &&
		         pool->ring[pool->head].call->def == run[0].call->def &&
		         batchable(&pool->ring[pool->head]));
		atomic_store_explicit(&pool->depth, pool->count, memory_order_relaxed);
		pthread_mutex_unlock(&pool->lock);

		worker_prepare(pool, w);
		for (size_t i = 0; i < n; i++) {
			run[i].call->res = w->res;
			run[i].call->finish = run[i].done;
			run[i].call->finish_arg = run[i].arg;
			calls[i] = run[i].call;
			handled[i] = KW_CALL_ANSWERED;
		}
		if (n > 1) {
			atomic_fetch_add(&pool->batched, n);
			run[0].call->def->batch(calls, n, handled);
		} else {
			kw_handler_fn fn = run[0].call->defer ? run[0].call->defer : run[0].call->def->fn;
			run[0].call->defer = NULL;
			handled[0] = fn(run[0].call);
		}
		for (size_t i = 0; i < n; i++) {
			if (handled[i] == KW_CALL_KEPT)
				continue; /* someone else finishes it; it may be gone already */
			run[i].call->res = NULL;
			run[i].done(run[i].call, run[i].arg);
		}
	}
	if (w->res != NULL && pool->hooks.close != NULL)
		pool->hooks.close(pool->hooks.ctx, w->res);
	return NULL;
}

kw_err kw_pool_start(const kw_pool_hooks *hooks, int workers, int queue_max, kw_pool **out)
{
	if (workers <= 0 || queue_max <= 0)
		kw_misuse("kw_pool_start: sizes must be positive");
	kw_pool *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return KW_ERR_NOMEM;
	p->hooks = *hooks;
	p->cap = queue_max;
	p->ring = calloc((size_t)queue_max, sizeof(*p->ring));
	p->workers = calloc((size_t)workers, sizeof(*p->workers));
	if (p->ring == NULL || p->workers == NULL) {
		free(p->ring);
		free(p->workers);
		free(p);
		return KW_ERR_NOMEM;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->nonempty, NULL);
	for (int i = 0; i < workers; i++) {
		p->workers[i].pool = p;
		p->workers[i].index = i;
		if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
			kw_err_log("cannot start worker %d", i);
			break;
		}
		p->nworkers++;
	}
	if (p->nworkers == 0) {
		kw_pool_stop(p);
		return KW_ERR_NOMEM;
	}
	*out = p;
	return KW_OK;
}

kw_err kw_pool_submit(kw_pool *pool, kw_call *call, kw_pool_done_fn done, void *arg)
{
	pthread_mutex_lock(&pool->lock);
	if (pool->count >= pool->cap || pool->stopping) {
		pthread_mutex_unlock(&pool->lock);
		return KW_ERR_BUSY;
	}
	int tail = (pool->head + pool->count) % pool->cap;
	pool->ring[tail] = (kw_job){call, done, arg};
	pool->count++;
	atomic_store_explicit(&pool->depth, pool->count, memory_order_relaxed);
	pthread_cond_signal(&pool->nonempty);
	pthread_mutex_unlock(&pool->lock);
	return KW_OK;
}

void kw_pool_prepare_idle(kw_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	pool->prepare_gen++;
	pthread_cond_broadcast(&pool->nonempty);
	pthread_mutex_unlock(&pool->lock);
}

int kw_pool_queue_depth(kw_pool *pool)
{
	return atomic_load_explicit(&pool->depth, memory_order_relaxed);
}

unsigned long long kw_pool_batched_calls(kw_pool *pool)
{
	return atomic_load(&pool->batched);
}

int kw_pool_workers(kw_pool *pool)
{
	return pool->nworkers;
}

/* Lets queued jobs finish, then joins every worker. */
void kw_pool_stop(kw_pool *pool)
{
	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->nonempty);
	pthread_mutex_unlock(&pool->lock);
	for (int i = 0; i < pool->nworkers; i++)
		pthread_join(pool->workers[i].thread, NULL);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->nonempty);
	free(pool->ring);
	free(pool->workers);
	free(pool);
}

/* After a drain gave up: the queued calls are answered 503 without running
 * their handlers (nothing is half-done for a client that is gone). */
void kw_pool_cancel_queued(kw_pool *pool)
{
	for (;;) {
		pthread_mutex_lock(&pool->lock);
		if (pool->count == 0) {
			pthread_mutex_unlock(&pool->lock);
			return;
		}
		kw_job job = pool->ring[pool->head];
		pool->head = (pool->head + 1) % pool->cap;
		pool->count--;
		atomic_store_explicit(&pool->depth, pool->count, memory_order_relaxed);
		pthread_mutex_unlock(&pool->lock);
		kw_respond_error(job.call, 503, "shutting_down", "the service is shutting down");
		job.done(job.call, job.arg);
	}
}
