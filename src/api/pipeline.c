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
	if (s->cred == KW_CRED_API_KEY) /* the key's tenant and actor */
		return kw_api_event(call, who->key.tenant_id, who->key.actor, s->action, s->target, status,
		                    context);
	kw_audit_event ev =
	    kw_api_event(call, who->claims.tid, who->actor, s->action, s->target, status, context);
	ev.user_id = who->claims.sub;
	return ev;
}

kw_err kw_api_audit_call(kw_call *call, const kw_caller *who, const char *status, const char *context)
{
	kw_audit_event ev = kw_api_call_event(call, who, status, context);
	/* A refusal's answer does not wait for its row: the writer writes it
	 * with the next group commit (and before it stops). */
	if (call->app->audit != NULL)
		return kw_audit_writer_post(call->app->audit, &ev);
	if (call->res == NULL || call->res->audit == NULL || call->res->db == NULL)
		return KW_ERR_DB_UNAVAILABLE;
	return kw_audit_write_one(call->res->audit, call->res->hsm, call->res->db, &ev);
}

/* --- carrying out an outcome ------------------------------------------- */

static void drop_body(char *body, size_t len)
{
	if (body != NULL) {
		OPENSSL_cleanse(body, len);
		free(body);
	}
}

/* What an outcome holds that is not (or no longer) to be sent. */
static void drop(kw_outcome *o)
{
	drop_body(o->body, o->len);
	o->body = NULL;
	if (o->release != NULL)
		o->release(o->hold);
	o->release = NULL;
}

typedef struct after_audit {
	kw_call *call;
	kw_outcome o;
} after_audit;

/* On the writer's thread, once the row is durable (or not). */
static void audited(void *arg, kw_err err)
{
	after_audit *a = arg;
	kw_call *call = a->call;
	if (err == KW_OK) {
		kw_respond_text(call, a->o.status, "application/json", a->o.body, a->o.len);
		a->o.body = NULL; /* the response owns it now */
	} else {
		/* Unrecorded, so unanswered: what the body holds is not handed out. */
		kw_respond_failure(call, err == KW_ERR_BUSY ? KW_ERR_DB_UNAVAILABLE : err);
	}
	drop(&a->o);
	free(a);
	kw_call_finish(call);
}

static kw_handled settle_after_audit(kw_call *call, kw_outcome o)
{
	kw_app *app = call->app;
	if (app->audit == NULL) {
		/* No group-commit writer: the worker's own chain, before the answer
		 * (statements that must share the row's transaction need the writer). */
		kw_err err =
		    o.npre > 0 || call->res == NULL || call->res->audit == NULL || call->res->db == NULL
		        ? KW_ERR_DB_UNAVAILABLE
		        : kw_audit_write_one(call->res->audit, call->res->hsm, call->res->db, &o.ev);
		if (err == KW_OK) {
			kw_respond_text(call, o.status, "application/json", o.body, o.len);
			o.body = NULL;
		} else {
			kw_respond_failure(call, err);
		}
		drop(&o);
		return KW_CALL_ANSWERED;
	}
	after_audit *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		drop(&o);
		kw_respond_failure(call, KW_ERR_NOMEM);
		return KW_CALL_ANSWERED;
	}
	*a = (after_audit){.call = call, .o = o};
	kw_call_detach(call);
	kw_err err = kw_audit_writer_submit(app->audit, &a->o.ev, a->o.pre, a->o.npre, audited, a);
	if (err != KW_OK)
		audited(a, err); /* not queued: answer as the writer would have */
	return KW_CALL_KEPT;
}

kw_handled kw_api_settle(kw_call *call, const kw_caller *who, kw_outcome o)
{
	if (o.kind == KW_OUT_DEFER)
		kw_misuse("a handler deferred on a worker");
	if (o.kind == KW_OUT_AFTER_AUDIT)
		return settle_after_audit(call, o);
	if (o.failed_auth)
		kw_auth_failed(call);
	if (o.refusal.action != NULL) {
		kw_audit_refusal(call, o.refusal.tenant_id[0] ? o.refusal.tenant_id : NULL,
		                 o.refusal.actor[0] ? o.refusal.actor : NULL, o.refusal.action,
		                 o.refusal.status, o.refusal.code);
	} else if (o.kind == KW_OUT_ERROR && spec_of(call)->audit == KW_AUDIT_EVERY_CALL) {
		char st[64];
		snprintf(st, sizeof(st), "%d %s", o.status, o.code);
		kw_err err = kw_api_audit_call(call, who, st, NULL);
		if (err != KW_OK)
			kw_warn("audit: refusal of request %s not recorded: %s", call->req.request_id,
			        kw_err_str(err));
	}
	if (o.kind == KW_OUT_ERROR)
		kw_respond_error(call, o.status, o.code, o.message);
	else
		kw_respond_text(call, o.status, o.content_type ? o.content_type : "application/json", o.body,
		                o.len);
	if (o.header != NULL)
		kw_respond_header(call, o.header, o.header_value);
	else if (o.kind == KW_OUT_ERROR && o.status == 503)
		kw_respond_header(call, "Retry-After", "1");
	return KW_CALL_ANSWERED;
}

/* --- the phases --------------------------------------------------------- */

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
		if (kw_auth_has_signature(&call->req)) /* a signature is a credential of its own (5.6) */
			return kw_auth_signature(call, s->scopes, &who->key, &who->key_rate_limit);
		return kw_auth_api_key(call, s->scopes, &who->key, &who->key_rate_limit);
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
 * scopes or permission that are checked once they are there. A refusal
 * is an outcome like a handler's. */
static bool check_resources_and_rights(kw_call *call, const kw_api_spec *s, const kw_caller *who,
                                       kw_outcome *refusal)
{
	if ((s->needs & KW_NEED_DB) && (call->res->db == NULL || kw_db_ensure(call->res->db) != KW_OK))
		*refusal = kw_out_failure(KW_ERR_DB_UNAVAILABLE);
	else if ((s->needs & KW_NEED_HSM) && call->res->hsm == NULL)
		*refusal = kw_out_failure(KW_ERR_HSM_UNAVAILABLE);
	else if (s->any_scope != 0 && (who->key.scopes & s->any_scope) == 0)
		*refusal = kw_out_refused(
		    kw_out_error(403, "insufficient_scope",
		                 s->scope_message ? s->scope_message
		                                  : "the API key lacks a scope this route needs"),
		    403, "insufficient_scope", who->key.tenant_id, who->key.actor, s->action);
	else if (s->permission != NULL && !kw_access_permits(&who->claims, s->permission))
		*refusal =
		    kw_out_error(403, "insufficient_permission", "the access token's role may not do this");
	else
		return true;
	return false;
}

/* Runs the phases for call: its outcome when it is refused or passes to
 * the handler; *passed tells which (and who is the caller then). Returns
 * false when the call is answered already, or moved to a worker. */
static bool admit(kw_call *call, kw_caller *who, bool *passed, kw_outcome *refusal)
{
	const kw_api_spec *s = spec_of(call);
	memset(who, 0, sizeof(*who));
	*passed = false;
	if (!check_caller(call, s, who))
		return false;
	if (call->res == NULL) {
		/* On the I/O thread resources do not apply; a missing scope is
		 * refused (and audited) on a worker. */
		if (s->any_scope != 0 && (who->key.scopes & s->any_scope) == 0) {
			call->defer = call->def->fn;
			return false;
		}
		*passed = true;
		return true;
	}
	*passed = check_resources_and_rights(call, s, who, refusal);
	return true;
}

/* An I/O-thread route's outcome: a handler that cannot finish there, or an
 * API key whose own budget is spent, moves the call to a worker (where
 * the pipeline runs again and refuses or answers it). */
static kw_handled settle_io(kw_call *call, const kw_api_spec *s, const kw_caller *who, kw_outcome o)
{
	if (o.kind != KW_OUT_DEFER &&
	    (s->cred != KW_CRED_API_KEY || kw_auth_api_key_spend(call, &who->key, who->key_rate_limit)))
		return kw_api_settle(call, who, o);
	drop(&o);
	call->defer = call->def->fn;
	return KW_CALL_ANSWERED;
}

kw_handled kw_api_pipeline(kw_call *call)
{
	kw_caller who;
	kw_outcome refusal;
	bool passed;
	kw_handled h = KW_CALL_ANSWERED;
	if (admit(call, &who, &passed, &refusal)) {
		bool parked = false;
		kw_flight *f =
		    passed && kw_coalesce_wanted(call) ? kw_coalesce_enter(call, &who, &parked) : NULL;
		if (parked) {
			OPENSSL_cleanse(&who, sizeof(who));
			return KW_CALL_KEPT; /* its leader's worker settles it */
		}
		kw_outcome o = passed ? spec_of(call)->handler(call, &who) : refusal;
		kw_coalesce_finish(f, call, &o);
		h = call->res == NULL ? settle_io(call, spec_of(call), &who, o)
		                      : kw_api_settle(call, &who, o);
	}
	OPENSSL_cleanse(&who, sizeof(who));
	return h;
}

/* --- batches ------------------------------------------------------------ */

struct kw_api_batch {
	kw_call **calls;
	const kw_caller *const *who;
	kw_handled *handled[KW_POOL_BATCH_MAX];
	kw_flight *flight[KW_POOL_BATCH_MAX]; /* the coalesced run each call leads, or NULL */
};

/* A call of a batch is handed back as soon as it is answered, rather
 * than after the rest of its batch. */
static void hand_back(kw_call *call, kw_handled h, kw_handled *handled)
{
	if (h == KW_CALL_ANSWERED) {
		kw_call_detach(call);
		kw_call_finish(call);
	}
	*handled = KW_CALL_KEPT;
}

void kw_api_batch_settle(kw_api_batch *b, size_t i, kw_outcome o)
{
	kw_coalesce_finish(b->flight[i], b->calls[i], &o);
	b->flight[i] = NULL;
	hand_back(b->calls[i], kw_api_settle(b->calls[i], b->who[i], o), b->handled[i]);
}

void kw_api_pipeline_batch(kw_call **calls, size_t n, kw_handled *handled)
{
	kw_caller who[KW_POOL_BATCH_MAX];
	const kw_caller *whop[KW_POOL_BATCH_MAX];
	kw_call *pass[KW_POOL_BATCH_MAX];
	kw_api_batch b = {.calls = pass, .who = whop};
	size_t m = 0;
	if (n > KW_POOL_BATCH_MAX)
		kw_misuse("kw_api_pipeline_batch: more calls than KW_POOL_BATCH_MAX");
	for (size_t i = 0; i < n; i++) {
		kw_outcome refusal;
		bool passed;
		handled[i] = KW_CALL_ANSWERED;
		if (!admit(calls[i], &who[m], &passed, &refusal)) {
			hand_back(calls[i], KW_CALL_ANSWERED, &handled[i]);
		} else if (!passed) {
			hand_back(calls[i], kw_api_settle(calls[i], &who[m], refusal), &handled[i]);
		} else {
			bool parked = false;
			kw_flight *f = kw_coalesce_wanted(calls[i])
			                   ? kw_coalesce_enter(calls[i], &who[m], &parked)
			                   : NULL;
			if (parked) {
				handled[i] = KW_CALL_KEPT; /* its leader's worker settles it */
				continue;
			}
			pass[m] = calls[i];
			whop[m] = &who[m];
			b.handled[m] = &handled[i];
			b.flight[m] = f;
			m++;
		}
	}
	if (m > 0)
		spec_of(pass[0])->batch(pass, whop, m, &b);
	OPENSSL_cleanse(who, sizeof(who));
}
