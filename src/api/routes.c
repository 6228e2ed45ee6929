/* routes.c — every HTTP route of keywardd, in one table.
 *
 * A reader finds each route here: method, path pattern, handler, whether
 * it runs on a worker (HSM or database) or inline on the I/O thread, and
 * its metrics label. */
#include "api.h"

const kw_route kw_routes[] = {
    {"GET", "/healthz", kw_api_healthz, false, "healthz"},
    {"GET", "/readyz", kw_api_readyz, true, "readyz"},
    {"GET", "/metrics", kw_api_metrics, false, "metrics"},
    {"POST", "/api/v1/api-keys", kw_api_keys_create, true, "api_keys_create"},
    {"GET", "/api/v1/api-keys", kw_api_keys_list, true, "api_keys_list"},
    {"DELETE", "/api/v1/api-keys/{id}", kw_api_keys_revoke, true, "api_keys_revoke"},
};
const size_t kw_routes_count = sizeof(kw_routes) / sizeof(kw_routes[0]);
