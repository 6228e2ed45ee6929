/* metrics.c — the /metrics text: the transport's request counters, then
 * the token, the worker pool, the database, the audit writer and
 * authentication. */
#include <stdatomic.h>

#include "handlers.h"
#include "keyward/api/guard.h"
#include "keyward/app/app.h"
#include "keyward/auth/revocation.h"
#include "keyward/core/strbuf.h"
#include "keyward/http/metrics.h"

static void render_hsm(kw_strbuf *b, kw_app *app)
{
	kw_hsm_stats st;
	kw_hsm_stats_get(app->hsm, &st);
	kw_strbuf_printf(b, "# HELP keyward_hsm_operations_total PKCS#11 operations, by operation.\n"
	                    "# TYPE keyward_hsm_operations_total counter\n");
	for (int op = 0; op < KW_HSM_OP_COUNT; op++)
		kw_strbuf_printf(b, "keyward_hsm_operations_total{op=\"%s\"} %llu\n",
		                 kw_hsm_op_name((kw_hsm_op)op), (unsigned long long)st.count[op]);
	kw_strbuf_printf(b, "# HELP keyward_hsm_operation_errors_total PKCS#11 operations that failed.\n"
	                    "# TYPE keyward_hsm_operation_errors_total counter\n");
	for (int op = 0; op < KW_HSM_OP_COUNT; op++)
		kw_strbuf_printf(b, "keyward_hsm_operation_errors_total{op=\"%s\"} %llu\n",
		                 kw_hsm_op_name((kw_hsm_op)op), (unsigned long long)st.errors[op]);
	kw_strbuf_printf(b, "# HELP keyward_hsm_operation_seconds_total Time spent in PKCS#11 operations.\n"
	                    "# TYPE keyward_hsm_operation_seconds_total counter\n");
	for (int op = 0; op < KW_HSM_OP_COUNT; op++)
		kw_strbuf_printf(b, "keyward_hsm_operation_seconds_total{op=\"%s\"} %.6f\n",
		                 kw_hsm_op_name((kw_hsm_op)op), (double)st.usec[op] / 1e6);
	kw_strbuf_printf(
	    b,
	    "# HELP keyward_hsm_sessions_revived_total Sessions reopened after the token dropped them.\n"
	    "# TYPE keyward_hsm_sessions_revived_total counter\nkeyward_hsm_sessions_revived_total %llu\n",
	    (unsigned long long)st.revived_sessions);
}

char *kw_api_metrics_text(kw_app *app, size_t *len)
{
	kw_strbuf b;
	kw_strbuf_init(&b, 16384);
	kw_metrics_render_http(&b);
	if (app->hsm)
		render_hsm(&b, app);
	if (app->pool) {
		kw_strbuf_printf(
		    &b,
		    "# HELP keyward_worker_queue_depth Calls waiting for a worker.\n"
		    "# TYPE keyward_worker_queue_depth gauge\nkeyward_worker_queue_depth %d\n"
		    "# HELP keyward_workers Worker threads.\n# TYPE keyward_workers gauge\nkeyward_workers "
		    "%d\n"
		    "# HELP keyward_worker_batched_calls_total Calls run in a batch with others of their "
		    "route.\n# TYPE keyward_worker_batched_calls_total counter\n"
		    "keyward_worker_batched_calls_total %llu\n",
		    kw_pool_queue_depth(app->pool), kw_pool_workers(app->pool),
		    kw_pool_batched_calls(app->pool));
	}
	kw_strbuf_printf(&b,
	                 "# HELP keyward_db_connections Open PostgreSQL connections held by workers.\n"
	                 "# TYPE keyward_db_connections gauge\nkeyward_db_connections %d\n"
	                 "# HELP keyward_db_statements_total SQL statements sent.\n"
	                 "# TYPE keyward_db_statements_total counter\nkeyward_db_statements_total %llu\n",
	                 atomic_load(&app->db_connected), kw_db_statements());
	if (app->audit) {
		unsigned long long rows, commits;
		kw_audit_writer_stats(app->audit, &rows, &commits);
		kw_strbuf_printf(
		    &b,
		    "# HELP keyward_audit_group_rows_total Audit rows written by the group-commit writer.\n"
		    "# TYPE keyward_audit_group_rows_total counter\nkeyward_audit_group_rows_total %llu\n"
		    "# HELP keyward_audit_group_commits_total Transactions the group-commit writer "
		    "committed.\n"
		    "# TYPE keyward_audit_group_commits_total counter\nkeyward_audit_group_commits_total "
		    "%llu\n"
		    "# HELP keyward_audit_pending Audit rows queued or being written, not yet settled.\n"
		    "# TYPE keyward_audit_pending gauge\nkeyward_audit_pending %llu\n",
		    rows, commits, kw_audit_writer_pending(app->audit));
	}
	kw_auth_stats as;
	kw_auth_stats_get(&as);
	kw_strbuf_printf(
	    &b,
	    "# HELP keyward_auth_key_lookups_total API keys looked up in the database (cache misses).\n"
	    "# TYPE keyward_auth_key_lookups_total counter\nkeyward_auth_key_lookups_total %llu\n"
	    "# HELP keyward_auth_cache_hits_total API keys accepted from the verified-key cache.\n"
	    "# TYPE keyward_auth_cache_hits_total counter\nkeyward_auth_cache_hits_total %llu\n"
	    "# HELP keyward_auth_refused_total Requests refused by authentication, by status.\n"
	    "# TYPE keyward_auth_refused_total counter\n"
	    "keyward_auth_refused_total{status=\"401\"} %llu\nkeyward_auth_refused_total{status=\"403\"} "
	    "%llu\n"
	    "# HELP keyward_ratelimit_rejections_total Requests refused with 429.\n"
	    "# TYPE keyward_ratelimit_rejections_total counter\nkeyward_ratelimit_rejections_total %llu\n",
	    as.key_lookups, as.cache_hits, as.refused_401, as.refused_403, as.refused_429);
	if (app->revs) {
		kw_revcache_stats rs;
		kw_revcache_stats_get(app->revs, &rs);
		kw_strbuf_printf(
		    &b,
		    "# HELP keyward_revocations_notifications_total Revocation notifications, by result "
		    "(applied: the row it named was read; ignored: it named no row).\n"
		    "# TYPE keyward_revocations_notifications_total counter\n"
		    "keyward_revocations_notifications_total{result=\"applied\"} %llu\n"
		    "keyward_revocations_notifications_total{result=\"ignored\"} %llu\n"
		    "# HELP keyward_revocations_loads_total Full loads of the revocation list.\n"
		    "# TYPE keyward_revocations_loads_total counter\nkeyward_revocations_loads_total %llu\n",
		    (unsigned long long)rs.notifications, (unsigned long long)rs.ignored,
		    (unsigned long long)rs.loads);
	}
	kw_api_transit_metrics(&b, app);
	kw_coalesce_metrics(&b);
	if (app->server)
		kw_strbuf_printf(&b,
		                 "# HELP keyward_http_in_flight Requests being handled.\n"
		                 "# TYPE keyward_http_in_flight gauge\nkeyward_http_in_flight %ld\n",
		                 kw_server_in_flight(app->server));
	return kw_strbuf_take(&b, len);
}
