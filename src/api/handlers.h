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
 *   8. the handler               (with the caller the pipeline found;
 *                                 it returns an outcome)
 *   9. audit and reply           (the outcome, carried out by kw_api_settle)
 * A refusal in phases 3-7 is answered and audited by the pipeline; the
 * handler never sees the call. Routes that audit every call also get a row
 * for refusals in phases 6-7 under their own action. */

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
	int key_rate_limit;                 /* ... its own limit per minute (0: the default) */
	kw_access_claims claims;            /* KW_CRED_ACCESS_TOKEN */
	char actor[5 + KW_SUBJECT_MAX + 1]; /* access token: "user:<sub>" */
} kw_caller;

/* --- what a handler returns (outcome.c) -----------------------------------
 *
 * A handler never writes the reply or a refusal's audit row: it returns an
 * outcome, and the pipeline (kw_api_settle) turns it into the reply, the
 * audit rows and the budgets it implies. Three kinds:
 *   answer       status and body;
 *   error        status and a JSON error {error, message, request_id}; a
 *                route that audits every call gets its row for it ("<status>
 *                <code>" under the route's action), a 503 gets Retry-After: 1
 *                unless the outcome names its own;
 *   after audit  status and body, sent only once the audit event (and the
 *                statements committed with it) is durable; a 503 instead
 *                when it cannot be recorded. The call is then kept by the
 *                group-commit writer, which answers it on its thread.
 * An answer or error may add one header, spend one of the address's failed
 * authentications, and write one refusal row (kw_out_deny, kw_out_refused).
 * Strings are copied, except code, message and header names: literals. */
typedef enum kw_outcome_kind {
	KW_OUT_ANSWER,
	KW_OUT_ERROR,
	KW_OUT_AFTER_AUDIT,
	KW_OUT_DEFER
} kw_outcome_kind;

typedef struct kw_outcome {
	kw_outcome_kind kind;
	int status;
	char *body; /* answer, after audit: malloc'd, handed over; wiped when sent or dropped */
	size_t len;
	const char *content_type; /* answer: NULL = application/json */
	const char *code;         /* error */
	const char *message;      /* error */
	const char *header;       /* one more header (its value below), or NULL */
	char header_value[64];
	bool failed_auth; /* spend one of the address's failed authentications */
	struct {
		const char *action; /* NULL = no refusal row */
		int status;
		const char *code;
		char tenant_id[37];                 /* "" = none */
		char actor[5 + KW_SUBJECT_MAX + 1]; /* "" = anonymous */
	} refusal;
	/* after audit: the event (strings may point into hold), statements for
	 * the same transaction, and what frees hold once the row is settled */
	kw_audit_event ev;
	const kw_db_stmt *pre;
	size_t npre;
	void (*release)(void *hold);
	void *hold;
} kw_outcome;

/* An answer: o is consumed (NULL = out of memory: a 500). */
kw_outcome kw_out_json(int status, json_t *o);
/* An answer whose JSON body is copied from text. */
kw_outcome kw_out_literal(int status, const char *text);
/* An answer: body (malloc'd, NULL = out of memory) is handed over;
 * content_type NULL = JSON. */
kw_outcome kw_out_body(int status, const char *content_type, char *body, size_t len);
/* A JSON error. */
kw_outcome kw_out_error(int status, const char *code, const char *message);
/* From a handler of an I/O-thread route: it cannot finish there (it needs
 * the token or the database); the whole pipeline runs again on a worker.
 * Nothing of the call's answer may have been written. */
kw_outcome kw_out_defer(void);
/* A failure of a resource: 503 db_unavailable / hsm_unavailable (Retry-After
 * 1) for an unavailable database or token, 500 internal otherwise. */
kw_outcome kw_out_failure(kw_err err);
/* A request turned away after the pipeline let it through (an unknown
 * refresh token, a bad signature, a key of another tenant): the error, a
 * failed authentication spent for a 401, and a refusal row (status and
 * code) under action for tenant_id and actor (either may be NULL). */
kw_outcome kw_out_deny(int status, const char *code, const char *message, const char *tenant_id,
                       const char *actor, const char *action);
/* Adds a refusal row (status and code, not necessarily the answer's) to o. */
kw_outcome kw_out_refused(kw_outcome o, int status, const char *code, const char *tenant_id,
                          const char *actor, const char *action);
/* Adds one header to o (value copied, at most 63 bytes). */
kw_outcome kw_out_header(kw_outcome o, const char *name, const char *value);
/* The answer-after-audit outcome: body (JSON, malloc'd, handed over; NULL
 * = out of memory) is answered only once ev and pre are durable; ev and
 * pre may point into hold, which release(hold) frees once the row is
 * settled (also when the outcome is never sent). With no group-commit
 * writer the worker's own chain records ev (pre must then be empty). */
kw_outcome kw_out_after_audit(int status, char *body, size_t len, const kw_audit_event *ev,
                              const kw_db_stmt *pre, size_t npre, void (*release)(void *hold), void *hold);

typedef kw_outcome (*kw_api_fn)(kw_call *call, const kw_caller *who); /* a kw_api_handler */
/* A batch handler settles each call as soon as its outcome is known
 * (kw_api_batch_settle), in any order, each exactly once. */
typedef struct kw_api_batch kw_api_batch;
typedef void (*kw_api_batch_fn)(kw_call **calls, const kw_caller *const *who, size_t n, kw_api_batch *b);
void kw_api_batch_settle(kw_api_batch *b, size_t i, kw_outcome o);

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
kw_handled kw_api_pipeline(kw_call *call);
void kw_api_pipeline_batch(kw_call **calls, size_t n, kw_handled *handled);
/* Carries out an outcome for call (see kw_outcome); who is the caller the
 * pipeline found. */
kw_handled kw_api_settle(kw_call *call, const kw_caller *who, kw_outcome o);
/* The route's audit row for a refused call (every-call routes): posted to
 * the group-commit writer (the answer does not wait), or written by the
 * worker's own chain when there is no writer. */
KW_MUST_CHECK kw_err kw_api_audit_call(kw_call *call, const kw_caller *who, const char *status,
                                       const char *context);
/* The route's audit action (its row's .action). */
const char *kw_api_action(const kw_call *call);
/* The same row as an event (strings borrowed from call and who). */
kw_audit_event kw_api_call_event(kw_call *call, const kw_caller *who, const char *status,
                                 const char *context);

/* common.c */
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
/* {name: 1-128 bytes without control characters, scopes: [1-16 known
 * names]} of body: NULL, or what is wrong (a literal). */
const char *kw_api_name_scopes(json_t *body, char name[129], uint32_t *scopes);
/* The body as a JSON object (an empty body is {}); NULL if it is not one. */
json_t *kw_api_body_object(kw_call *call);

/* Bits of kw_call.app_flags (the pipeline's, kept across a defer or a
 * second run): guard.c's budgets spent, and a call that must not join or
 * lead a coalesced run again (it timed out waiting for one). */
#define KW_FLAG_SPENT_IP    1u
#define KW_FLAG_SPENT_KEY   2u
#define KW_FLAG_NO_COALESCE 4u

/* coalesce.c (DESIGN 5.8): identical concurrent GETs of a route with
 * .coalesce (and named in coalesce.routes) run once. After the pipeline
 * admitted call: enter either parks it behind a running flight (*parked;
 * the pipeline returns KW_CALL_KEPT and touches it no more) or returns the
 * flight the call leads (NULL: not coalescing). The leader hands its
 * outcome to finish before settling its own call: each waiter is settled
 * there with its own copy. */
typedef struct kw_flight kw_flight;
struct kw_strbuf;
bool kw_coalesce_wanted(const kw_call *call);
kw_flight *kw_coalesce_enter(kw_call *call, const kw_caller *who, bool *parked);
void kw_coalesce_finish(kw_flight *f, kw_call *leader, const kw_outcome *o);
void kw_coalesce_metrics(struct kw_strbuf *b);
void kw_coalesce_stop(void);

/* metrics.c: every metric as Prometheus text (malloc'd), or NULL. */
char *kw_api_metrics_text(kw_app *app, size_t *len);
/* transit.c: its requests and items by operation, its key cache and the
 * change feed. */
void kw_api_transit_metrics(struct kw_strbuf *b, kw_app *app);
/* For tests/fuzz/fuzz_transit_batch.c: runs body through the items of
 * encrypt, decrypt and rewrap (a single item or a batch) under a fixed key
 * (version 1; AES-256-SIV or -GCM), as the routes do; aborts if an item
 * answers neither its result nor its error. */
void kw_api_transit_fuzz(const unsigned char *body, size_t len, bool siv);

/* The handlers of routes.c, one type for all (kw_api_handler), by file. */
typedef kw_outcome kw_api_handler(kw_call *call, const kw_caller *who);
kw_api_handler kw_api_healthz, kw_api_readyz, kw_api_metrics;                           /* health.c */
kw_api_handler kw_api_keys_create, kw_api_keys_list, kw_api_keys_revoke;                /* api_keys.c */
kw_api_handler kw_api_jwks, kw_api_auth_login, kw_api_auth_refresh, kw_api_auth_logout, /* auth_tokens.c */
    kw_api_auth_revoke, kw_api_auth_revoke_all, kw_api_auth_sessions, kw_api_auth_introspect,
    kw_api_auth_whoami;
kw_api_handler kw_api_vault_init, kw_api_vault_key, kw_api_vault_rotate; /* vault.c */
void kw_api_vault_key_batch(kw_call **calls, const kw_caller *const *who, size_t n, kw_api_batch *b);
void kw_api_secrets_get_batch(kw_call **calls, const kw_caller *const *who, size_t n, kw_api_batch *b);
kw_api_handler kw_api_wallet_nonce, kw_api_wallet_login;                       /* wallet_login.c */
kw_api_handler kw_api_transit_create, kw_api_transit_list, kw_api_transit_get, /* transit.c */
    kw_api_transit_rotate, kw_api_transit_config, kw_api_transit_encrypt, kw_api_transit_decrypt,
    kw_api_signing_create, kw_api_signing_list, kw_api_signing_delete, kw_api_signing_rotate,
    kw_api_secrets_create, kw_api_secrets_put, kw_api_secrets_list, kw_api_secrets_get, kw_api_secrets_delete,
    kw_api_transit_rewrap, kw_api_transit_datakey;
/* shared by both: a new family, its refresh token and an access token,
 * answered as the login response. With in_tx the caller's transaction
 * (scoped to tenant_id) is used and finished here. minted_by is the API
 * key of a delegated login (revoking it ends the session), or NULL. */
kw_outcome kw_api_issue_session(kw_call *call, const char *tenant_id, const char *subject,
                                const char *role_name, const char *method, const char *actor,
                                const char *minted_by, bool in_tx);
/* POST /api/v1/auth/sessions/revoke {subject} (admin): every session of a
 * subject of the caller's tenant. */
kw_api_handler kw_api_auth_sessions_revoke;

#endif
