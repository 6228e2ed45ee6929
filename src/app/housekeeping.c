/* housekeeping.c — the periodic purge of dead token rows, and the audit
 * chains' checkpoints.
 *
 * One thread, its own database connection (the service role). Every
 * audit.checkpoint_interval it logs the checkpoints of the chains that
 * moved (kw_audit_checkpoints_log). Every
 * auth.housekeeping_interval it deletes expired revocations, wallet nonces
 * and refresh tokens, and families that expired or were revoked a day ago,
 * in statements of auth.housekeeping_batch rows so no transaction grows
 * large or holds locks long; and it re-reads the JWT keys from the token,
 * so a key rotated by keywardctl is picked up. Failures are logged and
 * retried next time. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "keyward/app/app.h"
#include "keyward/audit/audit.h"
#include "keyward/auth/tokens.h"
#include "keyward/core/log.h"
#include "keyward/db/sessions.h"

#define KW_PURGE_ROUNDS 100 /* batches per table and run */

struct kw_housekeeper {
	kw_app *app;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
};

/* Purges dead rows and re-reads the token's keys (each interval). */
static void housekeep(kw_housekeeper *h, kw_db **db)
{
	if (*db == NULL && kw_db_connect(h->app->cfg->db_conninfo, db) != KW_OK)
		*db = NULL;
	if (*db != NULL && kw_db_ensure(*db) == KW_OK) {
		kw_purge_counts n = {0};
		kw_err err = kw_sessions_purge(*db, h->app->cfg->housekeeping_batch, KW_PURGE_ROUNDS, &n);
		if (err != KW_OK)
			kw_warn("housekeeping: purge failed: %s", kw_err_str(err));
		else if (n.revocations + n.nonces + n.tokens + n.families + n.changes + n.signing_nonces > 0)
			kw_info("housekeeping: purged %llu revocations, %llu nonces, %llu refresh tokens, "
			        "%llu families, %llu changes, %llu signing nonces",
			        (unsigned long long)n.revocations, (unsigned long long)n.nonces,
			        (unsigned long long)n.tokens, (unsigned long long)n.families,
			        (unsigned long long)n.changes, (unsigned long long)n.signing_nonces);
	}
	kw_app_keys_refresh(h->app);
}

void kw_app_keys_refresh(kw_app *app)
{
	/* A key rotated by keywardctl becomes the signing key here too. */
	uint64_t epoch = kw_hsm_keys_epoch(app->hsm);
	if (kw_jwt_keyset_refresh(app->jwks, app->hsm, 0) != KW_OK)
		kw_warn("keys: cannot re-read the JWT keys from the token");
	/* A key that went (retired elsewhere): every idle worker destroys its
	 * session's copy of it now, not at its next request. */
	if (kw_hsm_keys_epoch(app->hsm) != epoch && app->pool != NULL)
		kw_pool_prepare_idle(app->pool);
}

static int64_t at_least_1(int64_t s)
{
	return s < 1 ? 1 : s;
}

static void *run(void *arg)
{
	kw_housekeeper *h = arg;
	kw_db *db = NULL;
	const kw_config *cfg = h->app->cfg;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	time_t next_purge = now.tv_sec,
	       next_checkpoint = now.tv_sec + at_least_1(cfg->audit_checkpoint_interval_s);
	pthread_mutex_lock(&h->lock);
	while (!h->stop) {
		pthread_mutex_unlock(&h->lock);
		clock_gettime(CLOCK_REALTIME, &now);
		if (now.tv_sec >= next_purge) {
			housekeep(h, &db);
			next_purge = now.tv_sec + at_least_1(cfg->housekeeping_interval_s);
		}
		/* The audit chains' progress, outside the database (audit.h). */
		if (now.tv_sec >= next_checkpoint) {
			kw_audit_checkpoints_log(false);
			next_checkpoint = now.tv_sec + at_least_1(cfg->audit_checkpoint_interval_s);
		}
		struct timespec until = {.tv_sec =
		                             next_purge < next_checkpoint ? next_purge : next_checkpoint};
		pthread_mutex_lock(&h->lock);
		while (!h->stop && pthread_cond_timedwait(&h->cond, &h->lock, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&h->lock);
	kw_db_close(db);
	return NULL;
}

kw_err kw_housekeeper_start(kw_app *app, kw_housekeeper **out)
{
	kw_housekeeper *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return KW_ERR_NOMEM;
	h->app = app;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	if (pthread_create(&h->thread, NULL, run, h) != 0) {
		pthread_cond_destroy(&h->cond);
		pthread_mutex_destroy(&h->lock);
		free(h);
		return KW_ERR_INTERNAL;
	}
	*out = h;
	return KW_OK;
}

void kw_housekeeper_stop(kw_housekeeper *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->lock);
	h->stop = true;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}
