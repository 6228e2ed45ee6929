/* Unit tests: route matching, request ids, response helpers. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/api/api.h"
#include "keyward/http/http.h"

Test(http, request_id_validation)
{
	cr_assert(kw_request_id_valid("a"));
	cr_assert(kw_request_id_valid("abc-DEF_123.x"));
	char max[129];
	memset(max, 'a', 128);
	max[128] = '\0';
	cr_assert(kw_request_id_valid(max));
	char over[130];
	memset(over, 'a', 129);
	over[129] = '\0';
	cr_assert_not(kw_request_id_valid(over));
	cr_assert_not(kw_request_id_valid(""));
	cr_assert_not(kw_request_id_valid("a b"));
	cr_assert_not(kw_request_id_valid("a\"b"));
	cr_assert_not(kw_request_id_valid("ünï"));
}

Test(http, request_ids_are_fresh_hex)
{
	char a[33], b[33];
	kw_request_id_new(a);
	kw_request_id_new(b);
	cr_assert_eq(strlen(a), 32);
	cr_assert_str_neq(a, b);
	cr_assert(kw_request_id_valid(a));
}

Test(http, route_matching)
{
	char param[128];
	bool other;
	int r = kw_route_match(kw_api_routes, kw_api_routes_count, "GET", "/healthz", param, sizeof(param),
	                       &other);
	cr_assert_geq(r, 0);
	cr_assert_str_eq(kw_api_routes[r].name, "healthz");
	cr_assert_lt(kw_route_match(kw_api_routes, kw_api_routes_count, "POST", "/healthz", param,
	                            sizeof(param), &other),
	             0);
	cr_assert(other, "POST /healthz must be 405, not 404");
	cr_assert_lt(kw_route_match(kw_api_routes, kw_api_routes_count, "GET", "/healthz/", param,
	                            sizeof(param), &other),
	             0);
	cr_assert_not(other);
	cr_assert_lt(kw_route_match(kw_api_routes, kw_api_routes_count, "GET", "/health", param,
	                            sizeof(param), &other),
	             0);
	cr_assert_lt(
	    kw_route_match(kw_api_routes, kw_api_routes_count, "GET", "", param, sizeof(param), &other), 0);
}

Test(http, error_shape)
{
	kw_call call;
	memset(&call, 0, sizeof(call));
	snprintf(call.req.request_id, sizeof(call.req.request_id), "rid-1");
	kw_respond_error(&call, 400, "invalid_request", "name is required");
	cr_assert_eq(call.resp.status, 400);
	json_t *o = json_loads(call.resp.body, 0, NULL);
	cr_assert_not_null(o);
	cr_assert_str_eq(json_string_value(json_object_get(o, "error")), "invalid_request");
	cr_assert_str_eq(json_string_value(json_object_get(o, "message")), "name is required");
	cr_assert_str_eq(json_string_value(json_object_get(o, "request_id")), "rid-1");
	json_decref(o);
	kw_respond_header(&call, "Retry-After", "1");
	cr_assert_eq(call.resp.nheaders, 1);
	free(call.resp.body);
	free(call.resp.headers[0].name);
	free(call.resp.headers[0].value);
}

Test(http, header_lookup_counts_duplicates)
{
	kw_header hs[] = {{"Authorization", "a"}, {"Host", "h"}, {"authorization", "b"}};
	kw_request req = {.headers = hs, .nheaders = 3};
	int n = 0;
	cr_assert_str_eq(kw_request_header(&req, "AUTHORIZATION", &n), "a");
	cr_assert_eq(n, 2);
	cr_assert_null(kw_request_header(&req, "X-None", &n));
	cr_assert_eq(n, 0);
}

/* What a request carried (an Authorization header, a refresh token in the
 * body, a query) is wiped in place before the transport frees it. */
Test(http, request_copies_are_wiped)
{
	char auth[] = "Bearer kw_secretsecretsecret", query[] = "token=abc",
	     body[] = "{\"refresh_token\":\"xyz\"}";
	char name[] = "Authorization";
	kw_header h = {name, auth};
	kw_request r = {.headers = &h,
	                .nheaders = 1,
	                .query = query,
	                .body = (unsigned char *)body,
	                .body_len = sizeof(body) - 1};
	kw_request_wipe(&r);
	for (size_t i = 0; i < sizeof(auth) - 1; i++)
		cr_assert_eq(auth[i], 0, "Authorization byte %zu kept", i);
	for (size_t i = 0; i < sizeof(query) - 1; i++)
		cr_assert_eq(query[i], 0);
	for (size_t i = 0; i < sizeof(body) - 1; i++)
		cr_assert_eq(body[i], 0);
	cr_assert_str_eq(name, "Authorization", "names are not secrets");
}

/* kw_pool_prepare_idle: every idle worker looks at its resources once. */
static atomic_int prepared;
static kw_worker_res *count_open(void *ctx, int index)
{
	(void)ctx;
	return (kw_worker_res *)(intptr_t)(index + 1); /* any non-NULL token */
}
static void count_prepare(void *ctx, kw_worker_res *res)
{
	(void)ctx, (void)res;
	atomic_fetch_add(&prepared, 1);
}
static void count_close(void *ctx, kw_worker_res *res)
{
	(void)ctx, (void)res;
}

Test(http, idle_workers_prepare_when_asked)
{
	kw_pool_hooks hooks = {.open = count_open, .prepare = count_prepare, .close = count_close};
	kw_pool *pool = NULL;
	cr_assert_eq(kw_pool_start(&hooks, 3, 8, &pool), KW_OK);
	usleep(100 * 1000); /* all three idle */
	atomic_store(&prepared, 0);
	kw_pool_prepare_idle(pool);
	for (int i = 0; i < 100 && atomic_load(&prepared) < 3; i++)
		usleep(10 * 1000);
	usleep(50 * 1000);
	cr_assert_eq(atomic_load(&prepared), 3, "each idle worker prepares once");
	kw_pool_stop(pool);
}
