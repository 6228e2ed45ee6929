/* pipeline.c — the phases every request runs, from its route's row.
 *
 * The transport calls kw_api_pipeline (or kw_api_pipeline_batch) for every
 * route; the row's kw_api_spec says which credential, budgets, scopes or
 * permission and resources apply, and how the route is audited. The
 * phases and their order are listed in handlers.h. A refusal is answered
 * and audited here (the guard functions of guard.c write the credential
 * refusals); the handler runs only for a caller that passed every phase,
 * and receives that caller. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "keyward/app/app.h"
#include "keyward/core/log.h"

static const kw_api_spec *spec_of(const kw_call *call)
{
	return call->def->spec;
}

const char *kw_api_action(const kw_call *call)
{
	return spec_of(call)->action;
}

kw_audit_event kw_api_call_event(kw_call *call, const kw_caller *who, const char *status, const char *context)
{
	const kw_api_spec *s = spec_of(call);
	kw_audit_event ev =
	    kw_api_event(call, who->claims.tid, who->actor, s->action, s->target, status, context);
	ev.user_id = who->claims.sub;
	return ev;
}

kw_err kw_api_audit_call(kw_call *call, const kw_caller *who, const char *status, const char *context)
{
	kw_audit_event ev = kw_api_call_event(call, who, status, context);
	if (call->app->audit != NULL)
		return kw_audit_writer_log(call->app->audit, &ev);
	if (call->res == NULL || call->res->audit == NULL || call->res->db == NULL)
		return KW_ERR_DB_UNAVAILABLE;
	return kw_audit_write_one(call->res->audit, call->res->hsm, call->res->db, &ev);
}

void kw_api_refuse(kw_call *call, const kw_caller *who, int status, const char *code, const char *msg)
{
	if (spec_of(call)->audit == KW_AUDIT_EVERY_CALL) {
		char st[64];
		snprintf(st, sizeof(st), "%d %s", status, code);
		kw_err err = kw_api_audit_call(call, who, st, NULL);
		if (err != KW_OK)
			kw_warn("audit: refusal of request %s not recorded: %s", call->req.request_id,
			        kw_err_str(err));
	}
	kw_respond_error(call, status, code, msg);
	if (status == 503)
		kw_respond_header(call, "Retry-After", "1");
}

void kw_api_deny(kw_call *call, int status, const char *code, const char *msg, const char *tenant_id,
                 const char *actor, const char *action)
{
	if (status == 401)
		kw_auth_failed(call);
	if (status >= 400)
		kw_respond_error(call, status, code, msg);
	kw_audit_refusal(call, tenant_id, actor, action, status, code);
}

/* --- answers that wait for their audit row -------------------------------- */

typedef struct after_audit {
	kw_call *call;
	int status;
	char *body;
	size_t len;
	void (*release)(void *hold);
	void *hold;
} after_audit;

static void drop_body(char *body, size_t len)
{
	if (body != NULL) {
		OPENSSL_cleanse(body, len);
		free(body);
	}
}

/* On the writer's thread, once the row is durable (or not). */
static void audited(void *arg, kw_err err)
{
	after_audit *a = arg;
	kw_call *call = a->call;
	if (err == KW_OK) {
		kw_respond_text(call, a->status, "application/json", a->body, a->len);
		a->body = NULL; /* the response owns it now */
	} else {
		/* Unrecorded, so unanswered: what the body holds is not handed out. */
		kw_respond_failure(call, err == KW_ERR_BUSY ? KW_ERR_DB_UNAVAILABLE : err);
	}
	drop_body(a->body, a->len);
	if (a->release != NULL)
		a->release(a->hold);
	free(a);
	kw_call_finish(call);
}

void kw_api_answer_after_audit(kw_call *call, int status, char *body, size_t len, const kw_audit_event *ev,
                               const kw_db_stmt *pre, size_t npre, void (*release)(void *hold), void *hold)
{
	kw_app *app = call->app;
	if (app->audit == NULL) {
		/* No group-commit writer: the worker's own chain, before the answer
		 * (statements that must share the row's transaction need the writer). */
		kw_err err =
		    npre > 0 || call->res == NULL || call->res->audit == NULL || call->res->db == NULL
		        ? KW_ERR_DB_UNAVAILABLE
		        : kw_audit_write_one(call->res->audit, call->res->hsm, call->res->db, ev);
		if (err == KW_OK) {
			kw_respond_text(call, status, "application/json", body, len);
			body = NULL;
		} else {
			kw_respond_failure(call, err);
		}
		drop_body(body, len);
		if (release != NULL)
			release(hold);
		return;
	}
	after_audit *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		drop_body(body, len);
		if (release != NULL)
			release(hold);
		kw_respond_failure(call, KW_ERR_NOMEM);
		return;
	}
	*a = (after_audit){
	    .call = call, .status = status, .body = body, .len = len, .release = release, .hold = hold};
	kw_call_detach(call);
	kw_err err = kw_audit_writer_submit(app->audit, ev, pre, npre, audited, a);
	if (err != KW_OK)
		audited(a, err); /* not queued: answer as the writer would have */
}

/* Phases 3-6: budgets, credential, scopes. False when the call is answered
 * already, or moved to a worker (call->defer). */
static bool check_caller(kw_call *call, const kw_api_spec *s, kw_caller *who)
{
	switch (s->cred) {
	case KW_CRED_NONE:
		return true;
	case KW_CRED_PUBLIC:
		return kw_auth_ip_budget(call);
	case KW_CRED_IN_BODY:
		return kw_auth_ip_budget(call) && kw_auth_fail_budget(call);
	case KW_CRED_API_KEY:
		return kw_auth_api_key(call, s->scopes, &who->key);
	case KW_CRED_ACCESS_TOKEN:
		if (!kw_auth_access_token(call, s->allow_revoked, &who->claims))
			return false;
		snprintf(who->actor, sizeof(who->actor), "user:%s", who->claims.sub);
		return true;
	case KW_CRED_SIGNATURE:
		break;
	}
	kw_misuse("a route declares a credential kind the pipeline does not check yet");
}

/* Phases 6-7 after the credential: the worker's resources, then the
 * scopes or permission that are checked once they are there. */
static bool check_resources_and_rights(kw_call *call, const kw_api_spec *s, const kw_caller *who)
{
	if ((s->needs & KW_NEED_DB) && (call->res->db == NULL || kw_db_ensure(call->res->db) != KW_OK)) {
		kw_api_refuse(call, who, 503, "db_unavailable", "the database is unavailable");
		return false;
	}
	if ((s->needs & KW_NEED_HSM) && call->res->hsm == NULL) {
		kw_api_refuse(call, who, 503, "hsm_unavailable", "the key store is unavailable");
		return false;
	}
	if (s->any_scope != 0 && (who->key.scopes & s->any_scope) == 0) {
		kw_respond_error(call, 403, "insufficient_scope",
		                 s->scope_message ? s->scope_message
		                                  : "the API key lacks a scope this route needs");
		kw_audit_refusal(call, who->key.tenant_id, who->key.actor, s->action, 403,
		                 "insufficient_scope");
		return false;
	}
	if (s->permission != NULL && !kw_access_permits(&who->claims, s->permission)) {
		kw_api_refuse(call, who, 403, "insufficient_permission",
		              "the access token's role may not do this");
		return false;
	}
	return true;
}

static bool admit(kw_call *call, kw_caller *who)
{
	const kw_api_spec *s = spec_of(call);
	memset(who, 0, sizeof(*who));
	if (!check_caller(call, s, who))
		return false;
	if (call->res == NULL) /* on the I/O thread: nothing below applies there */
		return true;
	return check_resources_and_rights(call, s, who);
}

void kw_api_pipeline(kw_call *call)
{
	kw_caller who;
	if (admit(call, &who))
		spec_of(call)->handler(call, &who);
	OPENSSL_cleanse(&who, sizeof(who));
}

/* A call of a batch that is answered already: handed back at once rather
 * than after the rest of its batch. */
static void hand_back(kw_call *call, bool *detached)
{
	if (!kw_call_detached) {
		kw_call_detach(call);
		kw_call_finish(call);
	}
	*detached = true;
}

void kw_api_pipeline_batch(kw_call **calls, size_t n, bool *detached)
{
	kw_caller who[KW_POOL_BATCH_MAX];
	const kw_caller *whop[KW_POOL_BATCH_MAX];
	kw_call *pass[KW_POOL_BATCH_MAX];
	bool *pass_detached[KW_POOL_BATCH_MAX], sub_detached[KW_POOL_BATCH_MAX];
	size_t m = 0;
	if (n > KW_POOL_BATCH_MAX)
		kw_misuse("kw_api_pipeline_batch: more calls than KW_POOL_BATCH_MAX");
	for (size_t i = 0; i < n; i++) {
		kw_call_detached = false;
		detached[i] = false;
		if (!admit(calls[i], &who[m])) {
			hand_back(calls[i], &detached[i]);
			continue;
		}
		pass[m] = calls[i];
		whop[m] = &who[m];
		pass_detached[m] = &detached[i];
		sub_detached[m] = false;
		m++;
	}
	if (m > 0)
		spec_of(pass[0])->batch(pass, whop, m, sub_detached);
	for (size_t k = 0; k < m; k++)
		*pass_detached[k] = sub_detached[k];
	OPENSSL_cleanse(who, sizeof(who));
}
