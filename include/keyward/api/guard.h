/* guard.h — who is calling: API keys, access tokens, budgets, refusals
 * (src/api/guard.c, above the transport).
 *
 * Everything here runs on a worker (it may ask the token and the
 * database). A refusal is complete when these functions return false: the
 * JSON error, the rate-limit headers and the audit row are done, and the
 * handler only returns. The tenant of every later query comes from the
 * principal, never from the request. */
#ifndef KEYWARD_GUARD_H
#define KEYWARD_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/auth/apikey.h"
#include "keyward/http/http.h"

/* The per-IP budget of /api/ routes, spent at most once per request;
 * false = 429 written and audited. */
bool kw_auth_ip_budget(kw_call *call);
/* Spends one of the address's failed authentications (a refused
 * credential, wherever it was presented). */
void kw_auth_failed(kw_call *call);
/* The IP's budget of failed authentications (checked, not spent), for
 * routes whose credential is in the body (refresh, wallet sign-in);
 * false = 429 written and audited. */
bool kw_auth_fail_budget(kw_call *call);
/* Authenticates "Authorization: Bearer kw_..." and checks that the key
 * holds every scope in need (kw_scope bits). Applies the IP budget, the
 * failed-authentication budget and the key's own budget (its limit in
 * *rate_limit, 0 = the default). On an I/O thread only a key in the
 * verified-key cache that holds the scopes passes there, and its own
 * budget is not spent yet (kw_auth_api_key_spend, once the route has its
 * answer); anything else sets call->defer, and the route's pipeline runs
 * again on a worker (the address's budget is not spent twice). */
bool kw_auth_api_key(kw_call *call, uint32_t need, kw_principal *out, int *rate_limit);
/* Spends one of the key's own budget and sets the RateLimit headers;
 * false when it is exhausted: 429 on a worker, call->defer on an I/O
 * thread (the worker then refuses it with its audit row). */
bool kw_auth_api_key_spend(kw_call *call, const kw_principal *p, int rate_limit);

/* Whether the request carries any of the signature headers (DESIGN 5.6). */
bool kw_auth_has_signature(const kw_request *req);
/* Authenticates a signed request (X-Timestamp, X-Nonce, X-Signature) as
 * DESIGN 5.6 says, for the routes that take an API key: strict headers,
 * the 5-minute window, the key (cached while the change feed is fresh),
 * the MAC compared in constant time, then the nonce spent in the shared
 * store (503 when it cannot be written, never accepted). Refusals are
 * 401 (invalid_signature, timestamp_out_of_window, nonce_reused), spend a
 * failed authentication and are audited. On an I/O thread: call->defer. */
bool kw_auth_signature(kw_call *call, uint32_t need, kw_principal *out, int *rate_limit);

/* Authenticates "Authorization: Bearer <access token>" (DESIGN §5.4):
 * strict ES256 verification in process (cached by token hash), iss, exp
 * and nbf with auth.leeway, then revocation of jti and sid. A revoked
 * token is accepted only with allow_revoked (logout is idempotent). On an
 * I/O thread only the success path runs there: anything else sets
 * call->defer to the route's pipeline, which runs again on a worker and
 * refuses (401/429/503) with its audit row; the address's budget spent on
 * the I/O thread is not spent again there. */
struct kw_access_claims;
bool kw_auth_access_token(kw_call *call, bool allow_revoked, struct kw_access_claims *out);

/* Queues an audit row for a refused request with the group-commit writer
 * (kw_audit_writer_post: the answer does not wait for it; the writer
 * writes it before it stops). tenant_id/actor may be NULL. */
void kw_audit_refusal(kw_call *call, const char *tenant_id, const char *actor, const char *action, int status,
                      const char *code);
/* Answers 503 for an unavailable token or database, 500 otherwise. */
void kw_respond_failure(kw_call *call, kw_err err);

/* Counters for /metrics. */
typedef struct kw_auth_stats {
	unsigned long long key_lookups; /* API keys looked up in the database */
	unsigned long long cache_hits;
	unsigned long long refused_401, refused_403, refused_429;
} kw_auth_stats;
void kw_auth_stats_get(kw_auth_stats *out);

#endif
