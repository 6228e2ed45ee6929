/* Black-box: the per-user encryption vault (DESIGN §5.3) against the real
 * keywardd, SoftHSM token and PostgreSQL — init/key/rotate, concurrent
 * first inits, identity only from the token, a blob swapped between rows,
 * the master key absent from database, audit rows and log, every call
 * audited, KEK rotate/rewrap/retire while the service serves (and a rewrap
 * killed with SIGKILL half-way), and the token going away under the
 * service (a fault-injecting PKCS#11 module over SoftHSM). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kwtest.h"
#include "kwtest_http.h"

static kwt_daemon d;
static kwt_tenant ta, tb;
static char issuer_auth_a[200], issuer_auth_b[200];

static void make_issuers(kwt_daemon *dd)
{
	char id[64], key[128];
	kwt_tenant_create(dd, "tenant-a", &ta);
	kwt_tenant_create(dd, "tenant-b", &tb);
	kwt_api_key_create(dd, &ta, "app", "[\"auth:issue\"]", 100000, key, id);
	snprintf(issuer_auth_a, sizeof(issuer_auth_a), "Authorization: Bearer %s\r\n", key);
	kwt_api_key_create(dd, &tb, "app", "[\"auth:issue\"]", 100000, key, id);
	snprintf(issuer_auth_b, sizeof(issuer_auth_b), "Authorization: Bearer %s\r\n", key);
}

#define ROLES_ENV                                                                                            \
	"KEYWARD_AUTH_ROLES=track1 12h vault:read vault:write, reader 1h vault:read, nobody 1h, track4 1h "  \
	"vault:read"

static void start(void)
{
	static const char *const env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=100000",
	                                  "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=100000", ROLES_ENV, NULL};
	kwt_daemon_start(&d, env);
	make_issuers(&d);
}

static void stop(void)
{
	kwt_daemon_stop(&d);
}

TestSuite(vault, .init = start, .fini = stop, .timeout = 180);

/* --- helpers ------------------------------------------------------------- */

static json_t *body_json(const kwt_resp *r)
{
	json_t *o = json_loadb(r->body, r->body_len, 0, NULL);
	cr_assert_not_null(o, "not JSON: %s", r->body);
	return o;
}

/* An access token for subject in the tenant of the issuing key. */
static void access_for(const kwt_daemon *dd, const char *issuer_auth, const char *subject, const char *role,
                       char *out, size_t cap)
{
	char body[512];
	snprintf(body, sizeof(body), "{\"subject\":\"%s\",\"role\":\"%s\"}", subject, role);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(dd, "POST", "/api/v1/auth/login", issuer_auth, body, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *o = body_json(&r);
	snprintf(out, cap, "%s", json_string_value(json_object_get(o, "access_token")));
	json_decref(o);
	kwt_resp_free(&r);
}

static int vault_call(const kwt_daemon *dd, const char *method, const char *what, const char *tok,
                      const char *body, kwt_resp *r)
{
	char h[4096], path[128];
	snprintf(h, sizeof(h), "Authorization: Bearer %s\r\nX-Request-Id: vault-%s-%d\r\n", tok, what,
	         (int)getpid());
	snprintf(path, sizeof(path), "/api/v1/me/encryption-vault/%s", what);
	return kwt_http_req(dd, method, path, h, body, r);
}

typedef struct vkey {
	int status;
	char error[64];
	char mk_b64[64];
	int kek_id;
} vkey;

/* Calls a vault route and reads its answer; a key answer is checked for
 * shape (32 bytes of base64, format 1). */
static vkey vcall(const kwt_daemon *dd, const char *what, const char *tok)
{
	vkey k;
	memset(&k, 0, sizeof(k));
	kwt_resp r;
	cr_assert_eq(vault_call(dd, strcmp(what, "key") == 0 ? "GET" : "POST", what, tok, NULL, &r), 0);
	k.status = r.status;
	json_t *o = body_json(&r);
	if (r.status == 200 || r.status == 201) {
		const char *mk = json_string_value(json_object_get(o, "master_key"));
		cr_assert_not_null(mk, "%s", r.body);
		cr_assert_eq(strlen(mk), 44, "%s", mk);
		unsigned char raw[64];
		cr_assert_eq(EVP_DecodeBlock(raw, (const unsigned char *)mk, 44), 33); /* 32 + one '=' */
		snprintf(k.mk_b64, sizeof(k.mk_b64), "%s", mk);
		cr_assert_eq(json_integer_value(json_object_get(o, "format_version")), 1);
		k.kek_id = (int)json_integer_value(json_object_get(o, "kek_id"));
		cr_assert_gt(k.kek_id, 0);
	} else {
		const char *e = json_string_value(json_object_get(o, "error"));
		snprintf(k.error, sizeof(k.error), "%s", e ? e : "");
		cr_assert_not_null(json_object_get(o, "request_id"), "%s", r.body);
	}
	json_decref(o);
	kwt_resp_free(&r);
	return k;
}

static long sql_long(const kwt_db *db, const char *sql)
{
	char *v = kwt_db_admin_sql(db, sql);
	cr_assert_not_null(v, "%s", sql);
	long n = strtol(v, NULL, 10);
	free(v);
	return n;
}

/* --- the routes ---------------------------------------------------------- */

Test(vault, init_key_rotate)
{
	char tok[2048];
	access_for(&d, issuer_auth_a, "alice", "track1", tok, sizeof(tok));
	vkey none = vcall(&d, "key", tok);
	cr_assert_eq(none.status, 404);
	cr_assert_str_eq(none.error, "vault_not_found");
	vkey rot0 = vcall(&d, "rotate", tok);
	cr_assert_eq(rot0.status, 404);
	cr_assert_str_eq(rot0.error, "vault_not_found");

	vkey first = vcall(&d, "init", tok);
	cr_assert_eq(first.status, 201);
	vkey again = vcall(&d, "init", tok);
	cr_assert_eq(again.status, 200);
	cr_assert_str_eq(again.mk_b64, first.mk_b64);
	vkey got = vcall(&d, "key", tok);
	cr_assert_eq(got.status, 200);
	cr_assert_str_eq(got.mk_b64, first.mk_b64);
	cr_assert_eq(got.kek_id, first.kek_id);

	vkey rot = vcall(&d, "rotate", tok);
	cr_assert_eq(rot.status, 200);
	cr_assert_str_neq(rot.mk_b64, first.mk_b64);
	got = vcall(&d, "key", tok);
	cr_assert_str_eq(got.mk_b64, rot.mk_b64);
	again = vcall(&d, "init", tok);
	cr_assert_eq(again.status, 200);
	cr_assert_str_eq(again.mk_b64, rot.mk_b64);

	/* The row holds the wrapped key and its metadata; rotated_at is set. */
	char sql[512];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM encryption_vaults WHERE tenant_id = '%s' AND user_id = 'alice' "
	         "AND length(wrapped_mk) = 48 AND length(wrap_iv) = 12 AND format_version = 1 "
	         "AND rotated_at IS NOT NULL AND rotated_at >= created_at",
	         ta.id);
	cr_assert_eq(sql_long(&d.db, sql), 1);
	/* The answer is never cached by an intermediary. */
	kwt_resp r;
	cr_assert_eq(vault_call(&d, "GET", "key", tok, NULL, &r), 0);
	char cc[64];
	cr_assert_str_eq(kwt_resp_header(&r, "Cache-Control", cc, sizeof(cc)), "no-store");
	kwt_resp_free(&r);
}

typedef struct init_race {
	const char *tok;
	vkey k;
	pthread_barrier_t *go;
} init_race;

static void *race_init(void *arg)
{
	init_race *a = arg;
	char h[4096];
	snprintf(h, sizeof(h), "Authorization: Bearer %s\r\n", a->tok);
	kwt_resp r;
	pthread_barrier_wait(a->go);
	if (kwt_http_req(&d, "POST", "/api/v1/me/encryption-vault/init", h, NULL, &r) != 0)
		return NULL;
	a->k.status = r.status;
	json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
	const char *mk = json_string_value(json_object_get(o, "master_key"));
	snprintf(a->k.mk_b64, sizeof(a->k.mk_b64), "%s", mk ? mk : "");
	json_decref(o);
	kwt_resp_free(&r);
	return NULL;
}

Test(vault, concurrent_first_inits_make_one_vault)
{
	enum { N = 8 };
	for (int round = 0; round < 3; round++) {
		char sub[64], tok[2048];
		snprintf(sub, sizeof(sub), "racer-%d", round);
		access_for(&d, issuer_auth_a, sub, "track1", tok, sizeof(tok));
		pthread_barrier_t go;
		pthread_barrier_init(&go, NULL, N);
		init_race a[N];
		pthread_t th[N];
		for (int i = 0; i < N; i++) {
			a[i] = (init_race){.tok = tok, .go = &go};
			pthread_create(&th[i], NULL, race_init, &a[i]);
		}
		int created = 0;
		for (int i = 0; i < N; i++) {
			pthread_join(th[i], NULL);
			cr_assert(a[i].k.status == 201 || a[i].k.status == 200, "status %d", a[i].k.status);
			created += a[i].k.status == 201;
			cr_assert_str_eq(a[i].k.mk_b64, a[0].k.mk_b64, "two different keys for one user");
		}
		pthread_barrier_destroy(&go);
		cr_assert_eq(created, 1);
		char sql[256];
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM encryption_vaults WHERE user_id = '%s'",
		         sub);
		cr_assert_eq(sql_long(&d.db, sql), 1);
		vkey got = vcall(&d, "key", tok);
		cr_assert_str_eq(got.mk_b64, a[0].k.mk_b64);
	}
}

Test(vault, identity_only_from_the_token)
{
	char ta_bob[2048], ta_carol[2048], tb_bob[2048];
	access_for(&d, issuer_auth_a, "bob", "track1", ta_bob, sizeof(ta_bob));
	access_for(&d, issuer_auth_a, "carol", "track1", ta_carol, sizeof(ta_carol));
	access_for(&d, issuer_auth_b, "bob", "track1", tb_bob, sizeof(tb_bob));
	vkey a = vcall(&d, "init", ta_bob);
	cr_assert_eq(a.status, 201);
	/* Same user id in another tenant: another vault. */
	vkey b = vcall(&d, "init", tb_bob);
	cr_assert_eq(b.status, 201);
	cr_assert_str_neq(a.mk_b64, b.mk_b64);
	/* A body naming another user or tenant changes nothing. */
	char body[256];
	snprintf(body, sizeof(body), "{\"tenant_id\":\"%s\",\"user_id\":\"bob\",\"sub\":\"bob\"}", ta.id);
	kwt_resp r;
	cr_assert_eq(vault_call(&d, "POST", "init", ta_carol, body, &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	json_t *o = body_json(&r);
	cr_assert_str_neq(json_string_value(json_object_get(o, "master_key")), a.mk_b64);
	json_decref(o);
	kwt_resp_free(&r);
	cr_assert_eq(vault_call(&d, "GET", "key?user_id=bob", ta_carol, NULL, &r), 0);
	o = body_json(&r);
	cr_assert_str_neq(json_string_value(json_object_get(o, "master_key")), a.mk_b64);
	json_decref(o);
	kwt_resp_free(&r);
	cr_assert_str_eq(vcall(&d, "key", ta_bob).mk_b64, a.mk_b64);
	cr_assert_str_eq(vcall(&d, "key", tb_bob).mk_b64, b.mk_b64);
}

Test(vault, bad_credentials_and_permissions)
{
	const char *paths[][2] = {{"POST", "init"}, {"GET", "key"}, {"POST", "rotate"}};
	char key[128], id[64];
	kwt_api_key_create(&d, &ta, "not-a-user", "[\"auth:issue\"]", 1000, key, id);
	for (size_t i = 0; i < 3; i++) {
		kwt_resp r;
		char path[128];
		snprintf(path, sizeof(path), "/api/v1/me/encryption-vault/%s", paths[i][1]);
		cr_assert_eq(kwt_http_req(&d, paths[i][0], path, NULL, NULL, &r), 0);
		kwt_assert_json_error(&r, 401, "invalid_token");
		kwt_resp_free(&r);
		cr_assert_eq(vault_call(&d, paths[i][0], paths[i][1], "eyJhbGciOiJub25lIn0.e30.", NULL, &r),
		             0);
		cr_assert_eq(r.status, 401, "%s", r.body);
		kwt_resp_free(&r);
		/* An API key is not an access token. */
		cr_assert_eq(vault_call(&d, paths[i][0], paths[i][1], key, NULL, &r), 0);
		cr_assert_eq(r.status, 401, "%s", r.body);
		kwt_resp_free(&r);
	}
	char reader[2048], nobody[2048];
	access_for(&d, issuer_auth_a, "rita", "reader", reader, sizeof(reader));
	access_for(&d, issuer_auth_a, "nora", "nobody", nobody, sizeof(nobody));
	vkey k = vcall(&d, "init", reader);
	cr_assert_eq(k.status, 403);
	cr_assert_str_eq(k.error, "insufficient_permission");
	k = vcall(&d, "rotate", reader);
	cr_assert_eq(k.status, 403);
	k = vcall(&d, "key", reader); /* may read: there is just nothing yet */
	cr_assert_eq(k.status, 404);
	k = vcall(&d, "key", nobody);
	cr_assert_eq(k.status, 403);
	cr_assert_str_eq(k.error, "insufficient_permission");
	cr_assert_eq(
	    sql_long(&d.db, "SELECT count(*) FROM encryption_vaults WHERE user_id IN ('rita', 'nora')"), 0);
	/* Each refusal left a row. */
	kwt_audit_settle(&d);
	cr_assert_geq(sql_long(&d.db,
	                       "SELECT count(*) FROM audit_log WHERE action LIKE 'vault.%' AND actor = "
	                       "'user:rita' AND status = '403 insufficient_permission'"),
	              2);
	cr_assert_geq(sql_long(&d.db, "SELECT count(*) FROM audit_log WHERE action = 'auth.token_refused'"),
	              3);
}

Test(vault, swapped_blob_fails_closed_and_is_audited)
{
	char t1[2048], t2[2048], t3[2048];
	access_for(&d, issuer_auth_a, "swap-1", "track1", t1, sizeof(t1));
	access_for(&d, issuer_auth_a, "swap-2", "track1", t2, sizeof(t2));
	access_for(&d, issuer_auth_b, "swap-1", "track1", t3, sizeof(t3));
	vkey k1 = vcall(&d, "init", t1), k2 = vcall(&d, "init", t2), k3 = vcall(&d, "init", t3);
	cr_assert_eq(k1.status, 201);
	cr_assert_eq(k2.status, 201);
	cr_assert_eq(k3.status, 201);
	char sql[1024];
	/* User swap-1's blob into swap-2's row (same tenant). */
	snprintf(sql, sizeof(sql),
	         "UPDATE encryption_vaults v SET wrapped_mk = s.wrapped_mk, wrap_iv = s.wrap_iv "
	         "FROM encryption_vaults s WHERE s.tenant_id = '%s' AND s.user_id = 'swap-1' "
	         "AND v.tenant_id = '%s' AND v.user_id = 'swap-2' RETURNING 1",
	         ta.id, ta.id);
	free(kwt_db_admin_sql(&d.db, sql));
	/* And tenant A's swap-1 into tenant B's swap-1 (same user id). */
	snprintf(sql, sizeof(sql),
	         "UPDATE encryption_vaults v SET wrapped_mk = s.wrapped_mk, wrap_iv = s.wrap_iv "
	         "FROM encryption_vaults s WHERE s.tenant_id = '%s' AND s.user_id = 'swap-1' "
	         "AND v.tenant_id = '%s' AND v.user_id = 'swap-1' RETURNING 1",
	         ta.id, tb.id);
	free(kwt_db_admin_sql(&d.db, sql));
	for (int i = 0; i < 2; i++) {
		const char *tok = i == 0 ? t2 : t3;
		vkey k = vcall(&d, "key", tok);
		cr_assert_eq(k.status, 409);
		cr_assert_str_eq(k.error, "vault_corrupt");
		k = vcall(&d, "init", tok); /* init reads the same row: same refusal */
		cr_assert_eq(k.status, 409);
		cr_assert_str_eq(k.error, "vault_corrupt");
	}
	cr_assert_str_eq(vcall(&d, "key", t1).mk_b64, k1.mk_b64);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM audit_log WHERE actor = 'user:swap-2' AND action = 'vault.key' "
	         "AND status = '409 vault_corrupt' AND tenant_id = '%s'",
	         ta.id);
	kwt_audit_settle(&d);
	cr_assert_eq(sql_long(&d.db, sql), 1);
	/* Rotation replaces the broken blob with a fresh key. */
	vkey r2 = vcall(&d, "rotate", t2);
	cr_assert_eq(r2.status, 200);
	cr_assert_str_eq(vcall(&d, "key", t2).mk_b64, r2.mk_b64);
	/* Still serving. */
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&d, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200);
	kwt_resp_free(&r);
}

static bool dump_contains(const kwt_db *db, const char *needle)
{
	char cmd[1024];
	/* The connection string's dbname names the database to dump. */
	snprintf(cmd, sizeof(cmd), "pg_dump --data-only --inserts -d '%s' 2>/dev/null", db->admin);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	size_t cap = 1 << 20, n = 0;
	char *buf = malloc(cap);
	size_t got;
	while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
		n += got;
		if (n + 1 == cap)
			buf = realloc(buf, cap *= 2);
	}
	buf[n] = '\0';
	cr_assert_eq(pclose(p), 0);
	cr_assert(strstr(buf, "encryption_vaults"), "pg_dump printed no vault rows");
	bool found = strstr(buf, needle) != NULL;
	free(buf);
	return found;
}

Test(vault, master_key_never_stored_logged_or_audited)
{
	char tok[2048];
	access_for(&d, issuer_auth_a, "secretive", "track1", tok, sizeof(tok));
	vkey k = vcall(&d, "init", tok);
	cr_assert_eq(k.status, 201);
	vkey r = vcall(&d, "rotate", tok);
	cr_assert_eq(vcall(&d, "key", tok).status, 200);
	const char *keys[2] = {k.mk_b64, r.mk_b64};
	for (int i = 0; i < 2; i++) {
		unsigned char raw[48];
		cr_assert_eq(EVP_DecodeBlock(raw, (const unsigned char *)keys[i], 44), 33);
		char hex[65];
		for (int j = 0; j < 32; j++)
			snprintf(hex + 2 * j, 3, "%02x", raw[j]);
		/* Not in any table (pg_dump prints bytea as hex), not in the log. */
		cr_assert(!dump_contains(&d.db, keys[i]));
		cr_assert(!dump_contains(&d.db, hex));
		char *log = kwt_daemon_log(&d);
		cr_assert_null(strstr(log, keys[i]));
		cr_assert_null(strstr(log, hex));
		free(log);
	}
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM audit_log WHERE actor = 'user:secretive' AND (context::text LIKE "
	         "'%%master%%' OR context::text LIKE '%%%.20s%%')",
	         k.mk_b64);
	cr_assert_eq(sql_long(&d.db, sql), 0);
}

Test(vault, every_call_leaves_an_audit_row)
{
	char tok[2048];
	access_for(&d, issuer_auth_a, "audited", "track1", tok, sizeof(tok));
	cr_assert_eq(vcall(&d, "key", tok).status, 404);
	cr_assert_eq(vcall(&d, "init", tok).status, 201);
	cr_assert_eq(vcall(&d, "init", tok).status, 200);
	cr_assert_eq(vcall(&d, "key", tok).status, 200);
	cr_assert_eq(vcall(&d, "rotate", tok).status, 200);
	char sql[1024];
	snprintf(
	    sql, sizeof(sql),
	    "SELECT string_agg(action || ' ' || status, ',' ORDER BY action || ' ' || status) FROM audit_log "
	    "WHERE actor = 'user:audited' AND tenant_id = '%s' AND ip = '127.0.0.1' "
	    "AND user_agent = 'kwtest/1' AND request_id LIKE 'vault-%%'",
	    ta.id);
	/* The refusal's row is posted (the 404 did not wait for it): it may
	 * land after the rows of later calls. */
	const char *want =
	    "vault.init ok,vault.init ok,vault.key 404 vault_not_found,vault.key ok,vault.rotate ok";
	kwt_audit_settle(&d);
	char *v = kwt_db_admin_sql(&d.db, sql);
	cr_assert_str_eq(v, want);
	free(v);
	/* The request id in the row is the one the client sent. */
	snprintf(
	    sql, sizeof(sql),
	    "SELECT count(*) FROM audit_log WHERE actor = 'user:audited' AND request_id = 'vault-rotate-%d'",
	    (int)getpid());
	cr_assert_eq(sql_long(&d.db, sql), 1);
	/* A bad token on a vault route is a refusal row too. */
	kwt_resp r;
	cr_assert_eq(vault_call(&d, "GET", "key", "not.a.token", NULL, &r), 0);
	cr_assert_eq(r.status, 401);
	kwt_resp_free(&r);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM audit_log WHERE action = 'auth.token_refused' AND request_id = "
	         "'vault-key-%d' AND context->>'path' = '/api/v1/me/encryption-vault/key'",
	         (int)getpid());
	kwt_audit_settle(&d);
	cr_assert_geq(sql_long(&d.db, sql), 1);
	/* The trail still verifies. */
	char cmd[1200], bin[600];
	snprintf(cmd, sizeof(cmd), "KEYWARD_DB_ADMIN_CONNINFO='%s' %s audit verify >/dev/null", d.db.admin,
	         kwt_bin_sh("keywardctl", bin, sizeof(bin)));
	cr_assert_eq(system(cmd), 0, "audit verify failed");
}

/* --- fetches batched on one worker --------------------------------------- */

static void start_one_worker(void)
{
	static const char *const env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=100000",
	                                  "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=100000", ROLES_ENV,
	                                  "KEYWARD_HTTP_WORKERS=1", NULL};
	kwt_daemon_start(&d, env);
	make_issuers(&d);
}

TestSuite(vault_batch, .init = start_one_worker, .fini = stop, .timeout = 180);

enum { BP_USERS = 16, BP_THREADS = 16, BP_CALLS = 24 };

typedef struct batch_principal {
	char tok[2048];
	int want;          /* status */
	char want_mk[64];  /* for 200 */
	char want_err[64]; /* for the rest */
} batch_principal;

typedef struct batch_client {
	int index;
	const batch_principal *p;
	pthread_barrier_t *go;
	int ok, not_found, wrong;
	int answered[BP_USERS]; /* right answers, per principal */
	char why[256];
} batch_client;

static void *batch_main(void *arg)
{
	batch_client *c = arg;
	pthread_barrier_wait(c->go);
	for (int i = 0; i < BP_CALLS; i++) {
		const batch_principal *p = &c->p[(c->index * 7 + i) % BP_USERS];
		char h[4096];
		snprintf(h, sizeof(h), "Authorization: Bearer %s\r\n", p->tok);
		kwt_resp r;
		if (kwt_http_req(&d, "GET", "/api/v1/me/encryption-vault/key", h, NULL, &r) != 0) {
			c->wrong++;
			snprintf(c->why, sizeof(c->why), "no answer");
			continue;
		}
		json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
		const char *mk = json_string_value(json_object_get(o, "master_key"));
		const char *e = json_string_value(json_object_get(o, "error"));
		bool right = r.status == p->want &&
		             (p->want == 200 ? mk != NULL && strcmp(mk, p->want_mk) == 0
		                             : mk == NULL && e != NULL && strcmp(e, p->want_err) == 0);
		if (!right) {
			c->wrong++;
			snprintf(c->why, sizeof(c->why), "status %d (want %d): %.150s", r.status, p->want,
			         r.body);
		}
		c->ok += right && r.status == 200;
		c->not_found += right && r.status == 404;
		c->answered[(c->index * 7 + i) % BP_USERS] += right;
		json_decref(o);
		kwt_resp_free(&r);
	}
	return NULL;
}

static unsigned long long metric(const kwt_daemon *dd, const char *name)
{
	kwt_resp r;
	cr_assert_eq(kwt_http_req(dd, "GET", "/metrics", NULL, NULL, &r), 0);
	char line[128];
	snprintf(line, sizeof(line), "\n%s ", name); /* the sample, not its # HELP */
	const char *at = strstr(r.body, line);
	cr_assert_not_null(at, "%s not in /metrics", name);
	unsigned long long v = strtoull(at + strlen(line), NULL, 10);
	kwt_resp_free(&r);
	return v;
}

/* One worker and many clients: fetches queue up and the worker takes them
 * in runs whose reads share a round trip. Every client still gets exactly
 * its own key, or its own refusal, and every answer has its audit row. */
Test(vault_batch, queued_fetches_each_get_their_own_answer)
{
	batch_principal p[BP_USERS];
	memset(p, 0, sizeof(p));
	for (int i = 0; i < BP_USERS; i++) {
		char sub[32];
		snprintf(sub, sizeof(sub), "batch-%d", i);
		/* 0-9 tenant a, 10-11 tenant b (the same subjects as 0-1), 12-13
		 * no vault, 14 a role without vault:read, 15 not a token. */
		if (i >= 10 && i < 12)
			snprintf(sub, sizeof(sub), "batch-%d", i - 10);
		if (i == 15) {
			snprintf(p[i].tok, sizeof(p[i].tok), "not.a.token");
			p[i].want = 401;
			continue;
		}
		access_for(&d, i >= 10 && i < 12 ? issuer_auth_b : issuer_auth_a, sub,
		           i == 14 ? "nobody" : "track1", p[i].tok, sizeof(p[i].tok));
		if (i == 14) {
			p[i].want = 403;
			snprintf(p[i].want_err, sizeof(p[i].want_err), "insufficient_permission");
		} else if (i >= 12) {
			p[i].want = 404;
			snprintf(p[i].want_err, sizeof(p[i].want_err), "vault_not_found");
		} else {
			vkey k = vcall(&d, "init", p[i].tok);
			cr_assert_eq(k.status, 201);
			p[i].want = 200;
			snprintf(p[i].want_mk, sizeof(p[i].want_mk), "%s", k.mk_b64);
		}
	}
	for (int i = 0; i < 2; i++)
		cr_assert_str_neq(p[i].want_mk, p[10 + i].want_mk, "one subject, two tenants, one key");
	kwt_resp r;
	cr_assert_eq(vault_call(&d, "GET", "key", p[15].tok, NULL, &r), 0);
	json_t *o = body_json(&r);
	snprintf(p[15].want_err, sizeof(p[15].want_err), "%s",
	         json_string_value(json_object_get(o, "error")));
	json_decref(o);
	kwt_resp_free(&r);

	unsigned long long batched_before = metric(&d, "keyward_worker_batched_calls_total");
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, BP_THREADS);
	batch_client c[BP_THREADS];
	pthread_t th[BP_THREADS];
	for (int i = 0; i < BP_THREADS; i++) {
		c[i] = (batch_client){.index = i, .p = p, .go = &go};
		pthread_create(&th[i], NULL, batch_main, &c[i]);
	}
	long ok = 0, not_found = 0, answered[BP_USERS] = {0};
	for (int i = 0; i < BP_THREADS; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(c[i].wrong, 0, "client %d: %d wrong answers, last: %s", i, c[i].wrong, c[i].why);
		ok += c[i].ok;
		not_found += c[i].not_found;
		for (int k = 0; k < BP_USERS; k++)
			answered[k] += c[i].answered[k];
	}
	pthread_barrier_destroy(&go);
	/* The runs happened: this is not the one-call path. */
	unsigned long long batched = metric(&d, "keyward_worker_batched_calls_total") - batched_before;
	cr_assert_gt(batched, 0, "no fetch was batched");
	cr_log_info("%llu of %d fetches ran in batches", batched, BP_THREADS * BP_CALLS);
	/* Every answered fetch has its row, under its own user. */
	kwt_audit_settle(&d);
	cr_assert_eq(sql_long(&d.db,
	                      "SELECT count(*) FROM audit_log WHERE action = 'vault.key' AND status = 'ok' "
	                      "AND actor LIKE 'user:batch-%'"),
	             ok);
	cr_assert_eq(sql_long(&d.db, "SELECT count(*) FROM audit_log WHERE action = 'vault.key' "
	                             "AND status = '404 vault_not_found' AND actor IN ('user:batch-12', "
	                             "'user:batch-13')"),
	             not_found);
	/* And each row names the tenant and user it was answered to. */
	for (int i = 0; i < 14; i++) {
		char sql[512];
		snprintf(sql, sizeof(sql),
		         "SELECT count(*) FROM audit_log WHERE action = 'vault.key' AND status = '%s' "
		         "AND tenant_id = '%s' AND actor = 'user:batch-%d'",
		         p[i].want == 200 ? "ok" : "404 vault_not_found", i >= 10 && i < 12 ? tb.id : ta.id,
		         i >= 10 && i < 12 ? i - 10 : i);
		cr_assert_gt(answered[i], 0, "principal %d never asked", i);
		cr_assert_eq(sql_long(&d.db, sql), answered[i],
		             "principal %d: audit rows differ from answers", i);
	}
}

/* --- KEK rotation, rewrap and retirement (a token of their own) ---------- */

typedef struct kek_env {
	kwt_private p;
	kwt_daemon d;   /* p.d, copied: the tests' handle on the daemon */
	char ctl[1400]; /* keywardctl with this token and database */
	char auth[256]; /* an auth:issue key of this token's tenant */
} kek_env;

static void kek_env_start(kek_env *e, const char *tag)
{
	char cmd[2048];
	memset(e, 0, sizeof(*e));
	static const char *const env[] = {"KEYWARD_RATELIMIT_IP_PER_MINUTE=100000",
	                                  "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=100000", NULL};
	kwt_private_start(&e->p, tag, env);
	e->d = e->p.d;
	snprintf(e->ctl, sizeof(e->ctl), "%s", e->p.ctl);
	snprintf(cmd, sizeof(cmd), "%s tenant create %s 2>/dev/null | sed -n 's/^api_key: //p'", e->ctl, tag);
	FILE *p = popen(cmd, "r");
	char key[128] = "", auth[256];
	cr_assert_not_null(fgets(key, sizeof(key), p));
	cr_assert_eq(pclose(p), 0);
	key[strcspn(key, "\n")] = '\0';
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", key);
	kwt_resp r;
	cr_assert_eq(
	    kwt_http_req(&e->d, "POST", "/api/v1/api-keys", auth,
	                 "{\"name\":\"app\",\"scopes\":[\"auth:issue\"],\"rate_limit_per_minute\":100000}",
	                 &r),
	    0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	json_t *o = body_json(&r);
	snprintf(e->auth, sizeof(e->auth), "Authorization: Bearer %s\r\n",
	         json_string_value(json_object_get(o, "key")));
	json_decref(o);
	kwt_resp_free(&r);
}

static void kek_env_stop(kek_env *e)
{
	e->p.d = e->d;
	kwt_private_stop(&e->p);
}

/* Runs keywardctl ARGS; returns its exit status, its output (stdout and
 * stderr, as much as fits) in out. */
static int ctl_run(const kek_env *e, const char *args, char *out, size_t cap)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", e->ctl, args);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	char line[1024];
	size_t used = 0;
	if (out)
		out[0] = '\0';
	while (fgets(line, sizeof(line), p)) {
		size_t n = strlen(line);
		if (out && used + n < cap) {
			memcpy(out + used, line, n + 1);
			used += n;
		}
	}
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

typedef struct vuser {
	char tok[2048];
	char mk[64];
} vuser;

static void make_users(kek_env *e, vuser *u, int n, const char *prefix)
{
	for (int i = 0; i < n; i++) {
		char sub[64];
		snprintf(sub, sizeof(sub), "%s-%d", prefix, i);
		access_for(&e->d, e->auth, sub, "track1", u[i].tok, sizeof(u[i].tok));
		vkey k = vcall(&e->d, "init", u[i].tok);
		cr_assert_eq(k.status, 201);
		snprintf(u[i].mk, sizeof(u[i].mk), "%s", k.mk_b64);
	}
}

typedef struct churn {
	kek_env *e;
	vuser *users;
	int from, to;
	bool rotate;
	volatile bool *stop;
	int calls, wrong;
	char why[256];
} churn;

/* Readers check every user still gets their own key; rotators rotate and
 * check the fresh key is the one then served. */
static void *churn_main(void *arg)
{
	churn *c = arg;
	while (!*c->stop && c->wrong == 0) {
		for (int i = c->from; i < c->to && c->wrong == 0; i++) {
			vuser *u = &c->users[i];
			if (c->rotate) {
				vkey r = vcall(&c->e->d, "rotate", u->tok);
				if (r.status != 200) {
					c->wrong++;
					snprintf(c->why, sizeof(c->why), "rotate %d: %d %s", i, r.status,
					         r.error);
					break;
				}
				snprintf(u->mk, sizeof(u->mk), "%s", r.mk_b64);
			}
			vkey k = vcall(&c->e->d, "key", u->tok);
			c->calls++;
			if (k.status != 200 || strcmp(k.mk_b64, u->mk) != 0) {
				c->wrong++;
				snprintf(c->why, sizeof(c->why), "user %d: %d %s", i, k.status, k.error);
			}
		}
	}
	return NULL;
}

static int kek_of_new_init(kek_env *e, const char *sub)
{
	char tok[2048];
	access_for(&e->d, e->auth, sub, "track1", tok, sizeof(tok));
	vkey k = vcall(&e->d, "init", tok);
	cr_assert_eq(k.status, 201);
	return k.kek_id;
}

Test(kek, rotate_rewrap_retire_while_serving, .timeout = 240)
{
	enum { NREAD = 24, NROT = 6 };
	kek_env e;
	kek_env_start(&e, "kek");
	vuser u[NREAD + NROT];
	make_users(&e, u, NREAD + NROT, "k");
	char out[1024];
	cr_assert_eq(ctl_run(&e, "kek retire 1", out, sizeof(out)), 1);
	cr_assert(strstr(out, "active KEK"), "%s", out);

	cr_assert_eq(ctl_run(&e, "kek rotate", out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "keyward/kek/2"), "%s", out);
	/* The service re-reads the token within its housekeeping interval;
	 * from then on new vaults are wrapped by KEK 2. */
	int kek = 0;
	for (int i = 0; i < 50 && kek != 2; i++) {
		char sub[32];
		snprintf(sub, sizeof(sub), "new-%d", i);
		kek = kek_of_new_init(&e, sub);
		if (kek != 2)
			usleep(100000);
	}
	cr_assert_eq(kek, 2);
	/* Rows of KEK 1 still unwrap. */
	vkey old = vcall(&e.d, "key", u[0].tok);
	cr_assert_eq(old.kek_id, 1);
	cr_assert_str_eq(old.mk_b64, u[0].mk);
	cr_assert_eq(ctl_run(&e, "kek retire 1", out, sizeof(out)), 1);
	cr_assert(strstr(out, "kek rewrap"), "%s", out);

	/* Rewrap while readers and rotators run. */
	volatile bool stop = false;
	churn c[2] = {
	    {.e = &e, .users = u, .from = 0, .to = NREAD, .stop = &stop},
	    {.e = &e, .users = u, .from = NREAD, .to = NREAD + NROT, .rotate = true, .stop = &stop}};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, churn_main, &c[i]);
	usleep(200000);
	int rc = ctl_run(&e, "kek rewrap --batch 3", out, sizeof(out));
	usleep(200000);
	stop = true;
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(rc, 0, "%s", out);
	cr_assert(strstr(out, "rewrapped:"), "%s", out);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(c[i].wrong, 0, "%s", c[i].why);
		cr_assert_gt(c[i].calls, 0);
	}
	cr_assert_eq(sql_long(&e.d.db, "SELECT count(*) FROM encryption_vaults WHERE kek_id <> 2"), 0);
	for (int i = 0; i < NREAD + NROT; i++) {
		vkey k = vcall(&e.d, "key", u[i].tok);
		cr_assert_eq(k.kek_id, 2);
		cr_assert_str_eq(k.mk_b64, u[i].mk);
	}
	/* Retire waits out the interval in which instances may still wrap with it. */
	for (int i = 0; i < 100; i++) {
		rc = ctl_run(&e, "kek retire 1", out, sizeof(out));
		if (rc == 0)
			break;
		cr_assert(strstr(out, "more seconds"), "%s", out);
		usleep(200000);
	}
	cr_assert_eq(rc, 0, "%s", out);
	cr_assert(strstr(out, "retired: keyward/kek/1"), "%s", out);
	cr_assert_eq(ctl_run(&e, "token status", out, sizeof(out)), 0);
	for (int i = 0; i < NREAD + NROT; i += 5)
		cr_assert_str_eq(vcall(&e.d, "key", u[i].tok).mk_b64, u[i].mk);
	cr_assert_eq(sql_long(&e.d.db, "SELECT count(*) FROM audit_log WHERE action IN ('kek.rotate', "
	                               "'kek.retire') AND actor = 'keywardctl'"),
	             2);
	cr_assert_geq(sql_long(&e.d.db, "SELECT count(*) FROM audit_log WHERE action = 'kek.rewrap'"), 1);
	cr_assert_eq(ctl_run(&e, "audit verify", out, sizeof(out)), 0, "%s", out);
	kek_env_stop(&e);
}

Test(kek, rewrap_killed_half_way_resumes, .timeout = 240)
{
	enum { N = 240 };
	kek_env e;
	kek_env_start(&e, "crash");
	static vuser u[N];
	make_users(&e, u, N, "c");
	char out[1024];
	bool interrupted = false;
	int kek = 1;
	for (int attempt = 0; attempt < 4 && !interrupted; attempt++) {
		cr_assert_eq(ctl_run(&e, "kek rotate", out, sizeof(out)), 0, "%s", out);
		kek++;
		char sql[128];
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM encryption_vaults WHERE kek_id = %d", kek);
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			char cmd[2048];
			snprintf(cmd, sizeof(cmd), "exec env %s kek rewrap --batch 2 >/dev/null 2>&1", e.ctl);
			execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
			_exit(127);
		}
		long done = 0;
		int st = 0;
		bool exited = false;
		for (int i = 0; i < 5000 && done == 0 && !exited; i++) {
			done = sql_long(&e.d.db, sql);
			exited = done == 0 && waitpid(pid, &st, WNOHANG) == pid;
		}
		cr_assert(!exited || (WIFEXITED(st) && WEXITSTATUS(st) == 0), "kek rewrap failed");
		if (exited) {
			continue;
		} else if (done > 0 && done < N) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			long after = sql_long(&e.d.db, sql);
			/* Killed before it finished: some rows moved, others did not. */
			if (WIFSIGNALED(st) && after < N) {
				interrupted = true;
				cr_assert_gt(after, 0);
			}
		} else {
			waitpid(pid, &st, 0);
		}
	}
	cr_assert(interrupted, "the rewrap always finished before it could be killed");
	/* Every user still gets their own key, from either KEK, mid-way. */
	for (int i = 0; i < N; i += 7)
		cr_assert_str_eq(vcall(&e.d, "key", u[i].tok).mk_b64, u[i].mk);
	/* Run again: it completes, and nothing was lost or wrapped twice. */
	cr_assert_eq(ctl_run(&e, "kek rewrap", out, sizeof(out)), 0, "%s", out);
	char sql[128];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM encryption_vaults WHERE kek_id = %d", kek);
	cr_assert_eq(sql_long(&e.d.db, sql), N);
	for (int i = 0; i < N; i++) {
		vkey k = vcall(&e.d, "key", u[i].tok);
		cr_assert_eq(k.status, 200);
		cr_assert_eq(k.kek_id, kek);
		cr_assert_str_eq(k.mk_b64, u[i].mk, "user %d", i);
	}
	kek_env_stop(&e);
}

Test(kek, rewrap_sets_aside_a_corrupt_row_and_retire_waits_for_it, .timeout = 240)
{
	kek_env e;
	kek_env_start(&e, "bad");
	vuser u[3];
	make_users(&e, u, 3, "b");
	/* b-1's row now holds b-0's blob: it unwraps for nobody. */
	char *r = kwt_db_admin_sql(
	    &e.d.db,
	    "WITH src AS (SELECT wrapped_mk, wrap_iv FROM encryption_vaults WHERE user_id = 'b-0'), "
	    "u AS (UPDATE encryption_vaults v SET wrapped_mk = src.wrapped_mk, wrap_iv = src.wrap_iv "
	    "FROM src WHERE v.user_id = 'b-1' RETURNING 1) SELECT count(*) FROM u");
	cr_assert_str_eq(r, "1");
	free(r);
	char out[8192];
	cr_assert_eq(ctl_run(&e, "kek rotate", out, sizeof(out)), 0, "%s", out);
	/* The others are re-wrapped; the bad row is named, left as it was, and
	 * the run fails. */
	cr_assert_eq(ctl_run(&e, "kek rewrap --batch 1", out, sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "2 vault rows and 0 secret versions re-wrapped; 1 vault rows and 0 secret "
	                      "versions do not unwrap"),
	          "%s", out);
	cr_assert(strstr(out, "user b-1\n"), "%s", out);
	cr_assert_eq(sql_long(&e.d.db, "SELECT count(*) FROM encryption_vaults WHERE kek_id = 2"), 2);
	cr_assert_eq(sql_long(&e.d.db, "SELECT kek_id FROM encryption_vaults WHERE user_id = 'b-1'"), 1);
	for (int i = 0; i < 3; i += 2) {
		vkey k = vcall(&e.d, "key", u[i].tok);
		cr_assert_eq(k.kek_id, 2);
		cr_assert_str_eq(k.mk_b64, u[i].mk);
	}
	cr_assert_str_eq(vcall(&e.d, "key", u[1].tok).error, "vault_corrupt");
	/* KEK 1 still wraps a row: not even --force retires it. */
	cr_assert_eq(ctl_run(&e, "kek retire 1 --force", out, sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "1 vault rows and secret versions are still wrapped by keyward/kek/1"), "%s",
	          out);
	/* Once the user has replaced the key, the run completes and KEK 1 can go. */
	vkey fresh = vcall(&e.d, "rotate", u[1].tok);
	cr_assert_eq(fresh.status, 200);
	cr_assert_eq(fresh.kek_id, 2);
	cr_assert_eq(ctl_run(&e, "kek rewrap", out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "rewrapped: 0 vault rows, 0 secret versions, 0 signing keys"), "%s", out);
	cr_assert_eq(ctl_run(&e, "kek retire 1 --force", out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "retired: keyward/kek/1"), "%s", out);
	cr_assert_eq(sql_long(&e.d.db, "SELECT count(*) FROM kek_retired WHERE kek_id = 1"), 1);
	cr_assert_eq(sql_long(&e.d.db, "SELECT count(*) FROM audit_log WHERE action = 'kek.rewrap' AND "
	                               "status = 'partial'"),
	             1);
	cr_assert_eq(sql_long(&e.d.db, "SELECT count(*) FROM audit_log WHERE action = 'kek.retire' AND "
	                               "context->>'forced' = 'true'"),
	             1);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(vcall(&e.d, "key", u[i].tok).status, 200);
	kek_env_stop(&e);
}

/* --- the token goes away under the service -------------------------------- */

Test(fault, hsm_unavailable_fails_closed, .timeout = 120)
{
	char fault[64], decrypt_fault[64], glitch[64], shim_env[600], real_env[600], fault_env[128],
	    dfault_env[128], glitch_env[128];
	snprintf(fault, sizeof(fault), "/tmp/kwt_vault_fault_%d", (int)getpid());
	snprintf(decrypt_fault, sizeof(decrypt_fault), "/tmp/kwt_vault_dfault_%d", (int)getpid());
	snprintf(glitch, sizeof(glitch), "/tmp/kwt_vault_glitch_%d", (int)getpid());
	unlink(fault);
	unlink(decrypt_fault);
	unlink(glitch);
	snprintf(dfault_env, sizeof(dfault_env), "KWT_P11_DECRYPT_FAULT_FILE=%s", decrypt_fault);
	snprintf(glitch_env, sizeof(glitch_env), "KWT_P11_DECRYPT_GLITCH_FILE=%s", glitch);
	snprintf(shim_env, sizeof(shim_env), "KEYWARD_HSM_MODULE=%s", KWT_P11FAULT_PATH);
	snprintf(real_env, sizeof(real_env), "KWT_P11_REAL_MODULE=%s", kwt_env("KEYWARD_HSM_MODULE"));
	snprintf(fault_env, sizeof(fault_env), "KWT_P11_FAULT_FILE=%s", fault);
	const char *env[] = {shim_env,
	                     real_env,
	                     fault_env,
	                     dfault_env,
	                     glitch_env,
	                     "KEYWARD_RATELIMIT_IP_PER_MINUTE=100000",
	                     "KEYWARD_RATELIMIT_AUTH_FAIL_PER_MINUTE=100000",
	                     NULL};
	kwt_daemon_start(&d, env);
	make_issuers(&d);
	char t1[2048], t2[2048];
	access_for(&d, issuer_auth_a, "steady", "track1", t1, sizeof(t1));
	access_for(&d, issuer_auth_a, "newcomer", "track1", t2, sizeof(t2));
	vkey k = vcall(&d, "init", t1);
	cr_assert_eq(k.status, 201);
	const char *blob_sql =
	    "SELECT encode(wrapped_mk || wrap_iv, 'hex') || kek_id || coalesce(rotated_at::text, '-') "
	    "FROM encryption_vaults WHERE user_id = 'steady'";
	char *before = kwt_db_admin_sql(&d.db, blob_sql);

	FILE *f = fopen(fault, "w");
	cr_assert_not_null(f);
	fclose(f);
	vkey r = vcall(&d, "key", t1);
	cr_assert_eq(r.status, 503);
	cr_assert_str_eq(r.error, "hsm_unavailable");
	r = vcall(&d, "rotate", t1);
	cr_assert_eq(r.status, 503);
	cr_assert_str_eq(r.error, "hsm_unavailable");
	r = vcall(&d, "init", t2);
	cr_assert_eq(r.status, 503);
	cr_assert_str_eq(r.error, "hsm_unavailable");
	kwt_resp resp;
	cr_assert_eq(kwt_http_get(&d, "/readyz", &resp), 0);
	cr_assert_eq(resp.status, 503);
	cr_assert(strstr(resp.body, "\"hsm\":\"unavailable\""), "%s", resp.body);
	kwt_resp_free(&resp);
	/* Nothing was written half-way. */
	char *during = kwt_db_admin_sql(&d.db, blob_sql);
	cr_assert_str_eq(during, before);
	free(during);
	cr_assert_eq(sql_long(&d.db, "SELECT count(*) FROM encryption_vaults WHERE user_id = 'newcomer'"), 0);
	/* Each refusal is on record. */
	kwt_audit_settle(&d);
	cr_assert_eq(sql_long(&d.db,
	                      "SELECT count(*) FROM audit_log WHERE action LIKE 'vault.%' AND status = "
	                      "'503 hsm_unavailable'"),
	             3);

	unlink(fault);
	vkey back = vcall(&d, "key", t1);
	cr_assert_eq(back.status, 200);
	cr_assert_str_eq(back.mk_b64, k.mk_b64);
	cr_assert_eq(vcall(&d, "init", t2).status, 201);
	cr_assert_eq(kwt_http_get(&d, "/readyz", &resp), 0);
	cr_assert_eq(resp.status, 200, "%s", resp.body);
	kwt_resp_free(&resp);

	/* A token that fails every decryption, with the error SoftHSM also
	 * gives for a bad tag: the row is not called corrupt. */
	f = fopen(decrypt_fault, "w");
	cr_assert_not_null(f);
	fclose(f);
	r = vcall(&d, "key", t1);
	cr_assert_eq(r.status, 503);
	cr_assert_str_eq(r.error, "hsm_unavailable");
	unlink(decrypt_fault);
	back = vcall(&d, "key", t1);
	cr_assert_eq(back.status, 200);
	cr_assert_str_eq(back.mk_b64, k.mk_b64);
	/* One failed decryption, then a sound token: the KEK passes its self
	 * test, the row is tried again and answers. */
	f = fopen(glitch, "w");
	cr_assert_not_null(f);
	fclose(f);
	back = vcall(&d, "key", t1);
	cr_assert_eq(back.status, 200, "%s", back.error);
	cr_assert_str_eq(back.mk_b64, k.mk_b64);
	cr_assert_neq(access(glitch, F_OK), 0, "the glitch was not consumed");
	kwt_audit_settle(&d);
	cr_assert_eq(sql_long(&d.db, "SELECT count(*) FROM audit_log WHERE status LIKE '409%'"), 0);
	free(before);
	kwt_daemon_stop(&d);
}
