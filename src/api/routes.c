/* routes.c — every HTTP route of keywardd, in one table.
 *
 * A reader finds each route here: method, path pattern, handler, whether
 * it runs on a worker (HSM or database) or inline on the I/O thread, and
 * its metrics label. */
#include "handlers.h"
#include "keyward/api.h"

const kw_route kw_api_routes[] = {
    {"GET", "/healthz", kw_api_healthz, false, "healthz", NULL},
    {"GET", "/readyz", kw_api_readyz, true, "readyz", NULL},
    {"GET", "/metrics", kw_api_metrics, false, "metrics", NULL},
    {"POST", "/api/v1/api-keys", kw_api_keys_create, true, "api_keys_create", NULL},
    {"GET", "/api/v1/api-keys", kw_api_keys_list, true, "api_keys_list", NULL},
    {"DELETE", "/api/v1/api-keys/{id}", kw_api_keys_revoke, true, "api_keys_revoke", NULL},
    {"GET", "/.well-known/jwks.json", kw_api_jwks, false, "jwks", NULL},
    {"POST", "/api/v1/auth/login", kw_api_auth_login, true, "auth_login", NULL},
    {"POST", "/api/v1/auth/wallet/nonce", kw_api_wallet_nonce, true, "auth_wallet_nonce", NULL},
    {"POST", "/api/v1/auth/wallet", kw_api_wallet_login, true, "auth_wallet", NULL},
    {"POST", "/api/v1/auth/refresh", kw_api_auth_refresh, true, "auth_refresh", NULL},
    {"POST", "/api/v1/auth/logout", kw_api_auth_logout, true, "auth_logout", NULL},
    {"POST", "/api/v1/auth/revoke", kw_api_auth_revoke, true, "auth_revoke", NULL},
    {"POST", "/api/v1/auth/revoke-all", kw_api_auth_revoke_all, true, "auth_revoke_all", NULL},
    {"GET", "/api/v1/auth/sessions", kw_api_auth_sessions, true, "auth_sessions", NULL},
    {"GET", "/api/v1/auth/whoami", kw_api_auth_whoami, false, "auth_whoami", NULL},
    {"POST", "/api/v1/auth/introspect", kw_api_auth_introspect, true, "auth_introspect", NULL},
    {"POST", "/api/v1/me/encryption-vault/init", kw_api_vault_init, true, "vault_init", NULL},
    {"GET", "/api/v1/me/encryption-vault/key", kw_api_vault_key, true, "vault_key", kw_api_vault_key_batch},
    {"POST", "/api/v1/me/encryption-vault/rotate", kw_api_vault_rotate, true, "vault_rotate", NULL},
};
const size_t kw_api_routes_count = sizeof(kw_api_routes) / sizeof(kw_api_routes[0]);
