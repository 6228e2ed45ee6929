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
};
const size_t kw_routes_count = sizeof(kw_routes) / sizeof(kw_routes[0]);
