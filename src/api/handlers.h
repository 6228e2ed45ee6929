/* handlers.h — the handlers of the route table in routes.c, and what they share. */
#ifndef KEYWARD_API_HANDLERS_H
#define KEYWARD_API_HANDLERS_H

#include <jansson.h>
#include <stdbool.h>

#include "keyward/http.h"

/* common.c */
/* Serialises o (consumed; NULL = out of memory) as the answer. */
void kw_api_respond_object(kw_call *call, int status, json_t *o);
/* Appends an audit row ("ok") inside the open transaction, unless *err is
 * already set; failure goes to *err. */
void kw_api_audit_in_tx(kw_call *call, const char *tenant_id, const char *actor, const char *action,
                        const char *target, const char *context, kw_err *err);
void kw_api_audit_status_in_tx(kw_call *call, const char *tenant_id, const char *actor, const char *action,
                               const char *target, const char *status, const char *context, kw_err *err);
/* Commits (err == KW_OK) or rolls back, moving the audit chain's head only
 * if the commit held. Returns the final error. */
kw_err kw_api_finish_tx(kw_call *call, kw_err err);
/* The worker's database and token session; false = 503 written. */
bool kw_api_resources_ready(kw_call *call);
/* The body as a JSON object (an empty body is {}); NULL if it is not one. */
json_t *kw_api_body_object(kw_call *call);

/* metrics.c: every metric as Prometheus text (malloc'd), or NULL. */
char *kw_api_metrics_text(kw_app *app, size_t *len);

void kw_api_healthz(kw_call *call);
void kw_api_readyz(kw_call *call);
void kw_api_metrics(kw_call *call);
void kw_api_keys_create(kw_call *call);
void kw_api_keys_list(kw_call *call);
void kw_api_keys_revoke(kw_call *call);
/* auth_tokens.c */
void kw_api_jwks(kw_call *call);
void kw_api_auth_login(kw_call *call);
void kw_api_auth_refresh(kw_call *call);
void kw_api_auth_logout(kw_call *call);
void kw_api_auth_revoke(kw_call *call);
void kw_api_auth_revoke_all(kw_call *call);
void kw_api_auth_sessions(kw_call *call);
void kw_api_auth_introspect(kw_call *call);
void kw_api_auth_whoami(kw_call *call);
/* vault.c */
void kw_api_vault_init(kw_call *call);
void kw_api_vault_key(kw_call *call);
void kw_api_vault_key_batch(kw_call **calls, size_t n, bool *detached);
void kw_api_vault_rotate(kw_call *call);
/* wallet_login.c */
void kw_api_wallet_nonce(kw_call *call);
void kw_api_wallet_login(kw_call *call);
/* shared by both: a new family, its refresh token and an access token,
 * answered as the login response. With in_tx the caller's transaction
 * (scoped to tenant_id) is used and finished here. */
void kw_api_issue_session(kw_call *call, const char *tenant_id, const char *subject, const char *role_name,
                          const char *method, const char *actor, bool in_tx);

#endif
