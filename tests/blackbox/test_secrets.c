/* Black-box: the secrets store over HTTP against the real keywardd, token
 * and database: the routes and their bad input, tenants, envelope
 * encryption (nothing readable in the database, a moved row fails closed
 * and is audited), RLS as the service role, KEK rotation, rewrap and
 * retirement with secrets present, and keywardctl secrets import. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kwtest.h"
#include "kwtest_http.h"

static kwt_daemon d;
static kwt_tenant ta, tb;
static char rw_a[200], ro_a[200], wo_a[200], rw_b[200];

static void bearer_of(const kwt_tenant *t, const char *name, const char *scopes, char *out, size_t cap)
{
	char key[128], id[64];
	kwt_api_key_create(&d, t, name, scopes, 100000, key, id);
	snprintf(out, cap, "Authorization: Bearer %s\r\n", key);
}

static void start(void)
{
	kwt_daemon_start(&d, NULL);
	kwt_tenant_create(&d, "secrets-a", &ta);
	kwt_tenant_create(&d, "secrets-b", &tb);
	bearer_of(&ta, "rw", "[\"secrets:read\",\"secrets:write\"]", rw_a, sizeof(rw_a));
	bearer_of(&ta, "ro", "[\"secrets:read\"]", ro_a, sizeof(ro_a));
	bearer_of(&ta, "wo", "[\"secrets:write\"]", wo_a, sizeof(wo_a));
	bearer_of(&tb, "rw", "[\"secrets:read\",\"secrets:write\"]", rw_b, sizeof(rw_b));
}

static void stop(void)
{
	kwt_daemon_stop(&d);
}

TestSuite(secrets, .init = start, .fini = stop, .timeout = 120);

static int call_on(const kwt_daemon *dd, const char *method, const char *path, const char *auth,
                   const char *body, json_t **o)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_req(dd, method, path, auth, body, &r), 0);
	int st = r.status;
	if (st >= 500)
		cr_log_warn("%s %s answered %d: %.*s", method, path, st, (int)r.body_len, r.body);
	if (o)
		*o = json_loadb(r.body, r.body_len, 0, NULL);
	kwt_resp_free(&r);
	return st;
}

static int call(const char *method, const char *path, const char *auth, const char *body, json_t **o)
{
	return call_on(&d, method, path, auth, body, o);
}

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	cr_assert_not_null(s, "no %s", k);
	return s;
}

/* Creates name = value (base64) for auth; its id in id. */
static void create(const kwt_daemon *dd, const char *auth, const char *name, const char *b64, char id[64])
{
	char body[512];
	snprintf(body, sizeof(body), "{\"name\":\"%s\",\"value\":\"%s\",\"content_type\":\"text/plain\"}",
	         name, b64);
	json_t *o = NULL;
	cr_assert_eq(call_on(dd, "POST", "/api/v1/secrets", auth, body, &o), 201);
	cr_assert_eq(json_integer_value(json_object_get(o, "version")), 1);
	cr_assert_null(json_object_get(o, "value"), "create echoes no value");
	snprintf(id, 64, "%s", str(o, "id"));
	json_decref(o);
}

/* GET …/{id}[?version=]: the status, and the value or the error code. */
static int fetch_on(const kwt_daemon *dd, const char *auth, const char *id, int version, char *out,
                    size_t cap)
{
	char path[160];
	if (version > 0)
		snprintf(path, sizeof(path), "/api/v1/secrets/%s?version=%d", id, version);
	else
		snprintf(path, sizeof(path), "/api/v1/secrets/%s", id);
	json_t *o = NULL;
	int st = call_on(dd, "GET", path, auth, NULL, &o);
	const char *v = json_string_value(json_object_get(o, st == 200 ? "value" : "error"));
	snprintf(out, cap, "%s", v ? v : "");
	json_decref(o);
	return st;
}

static int fetch(const char *auth, const char *id, int version, char *out, size_t cap)
{
	return fetch_on(&d, auth, id, version, out, cap);
}

static long sql_long(const kwt_db *db, const char *sql)
{
	char *v = kwt_db_admin_sql(db, sql);
	long n = v ? strtol(v, NULL, 10) : -1;
	free(v);
	return n;
}

Test(secrets, create_version_list_fetch_delete)
{
	char id[64], out[256];
	create(&d, wo_a, "llm/openai", "c2stb3BlbmFpLTE=", id); /* sk-openai-1 */
	json_t *o = NULL;
	cr_assert_eq(
	    call("POST", "/api/v1/secrets", rw_a, "{\"name\":\"llm/openai\",\"value\":\"eA==\"}", &o), 409);
	cr_assert_str_eq(str(o, "error"), "secret_exists");
	json_decref(o);
	/* A new version. */
	char path[128];
	snprintf(path, sizeof(path), "/api/v1/secrets/%s", id);
	cr_assert_eq(call("PUT", path, wo_a, "{\"value\":\"c2stb3BlbmFpLTI=\"}", &o), 200);
	cr_assert_eq(json_integer_value(json_object_get(o, "version")), 2);
	cr_assert_str_eq(str(o, "name"), "llm/openai");
	json_decref(o);
	/* Fetch: the latest, or a version; no-store. */
	kwt_resp r;
	cr_assert_eq(kwt_http_req(&d, "GET", path, ro_a, NULL, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	char cc[64];
	cr_assert_str_eq(kwt_resp_header(&r, "Cache-Control", cc, sizeof(cc)), "no-store");
	o = json_loadb(r.body, r.body_len, 0, NULL);
	cr_assert_str_eq(str(o, "value"), "c2stb3BlbmFpLTI=");
	cr_assert_str_eq(str(o, "content_type"), "text/plain");
	cr_assert_eq(json_integer_value(json_object_get(o, "version")), 2);
	cr_assert_str_eq(str(o, "id"), id);
	json_decref(o);
	kwt_resp_free(&r);
	cr_assert_eq(fetch(ro_a, id, 1, out, sizeof(out)), 200);
	cr_assert_str_eq(out, "c2stb3BlbmFpLTE=");
	cr_assert_eq(fetch(ro_a, id, 3, out, sizeof(out)), 404);
	/* Scopes: writing needs secrets:write, reading secrets:read. */
	cr_assert_eq(fetch(wo_a, id, 0, out, sizeof(out)), 403);
	cr_assert_eq(call("PUT", path, ro_a, "{\"value\":\"eA==\"}", NULL), 403);
	cr_assert_eq(call("GET", "/api/v1/secrets", ro_a, NULL, NULL), 200, "either scope lists");
	cr_assert_eq(call("GET", "/api/v1/secrets", wo_a, NULL, &o), 200);
	json_t *items = json_object_get(o, "items");
	cr_assert_eq(json_array_size(items), 1);
	cr_assert_null(json_object_get(json_array_get(items, 0), "value"), "a list never holds a value");
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(items, 0), "version")), 2);
	cr_assert(json_is_null(json_object_get(o, "next")));
	json_decref(o);
	/* Another tenant: 404 for everything of it. */
	cr_assert_eq(fetch_on(&d, rw_b, id, 0, out, sizeof(out)), 404);
	cr_assert_eq(call("PUT", path, rw_b, "{\"value\":\"eA==\"}", NULL), 404);
	cr_assert_eq(call("DELETE", path, rw_b, NULL, NULL), 404);
	/* Delete: 204, then 404; the name is free again. */
	cr_assert_eq(call("DELETE", path, wo_a, NULL, NULL), 204);
	cr_assert_eq(fetch(ro_a, id, 0, out, sizeof(out)), 404);
	cr_assert_eq(call("DELETE", path, wo_a, NULL, NULL), 404);
	char id2[64];
	create(&d, wo_a, "llm/openai", "eA==", id2);
	cr_assert_str_neq(id2, id);
	/* Every change and read is audited, never with the value. */
	kwt_audit_settle(&d);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM audit_log WHERE tenant_id = '%s' AND action IN ('secret.create', "
	         "'secret.version', 'secret.delete', 'secret.read')",
	         ta.id);
	cr_assert_geq(sql_long(&d.db, sql), 7);
}

Test(secrets, bad_input_is_4xx_and_nothing_is_half_written)
{
	static const char *const bodies[] = {"{\"name\":\"\",\"value\":\"eA==\"}",
	                                     "{\"name\":\"a b\",\"value\":\"eA==\"}",
	                                     "{\"name\":\"x\",\"value\":\"not base64!\"}",
	                                     "{\"name\":\"x\",\"value\":\"eA\"}",
	                                     "{\"name\":\"x\",\"value\":\"eB==\"}",
	                                     "{\"name\":\"x\"}",
	                                     "{\"name\":\"x\",\"value\":5}",
	                                     "[1]",
	                                     "{\"name\":\"x\",\"value\":\"eA==\",\"content_type\":\"\"}",
	                                     "not json"};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		json_t *o = NULL;
		cr_assert_eq(call("POST", "/api/v1/secrets", rw_a, bodies[i], &o), 400, "%s", bodies[i]);
		cr_assert_str_eq(str(o, "error"), "invalid_request");
		json_decref(o);
	}
	char longname[300];
	memset(longname, 'n', 257);
	longname[257] = '\0';
	char body[400];
	snprintf(body, sizeof(body), "{\"name\":\"%s\",\"value\":\"eA==\"}", longname);
	cr_assert_eq(call("POST", "/api/v1/secrets", rw_a, body, NULL), 400);
	/* 64 KiB exactly is a value; one byte more is 413. */
	size_t n = 65536, b64 = 4 * ((n + 2) / 3);
	char *big = malloc(b64 + 100), *raw = malloc(n + 1);
	memset(raw, 'v', n);
	for (int extra = 0; extra < 2; extra++) {
		size_t len = n + (size_t)extra, enc = 4 * ((len + 2) / 3);
		char *bb = malloc(enc + 100);
		int at = snprintf(bb, enc + 100, "{\"name\":\"big%d\",\"value\":\"", extra);
		/* base64 of len bytes of 'v' */
		static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
		for (size_t i = 0; i < len; i += 3) {
			unsigned v = 0x76u << 16 | (i + 1 < len ? 0x76u << 8 : 0) | (i + 2 < len ? 0x76u : 0);
			bb[at++] = tbl[(v >> 18) & 63];
			bb[at++] = tbl[(v >> 12) & 63];
			bb[at++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
			bb[at++] = i + 2 < len ? tbl[v & 63] : '=';
		}
		snprintf(bb + at, enc + 100 - (size_t)at, "\"}");
		json_t *o = NULL;
		int st = call("POST", "/api/v1/secrets", rw_a, bb, &o);
		cr_assert_eq(st, extra ? 413 : 201, "a value of %zu bytes answered %d", len, st);
		if (extra)
			cr_assert_str_eq(str(o, "error"), "payload_too_large");
		else {
			char out[8];
			(void)out;
			cr_assert_eq(json_integer_value(json_object_get(o, "version")), 1);
		}
		json_decref(o);
		free(bb);
	}
	free(big);
	free(raw);
	/* Ids and versions. */
	char out[64];
	cr_assert_eq(fetch(ro_a, "not-a-uuid", 0, out, sizeof(out)), 404);
	cr_assert_eq(fetch(ro_a, "00000000-0000-4000-8000-000000000000", 0, out, sizeof(out)), 404);
	cr_assert_eq(
	    call("GET", "/api/v1/secrets/00000000-0000-4000-8000-000000000000?version=x", ro_a, NULL, NULL),
	    400);
	cr_assert_eq(
	    call("GET", "/api/v1/secrets/00000000-0000-4000-8000-000000000000?version=0", ro_a, NULL, NULL),
	    400);
	cr_assert_eq(call("GET", "/api/v1/secrets?limit=0", ro_a, NULL, NULL), 400);
	cr_assert_eq(call("GET", "/api/v1/secrets?limit=1001", ro_a, NULL, NULL), 400);
	cr_assert_eq(call("GET", "/api/v1/secrets?after=bad%20cursor", ro_a, NULL, NULL), 400);
	/* Nothing half-written: every refused create left no row. */
	char sql[200];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM secrets WHERE tenant_id = '%s' AND name <> 'big0'",
	         ta.id);
	long before = sql_long(&d.db, sql);
	cr_assert_eq(call("POST", "/api/v1/secrets", rw_a, "{\"name\":\"x\",\"value\":\"eB==\"}", NULL), 400);
	cr_assert_eq(sql_long(&d.db, sql), before);
	cr_assert_eq(call("GET", "/healthz", NULL, NULL, NULL), 200, "still serving");
}

Test(secrets, lists_page_by_name)
{
	char id[64];
	static const char *const names[] = {"p/c", "p/a", "p/e", "p/b", "p/d"};
	for (size_t i = 0; i < 5; i++)
		create(&d, rw_b, names[i], "eA==", id);
	char path[128] = "/api/v1/secrets?limit=2";
	char seen[256] = "";
	for (int page = 0; page < 5; page++) {
		json_t *o = NULL;
		cr_assert_eq(call("GET", path, rw_b, NULL, &o), 200);
		json_t *items = json_object_get(o, "items");
		for (size_t i = 0; i < json_array_size(items); i++) {
			strcat(seen, json_string_value(json_object_get(json_array_get(items, i), "name")));
			strcat(seen, " ");
		}
		json_t *next = json_object_get(o, "next");
		if (json_is_null(next)) {
			json_decref(o);
			break;
		}
		snprintf(path, sizeof(path), "/api/v1/secrets?limit=2&after=%s", json_string_value(next));
		json_decref(o);
	}
	cr_assert_str_eq(seen, "p/a p/b p/c p/d p/e ");
}

/* Nothing of a value or a data key is readable in the database, the log
 * or an audit row; a version moved into another secret's place, another
 * version's or another tenant's fails closed and is audited. */
Test(secrets, envelopes_hold_and_moved_rows_fail_closed)
{
	char a1[64], a2[64], b1[64], out[256];
	/* "canary-9f1c2e7a" in base64 */
	create(&d, rw_a, "env/one", "Y2FuYXJ5LTlmMWMyZTdh", a1);
	create(&d, rw_a, "env/two", "Y2FuYXJ5LTlmMWMyZTdh", a2);
	create(&d, rw_b, "env/one", "b3RoZXI=", b1);
	char sql[600];
	snprintf(
	    sql, sizeof(sql),
	    "SELECT count(*) FROM secret_versions WHERE position('canary-9f1c2e7a'::bytea IN value_ct) > 0 "
	    "OR position('canary-9f1c2e7a'::bytea IN wrapped_dk) > 0");
	cr_assert_eq(sql_long(&d.db, sql), 0, "a value is in the database in clear");
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM secret_versions a JOIN secret_versions b ON a.secret_id = '%s' AND "
	         "b.secret_id = '%s' WHERE a.value_ct = b.value_ct",
	         a1, a2);
	cr_assert_eq(sql_long(&d.db, sql), 0, "equal values gave equal ciphertexts");
	cr_assert_eq(fetch(ro_a, a1, 0, out, sizeof(out)), 200);
	cr_assert_str_eq(out, "Y2FuYXJ5LTlmMWMyZTdh");
	/* Move a2's version into a1's place (same tenant). */
	snprintf(
	    sql, sizeof(sql),
	    "UPDATE secret_versions t SET wrapped_dk = s.wrapped_dk, dk_iv = s.dk_iv, value_iv = s.value_iv, "
	    "value_ct = s.value_ct FROM secret_versions s WHERE t.secret_id = '%s' AND s.secret_id = '%s'",
	    a1, a2);
	free(kwt_db_admin_sql(&d.db, sql));
	cr_assert_eq(fetch(ro_a, a1, 0, out, sizeof(out)), 409);
	cr_assert_str_eq(out, "secret_corrupt");
	/* Another tenant's row under this tenant's secret. */
	snprintf(
	    sql, sizeof(sql),
	    "UPDATE secret_versions t SET wrapped_dk = s.wrapped_dk, dk_iv = s.dk_iv, value_iv = s.value_iv, "
	    "value_ct = s.value_ct FROM secret_versions s WHERE t.secret_id = '%s' AND s.secret_id = '%s'",
	    a2, b1);
	free(kwt_db_admin_sql(&d.db, sql));
	cr_assert_eq(fetch(ro_a, a2, 0, out, sizeof(out)), 409);
	/* One flipped byte of b1's ciphertext. */
	snprintf(sql, sizeof(sql),
	         "UPDATE secret_versions SET value_ct = set_byte(value_ct, 0, get_byte(value_ct, 0) # 1) "
	         "WHERE secret_id = '%s'",
	         b1);
	free(kwt_db_admin_sql(&d.db, sql));
	cr_assert_eq(fetch(rw_b, b1, 0, out, sizeof(out)), 409);
	cr_assert_eq(call("GET", "/healthz", NULL, NULL, NULL), 200);
	kwt_audit_settle(&d);
	snprintf(
	    sql, sizeof(sql),
	    "SELECT count(*) FROM audit_log WHERE action = 'secret.read' AND status = '409 secret_corrupt'");
	cr_assert_eq(sql_long(&d.db, sql), 3, "each refused read has its audit row");
	cr_assert_eq(sql_long(&d.db, "SELECT count(*) FROM audit_log WHERE position('canary' IN "
	                             "coalesce(context::text, '') || coalesce(target, '') || actor) > 0 "
	                             "OR position('Y2FuYXJ5' IN coalesce(context::text, '')) > 0"),
	             0, "a value reached an audit row");
	char *log = kwt_daemon_log(&d);
	cr_assert_null(strstr(log, "canary"), "a value reached the log");
	cr_assert_null(strstr(log, "Y2FuYXJ5"), "a value reached the log");
	free(log);
}

/* Row-level security holds for the service's own role, at SQL level. */
Test(secrets, rls_isolates_tenants_for_the_service_role)
{
	char ida[64];
	create(&d, rw_a, "rls/a", "eA==", ida);
	kw_db *db = NULL;
	cr_assert_eq(kw_db_connect(d.db.app, &db), KW_OK);
	cr_assert_eq(kw_db_begin(db, tb.id, NULL), KW_OK);
	PGresult *res = NULL;
	const char *vals[1] = {ida};
	cr_assert_eq(kw_db_exec(db, "SELECT count(*) FROM secret_versions WHERE secret_id = $1::uuid", 1,
	                        vals, NULL, NULL, &res),
	             KW_OK);
	cr_assert_str_eq(kw_db_value(res, 0, 0), "0", "tenant b sees tenant a's versions");
	kw_db_result_free(res);
	cr_assert_eq(
	    kw_db_exec(db, "SELECT count(*) FROM secrets WHERE name = 'rls/a'", 0, NULL, NULL, NULL, &res),
	    KW_OK);
	cr_assert_str_eq(kw_db_value(res, 0, 0), "0");
	kw_db_result_free(res);
	const char *ins[1] = {ta.id};
	cr_assert_neq(kw_db_exec(db,
	                         "INSERT INTO secrets (tenant_id, id, name, content_type) VALUES ($1::uuid, "
	                         "gen_random_uuid(), 'forged', 'x')",
	                         1, ins, NULL, NULL, NULL),
	              KW_OK, "tenant b wrote a row of tenant a");
	kw_db_rollback(db);
	cr_assert_eq(kw_db_begin(db, tb.id, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(db, "DELETE FROM secrets WHERE id = $1::uuid", 1, vals, NULL, NULL, &res),
	             KW_OK);
	cr_assert_eq(kw_db_affected(res), 0, "tenant b deleted tenant a's secret");
	kw_db_result_free(res);
	cr_assert_eq(
	    kw_db_exec(db, "UPDATE secret_versions SET value_ct = value_ct", 0, NULL, NULL, NULL, NULL),
	    KW_ERR_DB, "the service may not rewrite a version");
	kw_db_rollback(db);
	kw_db_close(db);
}

/* keywardctl secrets import: all or nothing, bad lines named. */
Test(secrets, import_is_all_or_nothing)
{
	char path[] = "/tmp/kwt_import_XXXXXX", args[256], out[2048];
	int fd = mkstemp(path);
	const char good[] = "{\"name\":\"imp/one\",\"value\":\"b25l\"}\n\n"
	                    "{\"name\":\"imp/two\",\"value\":\"dHdv\",\"content_type\":\"text/plain\"}\n";
	cr_assert_eq(write(fd, good, sizeof(good) - 1), (ssize_t)sizeof(good) - 1);
	close(fd);
	snprintf(args, sizeof(args), "secrets import %s %s", tb.id, path);
	cr_assert_eq(kwt_ctl(&d, args, out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "imported: 2 secrets"), "%s", out);
	json_t *o = NULL;
	cr_assert_eq(call("GET", "/api/v1/secrets?limit=1000", rw_b, NULL, &o), 200);
	const char *id = NULL;
	json_t *items = json_object_get(o, "items");
	for (size_t i = 0; i < json_array_size(items); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(items, i), "name")), "imp/two") ==
		    0)
			id = json_string_value(json_object_get(json_array_get(items, i), "id"));
	cr_assert_not_null(id);
	char val[64];
	cr_assert_eq(fetch(rw_b, id, 0, val, sizeof(val)), 200);
	cr_assert_str_eq(val, "dHdv");
	json_decref(o);
	/* A bad third line: nothing of the file is written. */
	char sql[200];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM secrets WHERE tenant_id = '%s'", tb.id);
	long before = sql_long(&d.db, sql);
	const char bad[] =
	    "{\"name\":\"imp/three\",\"value\":\"b25l\"}\n{\"name\":\"imp/four\",\"value\":\"b25l\"}\n"
	    "{\"name\":\"imp/five\",\"value\":\"b25\"}\n";
	fd = open(path, O_WRONLY | O_TRUNC);
	cr_assert_eq(write(fd, bad, sizeof(bad) - 1), (ssize_t)sizeof(bad) - 1);
	close(fd);
	cr_assert_eq(kwt_ctl(&d, args, out, sizeof(out)), 1);
	cr_assert_not_null(strstr(out, "line 3"), "%s", out);
	cr_assert_eq(sql_long(&d.db, sql), before);
	/* A name the tenant has already: nothing written either. */
	const char dup[] =
	    "{\"name\":\"imp/six\",\"value\":\"b25l\"}\n{\"name\":\"imp/one\",\"value\":\"b25l\"}\n";
	fd = open(path, O_WRONLY | O_TRUNC);
	cr_assert_eq(write(fd, dup, sizeof(dup) - 1), (ssize_t)sizeof(dup) - 1);
	close(fd);
	cr_assert_eq(kwt_ctl(&d, args, out, sizeof(out)), 1);
	cr_assert_not_null(strstr(out, "line 2"), "%s", out);
	cr_assert_eq(sql_long(&d.db, sql), before);
	unlink(path);
}

/* kek rotate / rewrap / retire with secrets present (a token of its own). */
Test(secrets, kek_rewrap_and_retire_cover_secrets, .timeout = 180)
{
	kwt_private p;
	static const char *const env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=100000", NULL};
	kwt_private_start(&p, "secrets", env);
	char cmd[1600], key[128] = "", auth[200], out[2048];
	snprintf(cmd, sizeof(cmd), "%s tenant create kek-secrets 2>/dev/null | sed -n 's/^api_key: //p'",
	         p.ctl);
	FILE *f = popen(cmd, "r");
	cr_assert_not_null(fgets(key, sizeof(key), f));
	cr_assert_eq(pclose(f), 0);
	key[strcspn(key, "\n")] = '\0';
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", key);
	kwt_tenant t;
	memset(&t, 0, sizeof(t));
	snprintf(t.auth, sizeof(t.auth), "%s", auth);
	char rw[200], kid[64];
	kwt_api_key_create(&p.d, &t, "rw", "[\"secrets:read\",\"secrets:write\"]", 100000, key, kid);
	snprintf(rw, sizeof(rw), "Authorization: Bearer %s\r\n", key);
	char ids[6][64];
	for (int i = 0; i < 6; i++) {
		char name[32];
		snprintf(name, sizeof(name), "kek/%d", i);
		create(&p.d, rw, name, "b25l", ids[i]);
	}
	/* A signing key too: its secret is wrapped by the same KEK. */
	json_t *sk = NULL;
	cr_assert_eq(call_on(&p.d, "POST", "/api/v1/signing-keys", auth,
	                     "{\"name\":\"svc\",\"scopes\":[\"secrets:read\"]}", &sk),
	             201);
	char skid[64], ssecret[64];
	snprintf(skid, sizeof(skid), "%s", json_string_value(json_object_get(sk, "id")));
	snprintf(ssecret, sizeof(ssecret), "%s", json_string_value(json_object_get(sk, "secret")));
	json_decref(sk);
	cr_assert_eq(kwt_private_ctl(&p, "kek rotate", out, sizeof(out)), 0, "%s", out);
	cr_assert_eq(sql_long(&p.d.db, "SELECT count(*) FROM secret_versions WHERE kek_id = 1"), 6);
	cr_assert_eq(sql_long(&p.d.db, "SELECT count(*) FROM signing_keys WHERE kek_id = 1"), 1);
	cr_assert_eq(kwt_private_ctl(&p, "kek retire 1 --force", out, sizeof(out)), 1, "%s", out);
	cr_assert_not_null(strstr(out, "still wrapped"), "%s", out);
	cr_assert_eq(kwt_private_ctl(&p, "kek rewrap --batch 4", out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "6 secret versions, 1 signing keys"), "%s", out);
	cr_assert_eq(sql_long(&p.d.db, "SELECT count(*) FROM secret_versions WHERE kek_id <> 2"), 0);
	cr_assert_eq(sql_long(&p.d.db, "SELECT count(*) FROM signing_keys WHERE kek_id <> 2"), 0);
	char val[64];
	for (int i = 0; i < 6; i++) {
		cr_assert_eq(fetch_on(&p.d, rw, ids[i], 0, val, sizeof(val)), 200);
		cr_assert_str_eq(val, "b25l");
	}
	cr_assert_eq(kwt_private_ctl(&p, "kek retire 1 --force", out, sizeof(out)), 0, "%s", out);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(fetch_on(&p.d, rw, ids[i], 0, val, sizeof(val)), 200, "after retire");
	/* The re-wrapped signing key still verifies (its secret unwrapped by
	 * KEK 2: the cache is emptied by the rewrap's change). */
	char sfile[] = "/tmp/kwt_sec_sig_XXXXXX";
	int sfd = mkstemp(sfile);
	cr_assert_eq(write(sfd, ssecret, strlen(ssecret)), (ssize_t)strlen(ssecret));
	close(sfd);
	char sbin[600], scmd[1600], line[300], hdr[1024] = "";
	snprintf(scmd, sizeof(scmd),
	         "KEYWARD_SIGN_KID=%s KEYWARD_SIGN_SECRET_FILE=%s %s sign GET /api/v1/secrets", skid, sfile,
	         kwt_bin_sh("keywardctl", sbin, sizeof(sbin)));
	FILE *sp = popen(scmd, "r");
	while (fgets(line, sizeof(line), sp)) {
		line[strcspn(line, "\n")] = '\0';
		strcat(hdr, line);
		strcat(hdr, "\r\n");
	}
	cr_assert_eq(pclose(sp), 0);
	unlink(sfile);
	cr_assert_eq(call_on(&p.d, "GET", "/api/v1/secrets", hdr, NULL, NULL), 200);
	/* New versions are under KEK 2 (the daemon re-reads the token). */
	usleep(1500 * 1000);
	char path[128];
	snprintf(path, sizeof(path), "/api/v1/secrets/%s", ids[0]);
	cr_assert_eq(call_on(&p.d, "PUT", path, rw, "{\"value\":\"dHdv\"}", NULL), 200);
	cr_assert_eq(sql_long(&p.d.db, "SELECT max(kek_id) FROM secret_versions"), 2);
	kwt_private_stop(&p);
}
