/* handlers.h — the handlers of the route table in routes.c, and what they share. */
#ifndef KEYWARD_API_HANDLERS_H
#define KEYWARD_API_HANDLERS_H

#include <jansson.h>
#include <stdbool.h>

#include "keyward/api/guard.h"
#include "keyward/app/app.h"
#include "keyward/auth/tokens.h"
#include "keyward/http/http.h"

/* --- the pipeline (pipeline.c) -------------------------------------------
 *
 * Every request runs the same phases, in this order; the route's row in
 * routes.c says what each phase does for it, and the handler runs last:
 *   1. limits on size            (the transport: 431, 413)
 *   2. client address            (the transport: trusted proxies only)
 *   3. the address's budget      (spent once, even when an I/O-thread
 *                                 route moves to a worker)
 *   4. the credential            (none, API key, access token, or one in
 *                                 the body; 401, audited)
 *   5. the credential's budgets  (the API key's own; failed-auth; 429)
 *   6. scopes / permission       (403, audited)
 *   7. resources                 (the worker's database and token session; 503)
 *   8. the handler               (with the caller the pipeline found)
 * A refusal in phases 3-7 is answered and audited by the pipeline; the
 * handler never sees the call. Routes that audit every call also get a row
 * for refusals in phases 6-7 under their own action (kw_api_refuse). */

/* Who may call: what the credential phase looks for. */
typedef enum kw_credential {
	KW_CRED_NONE,         /* public, no budget: health, metrics, JWKS */
	KW_CRED_PUBLIC,       /* public, under the client address's budget */
	KW_CRED_IN_BODY,      /* the credential is in the body (a refresh token, a wallet
	                       * signature): the address's budget and its failed-auth budget */
	KW_CRED_API_KEY,      /* Authorization: Bearer kw_... */
	KW_CRED_ACCESS_TOKEN, /* Authorization: Bearer <JWT> */
	KW_CRED_SIGNATURE,    /* HMAC request signature (DESIGN 5.6): the slot; no route yet */
} kw_credential;

/* What the pipeline writes to the audit trail for the route. */
typedef enum kw_audit_mode {
	KW_AUDIT_NONE,       /* nothing (health, metrics, JWKS) */
	KW_AUDIT_REFUSALS,   /* refused credentials, budgets and scopes; the handler
	                      * audits its own changes in their transaction */
	KW_AUDIT_EVERY_CALL, /* every call, refusals included, under the route's action;
	                      * an answer is sent only once its row is durable */
} kw_audit_mode;

/* Resources the handler needs from its worker (KW_NEED_* bits). */
#define KW_NEED_DB  1u
#define KW_NEED_HSM 2u

/* Who is calling, as the credential phase found it. */
typedef struct kw_caller {
	kw_principal key;                   /* KW_CRED_API_KEY */
	kw_access_claims claims;            /* KW_CRED_ACCESS_TOKEN */
	char actor[5 + KW_SUBJECT_MAX + 1]; /* access token: "user:<sub>" */
} kw_caller;

typedef void (*kw_api_fn)(kw_call *call, const kw_caller *who); /* a kw_api_handler */
typedef void (*kw_api_batch_fn)(kw_call **calls, const kw_caller *const *who, size_t n, bool *detached);

/* One route's declaration (the transport row's spec). */
typedef struct kw_api_spec {
	kw_credential cred;
	uint32_t scopes;        /* API key: every one of these (kw_scope bits) */
	uint32_t any_scope;     /* API key: at least one of these, checked after resources */
	const char *permission; /* access token: this permission */
	bool allow_revoked;     /* access token: a revoked one still passes (logout) */
	unsigned needs;         /* KW_NEED_* */
	kw_audit_mode audit;
	const char *action;        /* the route's own audit action (every-call and any_scope refusals) */
	const char *target;        /* ... and target */
	const char *scope_message; /* the message of an any_scope refusal */
	bool coalesce;             /* identical concurrent GETs may share one run (DESIGN 5.8; later) */
	kw_api_fn handler;
	kw_api_batch_fn batch; /* optional: runs calls queued together (worker routes) */
} kw_api_spec;

/* The transport's entry points for every row (fn and batch). */
void kw_api_pipeline(kw_call *call);
void kw_api_pipeline_batch(kw_call **calls, size_t n, bool *detached);
/* A refusal after the pipeline let the call through: the JSON error (and
 * Retry-After on a 503) and, for a route that audits every call, its row
 * under the route's action. */
void kw_api_refuse(kw_call *call, const kw_caller *who, int status, const char *code, const char *msg);
/* A request the handler turns away after the pipeline let it through
 * (an unknown refresh token, a bad signature, a key of another tenant):
 * spends a failed authentication for a 401, answers the JSON error (for a
 * status >= 400; a lower one is the handler's to answer), and writes the
 * refusal's audit row (status and code) under action. */
void kw_api_deny(kw_call *call, int status, const char *code, const char *msg, const char *tenant_id,
                 const char *actor, const char *action);
/* The answer-after-audit outcome: answers status with body (JSON,
 * malloc'd, handed over; wiped however it ends) only once ev — and pre,
 * statements committed in the same transaction — is durable in the audit
 * trail (the group-commit writer; the worker's own chain when there is
 * none and pre is empty), and a 503 instead when it cannot be recorded.
 * ev and pre may point into hold, which release(hold) frees once the row
 * is settled. Detaches the call: the caller touches it no more. */
void kw_api_answer_after_audit(kw_call *call, int status, char *body, size_t len, const kw_audit_event *ev,
                               const kw_db_stmt *pre, size_t npre, void (*release)(void *hold), void *hold);
/* The route's audit row for a call (every-call routes), written before the
 * answer: through the group-commit writer, or the worker's own chain. */
KW_MUST_CHECK kw_err kw_api_audit_call(kw_call *call, const kw_caller *who, const char *status,
                                       const char *context);
/* The route's audit action (its row's .action). */
const char *kw_api_action(const kw_call *call);
/* The same row as an event (strings borrowed from call and who). */
kw_audit_event kw_api_call_event(kw_call *call, const kw_caller *who, const char *status,
                                 const char *context);

/* common.c */
/* Serialises o (consumed; NULL = out of memory) as the answer. */
void kw_api_respond_object(kw_call *call, int status, json_t *o);
/* An audit event for this request (address, User-Agent, request id);
 * strings are borrowed. */
kw_audit_event kw_api_event(const kw_call *call, const char *tenant_id, const char *actor, const char *action,
                            const char *target, const char *status, const char *context);
/* Appends an audit row ("ok") inside the open transaction, unless *err is
 * already set; failure goes to *err. */
void kw_api_audit_in_tx(kw_call *call, const char *tenant_id, const char *actor, const char *action,
                        const char *target, const char *context, kw_err *err);
void kw_api_audit_status_in_tx(kw_call *call, const char *tenant_id, const char *actor, const char *action,
                               const char *target, const char *status, const char *context, kw_err *err);
/* Commits (err == KW_OK) or rolls back, moving the audit chain's head only
 * if the commit held. Returns the final error. */
kw_err kw_api_finish_tx(kw_call *call, kw_err err);
/* work(db, arg) in a transaction scoped to tenant_id, ended (and the
 * worker's audit chain told) by kw_api_finish_tx. */
KW_MUST_CHECK kw_err kw_api_in_tx(kw_call *call, const char *tenant_id, kw_err (*work)(kw_db *db, void *arg),
                                  void *arg);
/* The body as a JSON object (an empty body is {}); NULL if it is not one. */
json_t *kw_api_body_object(kw_call *call);

/* metrics.c: every metric as Prometheus text (malloc'd), or NULL. */
char *kw_api_metrics_text(kw_app *app, size_t *len);

/* The handlers of routes.c, one type for all (kw_api_handler), by file. */
typedef void kw_api_handler(kw_call *call, const kw_caller *who);
kw_api_handler kw_api_healthz, kw_api_readyz, kw_api_metrics;                           /* health.c */
kw_api_handler kw_api_keys_create, kw_api_keys_list, kw_api_keys_revoke;                /* api_keys.c */
kw_api_handler kw_api_jwks, kw_api_auth_login, kw_api_auth_refresh, kw_api_auth_logout, /* auth_tokens.c */
    kw_api_auth_revoke, kw_api_auth_revoke_all, kw_api_auth_sessions, kw_api_auth_introspect,
    kw_api_auth_whoami;
kw_api_handler kw_api_vault_init, kw_api_vault_key, kw_api_vault_rotate; /* vault.c */
void kw_api_vault_key_batch(kw_call **calls, const kw_caller *const *who, size_t n, bool *detached);
kw_api_handler kw_api_wallet_nonce, kw_api_wallet_login; /* wallet_login.c */
/* shared by both: a new family, its refresh token and an access token,
 * answered as the login response. With in_tx the caller's transaction
 * (scoped to tenant_id) is used and finished here. */
void kw_api_issue_session(kw_call *call, const char *tenant_id, const char *subject, const char *role_name,
                          const char *method, const char *actor, bool in_tx);

#endif
