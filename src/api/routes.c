/* routes.c — every HTTP route of keywardd, declared in one table.
 *
 * A row says who may call the route and what it costs: method and pattern;
 * where it runs (on the I/O thread, which must not block, or on a worker,
 * which holds a token session and a database connection); the credential
 * it takes; the scopes (API keys) or permission (access tokens) it needs;
 * the resources it needs; its audit mode; its handler, batch handler and
 * coalescing flag. The pipeline (pipeline.c) runs every phase from the
 * row; a handler only does the route's own work. A new capability is a row
 * here plus a handler. */
#include "handlers.h"
#include "keyward/api/api.h"
#include "keyward/auth/apikey.h"

#define IO     false
#define WORKER true
/* One row: the transport's part, then the pipeline's (a kw_api_spec). */
#define ROUTE(method, pattern, name, where, ...)                                                             \
	{                                                                                                    \
		method, pattern, name, where, kw_api_pipeline, NULL, &(const kw_api_spec){__VA_ARGS__},      \
		    false                                                                                    \
	}
/* The same, for a route with a batch handler (it runs on a worker). */
#define BATCH_ROUTE(method, pattern, name, ...)                                                              \
	{                                                                                                    \
		method, pattern, name, WORKER, kw_api_pipeline, kw_api_pipeline_batch,                       \
		    &(const kw_api_spec){__VA_ARGS__}, false                                                 \
	}

/* The same, for a route of the admin listener (http.admin_listen). */
#define ADMIN_ROUTE(method, pattern, name, where, ...)                                                       \
	{                                                                                                    \
		method, pattern, name, where, kw_api_pipeline, NULL, &(const kw_api_spec){__VA_ARGS__}, true \
	}

#define DB_HSM      (KW_NEED_DB | KW_NEED_HSM)
#define TRANSIT_ANY (KW_SCOPE_ADMIN | KW_SCOPE_TRANSIT_ENCRYPT | KW_SCOPE_TRANSIT_DECRYPT)
#define SECRETS_ANY (KW_SCOPE_SECRETS_READ | KW_SCOPE_SECRETS_WRITE)

const kw_route kw_api_routes[] = {
    /* operations */
    ROUTE("GET", "/healthz", "healthz", IO, .cred = KW_CRED_NONE, .handler = kw_api_healthz),
    ADMIN_ROUTE("GET", "/readyz", "readyz", WORKER, .cred = KW_CRED_NONE, .handler = kw_api_readyz),
    ADMIN_ROUTE("GET", "/metrics", "metrics", IO, .cred = KW_CRED_NONE, .handler = kw_api_metrics),

    /* tenants' API keys (DESIGN 5.2) */
    ROUTE("POST", "/api/v1/api-keys", "api_keys_create", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_keys_create),
    ROUTE("GET", "/api/v1/api-keys", "api_keys_list", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS, .handler = kw_api_keys_list),
    ROUTE("DELETE", "/api/v1/api-keys/{id}", "api_keys_revoke", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_keys_revoke),

    /* access and refresh tokens (DESIGN 5.4) */
    ROUTE("GET", "/.well-known/jwks.json", "jwks", IO, .cred = KW_CRED_NONE, .coalesce = true,
          .handler = kw_api_jwks),
    ROUTE("POST", "/api/v1/auth/login", "auth_login", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_AUTH_ISSUE, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_auth_login),
    ROUTE("POST", "/api/v1/auth/wallet/nonce", "auth_wallet_nonce", WORKER, .cred = KW_CRED_PUBLIC,
          .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS, .handler = kw_api_wallet_nonce),
    ROUTE("POST", "/api/v1/auth/wallet", "auth_wallet", WORKER, .cred = KW_CRED_IN_BODY, .needs = DB_HSM,
          .audit = KW_AUDIT_REFUSALS, .handler = kw_api_wallet_login),
    ROUTE("POST", "/api/v1/auth/refresh", "auth_refresh", WORKER, .cred = KW_CRED_IN_BODY, .needs = DB_HSM,
          .audit = KW_AUDIT_REFUSALS, .handler = kw_api_auth_refresh),
    ROUTE("POST", "/api/v1/auth/logout", "auth_logout", WORKER, .cred = KW_CRED_ACCESS_TOKEN,
          .allow_revoked = true, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS, .handler = kw_api_auth_logout),
    ROUTE("POST", "/api/v1/auth/revoke", "auth_revoke", WORKER, .cred = KW_CRED_PUBLIC, .needs = DB_HSM,
          .audit = KW_AUDIT_REFUSALS, .handler = kw_api_auth_revoke),
    ROUTE("POST", "/api/v1/auth/revoke-all", "auth_revoke_all", WORKER, .cred = KW_CRED_ACCESS_TOKEN,
          .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS, .handler = kw_api_auth_revoke_all),
    ROUTE("GET", "/api/v1/auth/sessions", "auth_sessions", WORKER, .cred = KW_CRED_ACCESS_TOKEN,
          .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS, .handler = kw_api_auth_sessions),
    ROUTE("POST", "/api/v1/auth/sessions/revoke", "auth_sessions_revoke", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_auth_sessions_revoke),
    /* On the I/O thread while the token is good; a refusal moves to a worker to be audited. */
    ROUTE("GET", "/api/v1/auth/whoami", "auth_whoami", IO, .cred = KW_CRED_ACCESS_TOKEN,
          .audit = KW_AUDIT_REFUSALS, .handler = kw_api_auth_whoami),
    ROUTE("POST", "/api/v1/auth/introspect", "auth_introspect", WORKER, .cred = KW_CRED_API_KEY,
          .any_scope = KW_SCOPE_AUTH_ISSUE | KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .action = "auth.introspect", .scope_message = "introspection needs auth:issue or admin",
          .handler = kw_api_auth_introspect),

    /* transit encryption (DESIGN 5.5) */
    ROUTE("POST", "/api/v1/transit/keys", "transit_key_create", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_transit_create),
    ROUTE("GET", "/api/v1/transit/keys", "transit_key_list", WORKER, .cred = KW_CRED_API_KEY,
          .any_scope = TRANSIT_ANY, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS, .action = "transit.key.read",
          .scope_message = "listing transit keys needs admin or a transit scope",
          .handler = kw_api_transit_list),
    ROUTE("GET", "/api/v1/transit/keys/{name}", "transit_key_get", WORKER, .cred = KW_CRED_API_KEY,
          .any_scope = TRANSIT_ANY, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS, .action = "transit.key.read",
          .scope_message = "reading a transit key needs admin or a transit scope",
          .handler = kw_api_transit_get),
    ROUTE("POST", "/api/v1/transit/keys/{name}/rotate", "transit_key_rotate", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_transit_rotate),
    ROUTE("POST", "/api/v1/transit/keys/{name}/config", "transit_key_config", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_transit_config),
    /* On the I/O thread while the key is in the transit cache (else on a worker). */
    ROUTE("POST", "/api/v1/transit/keys/{name}/encrypt", "transit_encrypt", IO, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_TRANSIT_ENCRYPT, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_transit_encrypt),
    ROUTE("POST", "/api/v1/transit/keys/{name}/rewrap", "transit_rewrap", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_TRANSIT_ENCRYPT, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_transit_rewrap),
    ROUTE("POST", "/api/v1/transit/keys/{name}/datakey", "transit_datakey", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_TRANSIT_ENCRYPT, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_transit_datakey),
    ROUTE("POST", "/api/v1/transit/keys/{name}/decrypt", "transit_decrypt", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_TRANSIT_DECRYPT, .needs = DB_HSM, .audit = KW_AUDIT_EVERY_CALL,
          .action = "transit.decrypt", .target = "transit_key", .handler = kw_api_transit_decrypt),

    /* signing keys (DESIGN 5.6) */
    ROUTE("POST", "/api/v1/signing-keys", "signing_keys_create", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_signing_create),
    ROUTE("GET", "/api/v1/signing-keys", "signing_keys_list", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_signing_list),
    ROUTE("DELETE", "/api/v1/signing-keys/{id}", "signing_keys_delete", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_signing_delete),
    ROUTE("POST", "/api/v1/signing-keys/{id}/rotate", "signing_keys_rotate", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_ADMIN, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .handler = kw_api_signing_rotate),

    /* the secrets store (DESIGN 5.7) */
    ROUTE("POST", "/api/v1/secrets", "secrets_create", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_SECRETS_WRITE, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .action = "secret.create", .handler = kw_api_secrets_create),
    ROUTE("GET", "/api/v1/secrets", "secrets_list", WORKER, .cred = KW_CRED_API_KEY, .any_scope = SECRETS_ANY,
          .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS, .action = "secret.list",
          .scope_message = "listing secrets needs secrets:read or secrets:write",
          .handler = kw_api_secrets_list),
    BATCH_ROUTE("GET", "/api/v1/secrets/{id}", "secrets_get", .cred = KW_CRED_API_KEY,
                .scopes = KW_SCOPE_SECRETS_READ, .needs = DB_HSM, .audit = KW_AUDIT_EVERY_CALL,
                .action = "secret.read", .target = "secret", .coalesce = true, .handler = kw_api_secrets_get,
                .batch = kw_api_secrets_get_batch),
    ROUTE("PUT", "/api/v1/secrets/{id}", "secrets_put", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_SECRETS_WRITE, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .action = "secret.version", .handler = kw_api_secrets_put),
    ROUTE("DELETE", "/api/v1/secrets/{id}", "secrets_delete", WORKER, .cred = KW_CRED_API_KEY,
          .scopes = KW_SCOPE_SECRETS_WRITE, .needs = DB_HSM, .audit = KW_AUDIT_REFUSALS,
          .action = "secret.delete", .handler = kw_api_secrets_delete),

    /* the per-user encryption vault (DESIGN 5.3) */
    ROUTE("POST", "/api/v1/me/encryption-vault/init", "vault_init", WORKER, .cred = KW_CRED_ACCESS_TOKEN,
          .permission = "vault:write", .needs = DB_HSM, .audit = KW_AUDIT_EVERY_CALL, .action = "vault.init",
          .target = "encryption_vault", .handler = kw_api_vault_init),
    BATCH_ROUTE("GET", "/api/v1/me/encryption-vault/key", "vault_key", .cred = KW_CRED_ACCESS_TOKEN,
                .permission = "vault:read", .needs = DB_HSM, .audit = KW_AUDIT_EVERY_CALL,
                .action = "vault.key", .target = "encryption_vault", .coalesce = true,
                .handler = kw_api_vault_key, .batch = kw_api_vault_key_batch),
    ROUTE("POST", "/api/v1/me/encryption-vault/rotate", "vault_rotate", WORKER, .cred = KW_CRED_ACCESS_TOKEN,
          .permission = "vault:write", .needs = DB_HSM, .audit = KW_AUDIT_EVERY_CALL,
          .action = "vault.rotate", .target = "encryption_vault", .handler = kw_api_vault_rotate),
};
const size_t kw_api_routes_count = sizeof(kw_api_routes) / sizeof(kw_api_routes[0]);
