/* workers.c — what each worker of keywardd's pool holds: one HSM session,
 * one PostgreSQL connection and one audit chain (the pool's hooks).
 *
 * Each is opened when the worker starts and, after a failure, again before
 * the worker's next run; a part that cannot be opened stays NULL and the
 * pipeline answers 503 for routes that need it, so a token or database
 * outage degrades answers instead of killing threads. */
#include <stdio.h>
#include <stdlib.h>

#include "keyward/app/app.h"

static void prepare(void *ctx, kw_worker_res *res)
{
	kw_app *app = ctx;
	if (res->hsm == NULL && kw_hsm_session_open(app->hsm, &res->hsm) != KW_OK)
		res->hsm = NULL;
	/* Copies of a key that went (a retired one) die here, busy or idle. */
	kw_hsm_session_sweep(res->hsm);
	if (res->db == NULL) {
		if (kw_db_connect(app->cfg->db_conninfo, &res->db) == KW_OK)
			atomic_fetch_add(&app->db_connected, 1);
		else
			res->db = NULL;
	}
	if (res->audit == NULL) {
		char name[64];
		snprintf(name, sizeof(name), "keywardd:worker-%d", res->index);
		if (kw_audit_chain_new(app->hsm, name, &res->audit) != KW_OK)
			res->audit = NULL;
	}
}

static kw_worker_res *open_res(void *ctx, int index)
{
	kw_worker_res *res = calloc(1, sizeof(*res));
	if (res == NULL)
		return NULL;
	res->index = index;
	res->app = ctx;
	prepare(ctx, res);
	return res;
}

static void close_res(void *ctx, kw_worker_res *res)
{
	kw_app *app = ctx;
	if (res->audit)
		kw_audit_chain_free(res->audit);
	if (res->db) {
		kw_db_close(res->db);
		atomic_fetch_sub(&app->db_connected, 1);
	}
	if (res->hsm)
		kw_hsm_session_close(res->hsm);
	free(res);
}

kw_pool_hooks kw_app_pool_hooks(kw_app *app)
{
	return (kw_pool_hooks){.ctx = app, .open = open_res, .prepare = prepare, .close = close_res};
}
