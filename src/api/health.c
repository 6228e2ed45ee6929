/* health.c — liveness, readiness and metrics.
 *
 * /healthz answers on the I/O thread and touches nothing shared: it says
 * the process runs. /readyz runs on a worker and proves the worker's token
 * session and database connection answer now. /metrics renders counters. */
#include <stdio.h>
#include <string.h>

#include "handlers.h"
#include "keyward/app/app.h"
#include "keyward/auth/revocation.h"
#include "keyward/http/metrics.h"

kw_outcome kw_api_healthz(kw_call *call, const kw_caller *who)
{
	(void)call, (void)who;
	return kw_out_literal(200, "{\"status\":\"ok\"}");
}

kw_outcome kw_api_readyz(kw_call *call, const kw_caller *who)
{
	(void)who;
	kw_worker_res *res = call->res;
	bool hsm_ok = res->hsm != NULL && kw_hsm_session_ping(res->hsm) == KW_OK;
	bool db_ok = res->db != NULL && kw_db_ping(res->db) == KW_OK;
	/* Access tokens cannot be checked without a fresh revocation list. */
	bool rev_ok = call->app->revs == NULL || kw_revcache_ready(call->app->revs);
	/* A planted key object (kw_hsm_refused_keys): not used, but this
	 * instance must not look healthy while the token holds one. */
	bool keys_ok = kw_hsm_refused_keys(call->app->hsm, NULL, 0) == 0;
	hsm_ok = hsm_ok && keys_ok;
	if (hsm_ok && db_ok && rev_ok)
		return kw_out_literal(
		    200, "{\"status\":\"ready\",\"hsm\":\"ok\",\"database\":\"ok\",\"revocations\":\"ok\"}");
	const char *msg = !keys_ok            ? "the token holds key objects keyward did not create"
	                  : !hsm_ok && !db_ok ? "hsm and database unavailable"
	                  : !hsm_ok           ? "hsm unavailable"
	                  : !db_ok            ? "database unavailable"
	                                      : "revocation list not fresh";
	char body[320];
	snprintf(body, sizeof(body),
	         "{\"error\":\"not_ready\",\"message\":\"%s\",\"hsm\":\"%s\",\"database\":\"%s\","
	         "\"revocations\":\"%s\",\"request_id\":\"%s\"}",
	         msg,
	         hsm_ok    ? "ok"
	         : keys_ok ? "unavailable"
	                   : "refused_keys",
	         db_ok ? "ok" : "unavailable", rev_ok ? "ok" : "stale", call->req.request_id);
	return kw_out_header(kw_out_literal(503, body), "Retry-After", "5");
}

kw_outcome kw_api_metrics(kw_call *call, const kw_caller *who)
{
	(void)who;
	size_t len = 0;
	char *text = kw_api_metrics_text(call->app, &len);
	return kw_out_body(200, "text/plain; version=0.0.4", text, len);
}
