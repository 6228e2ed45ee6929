/* api.h — keyward's HTTP API: the route table (src/api/routes.c).
 *
 * keywardd hands this table to kw_server_start; the transport matches and
 * runs its rows without knowing what they do. */
#ifndef KEYWARD_API_H
#define KEYWARD_API_H

#include <stddef.h>

#include "keyward/http/http.h"

extern const kw_route kw_api_routes[];
extern const size_t kw_api_routes_count;

#endif
