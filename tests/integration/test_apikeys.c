/* test_apikeys.c — API keys and tenants against SoftHSM and PostgreSQL.
 *
 * Tenants are created as the schema owner (db.admin), as keywardctl does;
 * the repository functions run as the service's role (db.app), so row-level
 * security and column privileges apply to them. */
#include <criterion/criterion.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keyward/app/app.h"
#include "keyward/audit/audit.h"
#include "keyward/auth/apikey.h"
#include "kwtest.h"

static kwt_db tdb;
static kw_hsm *hsm;
static kw_hsm_session *s;
static kw_db *admin, *app;
static kw_audit_chain *chain;

static void setup(void)
{
	kwt_db_create(&tdb);
	hsm = kwt_hsm_open();
	cr_assert_eq(kw_hsm_session_open(hsm, &s), KW_OK);
	cr_assert_eq(kw_db_connect(tdb.admin, &admin), KW_OK);
	cr_assert_eq(kw_db_connect(tdb.app, &app), KW_OK);
	cr_assert_eq(kw_audit_chain_new(hsm, "test_apikeys", &chain), KW_OK);
}

static void teardown(void)
{
	kw_audit_chain_free(chain);
	kw_db_close(app);
	kw_db_close(admin);
	kw_hsm_session_close(s);
	kw_hsm_close(hsm);
	kwt_db_drop(&tdb);
}

TestSuite(apikeys, .init = setup, .fini = teardown, .timeout = 120);

static void hex(const unsigned char *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static char *admin_sqlf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *admin_sqlf(const char *fmt, ...)
{
	char sql[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	cr_assert(n > 0 && (size_t)n < sizeof(sql));
	return kwt_db_admin_sql(&tdb, sql);
}

static void expect_sql(const char *want, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void expect_sql(const char *want, const char *fmt, ...)
{
	char sql[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	cr_assert(n > 0 && (size_t)n < sizeof(sql));
	char *v = kwt_db_admin_sql(&tdb, sql);
	cr_assert_str_eq(v != NULL ? v : "(null)", want, "%s", sql);
	free(v);
}

static void create_tenant(const char *name, char id[37], char key[KW_APIKEY_LEN + 1])
{
	kw_err err = kw_tenant_create(admin, hsm, s, chain, name, id, key);
	cr_assert_eq(err, KW_OK, "kw_tenant_create(%s): %s", name, kw_err_str(err));
}

static const kw_hsm_key *pepper(void)
{
	const kw_hsm_key *k = NULL;
	cr_assert_eq(kw_hsm_key_active(hsm, KW_KEY_PEPPER, &k), KW_OK);
	return k;
}

/* A fresh key for tenant, inserted as the app role in a tenant-scoped
 * transaction. */
static void add_key(const char *tenant, const char *name, uint32_t scopes, int rate, kw_apikey_row *row,
                    char key[KW_APIKEY_LEN + 1])
{
	memset(row, 0, sizeof(*row));
	snprintf(row->tenant_id, sizeof(row->tenant_id), "%s", tenant);
	snprintf(row->name, sizeof(row->name), "%s", name);
	row->scopes = scopes;
	row->rate_limit_per_minute = rate;
	row->pepper_version = kw_hsm_key_version(pepper());
	cr_assert_eq(kw_apikey_generate(s, key, row->prefix), KW_OK);
	cr_assert_eq(kw_apikey_hmac(s, pepper(), key, KW_APIKEY_LEN, row->key_hmac), KW_OK);
	cr_assert_eq(kw_db_begin(app, tenant, NULL), KW_OK);
	kw_err err = kw_apikey_insert(app, row);
	cr_assert_eq(err, KW_OK, "insert: %s", kw_err_str(err));
	cr_assert_eq(kw_db_commit(app), KW_OK);
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

Test(apikeys, generate_1000_keys)
{
	enum { N = 1000 };
	char(*keys)[KW_APIKEY_LEN + 1] = calloc(N, sizeof(*keys));
	cr_assert_not_null(keys);
	regex_t re;
	cr_assert_eq(regcomp(&re, "^kw_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}$", REG_EXTENDED | REG_NOSUB), 0);
	int seen[128] = {0};
	for (int i = 0; i < N; i++) {
		char prefix[KW_APIKEY_PREFIX_LEN + 1], parsed[KW_APIKEY_PREFIX_LEN + 1];
		cr_assert_eq(kw_apikey_generate(s, keys[i], prefix), KW_OK);
		cr_assert_eq(strlen(keys[i]), KW_APIKEY_LEN);
		cr_assert_eq(regexec(&re, keys[i], 0, NULL, 0), 0, "bad shape: %s", keys[i]);
		cr_assert_eq(strncmp(keys[i], prefix, KW_APIKEY_PREFIX_LEN), 0);
		cr_assert_eq(strlen(prefix), KW_APIKEY_PREFIX_LEN);
		cr_assert_eq(kw_apikey_parse(keys[i], KW_APIKEY_LEN, parsed), KW_OK, "%s does not parse",
		             keys[i]);
		cr_assert_str_eq(parsed, prefix);
		for (int c = 3; c < KW_APIKEY_PREFIX_LEN; c++)
			seen[(unsigned char)keys[i][c]]++;
	}
	regfree(&re);
	qsort(keys, N, sizeof(*keys), cmp_keys);
	for (int i = 1; i < N; i++) {
		cr_assert_str_neq(keys[i - 1], keys[i]);
		cr_assert_neq(strncmp(keys[i - 1], keys[i], KW_APIKEY_PREFIX_LEN), 0, "public ids collide");
	}
	/* 12000 public-id characters: every one of the 62 shows up, none is
	 * wildly over-represented (expected ~194 each). */
	const char *alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	for (const char *a = alphabet; *a; a++)
		cr_assert(seen[(unsigned char)*a] > 100 && seen[(unsigned char)*a] < 300,
		          "'%c' seen %d times", *a, seen[(unsigned char)*a]);
	OPENSSL_cleanse(keys, N * sizeof(*keys));
	free(keys);
}

Test(apikeys, hmac_is_deterministic_and_key_specific)
{
	char k1[KW_APIKEY_LEN + 1], k2[KW_APIKEY_LEN + 1], p[KW_APIKEY_PREFIX_LEN + 1];
	unsigned char a[KW_HMAC_LEN], b[KW_HMAC_LEN], c[KW_HMAC_LEN];
	cr_assert_eq(kw_apikey_generate(s, k1, p), KW_OK);
	cr_assert_eq(kw_apikey_generate(s, k2, p), KW_OK);
	cr_assert_eq(kw_apikey_hmac(s, pepper(), k1, KW_APIKEY_LEN, a), KW_OK);
	cr_assert_eq(kw_apikey_hmac(s, pepper(), k1, KW_APIKEY_LEN, b), KW_OK);
	cr_assert_eq(kw_apikey_hmac(s, pepper(), k2, KW_APIKEY_LEN, c), KW_OK);
	cr_assert_eq(memcmp(a, b, KW_HMAC_LEN), 0);
	cr_assert_neq(memcmp(a, c, KW_HMAC_LEN), 0);
	cr_assert_eq(kw_apikey_hmac(s, pepper(), k1, 0, c), KW_ERR_INVALID);
}

Test(apikeys, hmac_is_hmac_sha256_of_the_whole_key)
{
	/* A known pepper imported into the session: compare with OpenSSL. */
	unsigned char value[32], got[KW_HMAC_LEN], want[EVP_MAX_MD_SIZE];
	size_t wantlen = 0;
	for (size_t i = 0; i < sizeof(value); i++)
		value[i] = (unsigned char)(0xA0 + i);
	const kw_hsm_key *k = NULL;
	cr_assert_eq(kw_hsm_test_import_key(s, KW_KEY_PEPPER, value, sizeof(value), &k), KW_OK);
	char key[KW_APIKEY_LEN + 1], p[KW_APIKEY_PREFIX_LEN + 1];
	cr_assert_eq(kw_apikey_generate(s, key, p), KW_OK);
	cr_assert_eq(kw_apikey_hmac(s, k, key, KW_APIKEY_LEN, got), KW_OK);
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
	                       OSSL_PARAM_construct_end()};
	cr_assert_eq(EVP_MAC_init(ctx, value, sizeof(value), params), 1);
	cr_assert_eq(EVP_MAC_update(ctx, (const unsigned char *)key, KW_APIKEY_LEN), 1);
	cr_assert_eq(EVP_MAC_final(ctx, want, &wantlen, sizeof(want)), 1);
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	cr_assert_eq(wantlen, KW_HMAC_LEN);
	cr_assert_eq(memcmp(got, want, KW_HMAC_LEN), 0);
}

Test(apikeys, tenant_create_stores_only_the_hmac)
{
	char id[37], key[KW_APIKEY_LEN + 1], prefix[KW_APIKEY_PREFIX_LEN + 1];
	create_tenant("acme", id, key);
	cr_assert_eq(kw_apikey_parse(key, strlen(key), prefix), KW_OK);

	unsigned char mac[KW_HMAC_LEN];
	char machex[2 * KW_HMAC_LEN + 1];
	cr_assert_eq(kw_apikey_hmac(s, pepper(), key, KW_APIKEY_LEN, mac), KW_OK);
	hex(mac, sizeof(mac), machex);

	expect_sql("acme", "SELECT name FROM tenants WHERE id = '%s'", id);
	expect_sql("1", "SELECT count(*) FROM api_keys WHERE tenant_id = '%s'", id);
	expect_sql(machex, "SELECT encode(key_hmac, 'hex') FROM api_keys WHERE prefix = '%s'", prefix);
	char ver[16];
	snprintf(ver, sizeof(ver), "%u", kw_hsm_key_version(pepper()));
	expect_sql(ver, "SELECT pepper_id FROM api_keys WHERE prefix = '%s'", prefix);
	expect_sql("{admin}", "SELECT scopes::text FROM api_keys WHERE prefix = '%s'", prefix);
	expect_sql("initial admin key", "SELECT name FROM api_keys WHERE prefix = '%s'", prefix);
	expect_sql("t",
	           "SELECT rate_limit_per_minute IS NULL AND last_used_at IS NULL AND revoked_at IS NULL "
	           "FROM api_keys WHERE prefix = '%s'",
	           prefix);
	expect_sql(id, "SELECT tenant_id FROM api_key_prefixes WHERE prefix = '%s'", prefix);
	expect_sql(
	    "1",
	    "SELECT count(*) FROM audit_log WHERE tenant_id = '%s' AND actor = 'keywardctl' AND "
	    "action = 'tenant.create' AND target = '%s' AND status = 'ok' AND context->>'name' = 'acme'",
	    id, id);

	/* The key — whole, its secret part, or their bytes as hex — is
	 * nowhere in the database. */
	const char *secret = key + KW_APIKEY_PREFIX_LEN + 1;
	char secret_only[44], key_hex[2 * KW_APIKEY_LEN + 1], secret_hex[2 * 43 + 1];
	snprintf(secret_only, sizeof(secret_only), "%.43s", secret);
	hex((const unsigned char *)key, KW_APIKEY_LEN, key_hex);
	hex((const unsigned char *)secret, 43, secret_hex);
	static const char *tables[] = {"api_keys", "api_key_prefixes", "audit_log", "audit_chains",
	                               "tenants"};
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
		expect_sql(
		    "0",
		    "SELECT count(*) FROM %s r WHERE strpos(r::text, '%s') > 0 OR strpos(r::text, '%s') > 0 "
		    "OR strpos(lower(r::text), '%s') > 0 OR strpos(lower(r::text), '%s') > 0",
		    tables[t], key, secret_only, key_hex, secret_hex);
	}
	/* The search itself finds what is there. */
	expect_sql("1", "SELECT count(*) FROM api_keys r WHERE strpos(r::text, '%s') > 0", machex);
	OPENSSL_cleanse(key, sizeof(key));
}

Test(apikeys, tenant_create_key_authenticates_through_the_directory)
{
	char id[37], key[KW_APIKEY_LEN + 1], prefix[KW_APIKEY_PREFIX_LEN + 1], tenant[37];
	create_tenant("dir-flow", id, key);
	cr_assert_eq(kw_apikey_parse(key, KW_APIKEY_LEN, prefix), KW_OK);
	/* What the middleware does, as the app role. */
	cr_assert_eq(kw_apikey_tenant_of(app, prefix, tenant), KW_OK);
	cr_assert_str_eq(tenant, id);
	cr_assert_eq(kw_db_begin(app, tenant, NULL), KW_OK);
	kw_apikey_row row;
	cr_assert_eq(kw_apikey_get_by_prefix(app, prefix, &row), KW_OK);
	cr_assert_eq(kw_db_commit(app), KW_OK);
	unsigned char mac[KW_HMAC_LEN];
	const kw_hsm_key *pk = NULL;
	cr_assert_eq(kw_hsm_key_get(hsm, KW_KEY_PEPPER, row.pepper_version, &pk), KW_OK);
	cr_assert_eq(kw_apikey_hmac(s, pk, key, KW_APIKEY_LEN, mac), KW_OK);
	cr_assert_eq(CRYPTO_memcmp(mac, row.key_hmac, KW_HMAC_LEN), 0);
	cr_assert_str_eq(row.tenant_id, id);
	cr_assert_str_eq(row.prefix, prefix);
	cr_assert_str_eq(row.name, "initial admin key");
	cr_assert_eq(row.scopes, KW_SCOPE_ADMIN);
	cr_assert_eq(row.rate_limit_per_minute, 0);
	cr_assert_str_eq(row.last_used_at, "");
	cr_assert_str_eq(row.revoked_at, "");
	regex_t re;
	cr_assert_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$", REG_EXTENDED),
	             0);
	cr_assert_eq(regexec(&re, row.created_at, 0, NULL, 0), 0, "%s", row.created_at);
	regfree(&re);

	/* An unknown prefix, or a malformed one, is not found. */
	cr_assert_eq(kw_apikey_tenant_of(app, "kw_000000000000", tenant), KW_ERR_NOT_FOUND);
	unsigned long long before = kw_db_statements();
	cr_assert_eq(kw_apikey_tenant_of(app, "kw_'; --", tenant), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_apikey_tenant_of(app, "", tenant), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_db_statements(), before);
	OPENSSL_cleanse(key, sizeof(key));
}

Test(apikeys, duplicate_tenant_name_writes_nothing)
{
	char id[37], key[KW_APIKEY_LEN + 1];
	create_tenant("twice", id, key);
	char *tenants = admin_sqlf("SELECT count(*) FROM tenants");
	char *keys = admin_sqlf("SELECT count(*) FROM api_keys");
	char *dir = admin_sqlf("SELECT count(*) FROM api_key_prefixes");
	char *audit = admin_sqlf("SELECT count(*) FROM audit_log");

	char id2[37] = "untouched", key2[KW_APIKEY_LEN + 1] = "untouched";
	cr_assert_eq(kw_tenant_create(admin, hsm, s, chain, "twice", id2, key2), KW_ERR_EXISTS);
	cr_assert_str_eq(id2, "untouched");
	cr_assert_str_eq(key2, "untouched");
	cr_assert_not(kw_db_in_tx(admin));
	expect_sql(tenants, "SELECT count(*) FROM tenants");
	expect_sql(keys, "SELECT count(*) FROM api_keys");
	expect_sql(dir, "SELECT count(*) FROM api_key_prefixes");
	expect_sql(audit, "SELECT count(*) FROM audit_log");
	free(tenants);
	free(keys);
	free(dir);
	free(audit);

	/* The chain goes on after the refusal, and the whole trail verifies. */
	create_tenant("after-twice", id2, key2);
	unsigned long long rows = 0;
	cr_assert_eq(kw_audit_verify(hsm, s, admin, NULL, &rows, NULL, 0), KW_OK);
	cr_assert_eq(rows, 2);
}

Test(apikeys, bad_tenant_names_are_refused_before_any_sql)
{
	static const char *bad[] = {"",         "tab\there", "new\nline",   "nul-free\x7f", "\xc2\x85 (NEL)",
	                            "\xff\xfe", "\xc0\xaf",  "\xed\xa0\x80"};
	char id[37] = "untouched", key[KW_APIKEY_LEN + 1] = "untouched";
	char longname[200];
	memset(longname, 'x', 129);
	longname[129] = '\0';
	unsigned long long before = kw_db_statements();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(kw_tenant_create(admin, hsm, s, chain, bad[i], id, key), KW_ERR_INVALID,
		             "name %zu", i);
	cr_assert_eq(kw_tenant_create(admin, hsm, s, chain, longname, id, key), KW_ERR_INVALID);
	cr_assert_eq(kw_tenant_create(admin, hsm, s, chain, NULL, id, key), KW_ERR_INVALID);
	cr_assert_eq(kw_db_statements(), before);
	cr_assert_str_eq(id, "untouched");
	/* 128 bytes, and non-ASCII text, are fine. */
	longname[128] = '\0';
	create_tenant(longname, id, key);
	create_tenant("Zürich \xe6\x9d\xb1\xe4\xba\xac", id, key);
	expect_sql("Zürich \xe6\x9d\xb1\xe4\xba\xac", "SELECT name FROM tenants WHERE id = '%s'", id);
}

Test(apikeys, tenant_list_as_owner)
{
	char a[37], b[37], key[KW_APIKEY_LEN + 1];
	create_tenant("list-a", a, key);
	create_tenant("list-b", b, key);
	kw_tenant_row *rows = NULL;
	size_t n = 0;
	cr_assert_eq(kw_tenant_list(admin, &rows, &n), KW_OK);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(rows[0].id, a);
	cr_assert_str_eq(rows[0].name, "list-a");
	cr_assert_str_eq(rows[1].id, b);
	cr_assert_eq(strlen(rows[1].created_at), 20);
	free(rows);
	/* The service role, outside a tenant, sees none. */
	cr_assert_eq(kw_tenant_list(app, &rows, &n), KW_OK);
	cr_assert_eq(n, 0);
	free(rows);
}

Test(apikeys, insert_list_and_scopes_round_trip)
{
	char t[37], key[KW_APIKEY_LEN + 1];
	create_tenant("rt", t, key);
	kw_apikey_row r1, r2;
	char k1[KW_APIKEY_LEN + 1], k2[KW_APIKEY_LEN + 1];
	add_key(t, "reader", KW_SCOPE_SECRETS_READ | KW_SCOPE_TRANSIT_DECRYPT, 0, &r1, k1);
	add_key(t, "issuer", KW_SCOPE_AUTH_ISSUE | KW_SCOPE_TRANSIT_ENCRYPT | KW_SCOPE_SECRETS_WRITE, 1234,
	        &r2, k2);
	cr_assert_eq(strlen(r1.id), 36);
	cr_assert_eq(strlen(r1.created_at), 20);
	expect_sql("{auth:issue,transit:encrypt,secrets:write}",
	           "SELECT scopes::text FROM api_keys WHERE id = '%s'", r2.id);

	kw_apikey_row *rows = NULL;
	size_t n = 0;
	cr_assert_eq(kw_db_begin(app, t, NULL), KW_OK);
	cr_assert_eq(kw_apikey_list(app, &rows, &n), KW_OK);
	cr_assert_eq(kw_db_commit(app), KW_OK);
	cr_assert_eq(n, 3);
	/* Newest first. */
	cr_assert_str_eq(rows[0].id, r2.id);
	cr_assert_str_eq(rows[1].id, r1.id);
	cr_assert_str_eq(rows[2].name, "initial admin key");
	cr_assert_eq(rows[0].scopes, r2.scopes);
	cr_assert_eq(rows[0].rate_limit_per_minute, 1234);
	cr_assert_str_eq(rows[0].name, "issuer");
	cr_assert_str_eq(rows[0].prefix, r2.prefix);
	cr_assert_str_eq(rows[0].tenant_id, t);
	cr_assert_eq(memcmp(rows[0].key_hmac, r2.key_hmac, KW_HMAC_LEN), 0);
	cr_assert_eq(rows[0].pepper_version, r2.pepper_version);
	cr_assert_str_eq(rows[0].created_at, r2.created_at);
	cr_assert_eq(rows[1].scopes, KW_SCOPE_SECRETS_READ | KW_SCOPE_TRANSIT_DECRYPT);
	cr_assert_eq(rows[1].rate_limit_per_minute, 0);
	cr_assert_eq(rows[2].scopes, KW_SCOPE_ADMIN);
	free(rows);

	/* A scope name this build does not know grants nothing. */
	free(admin_sqlf("UPDATE api_keys SET scopes = '{secrets:read,future:scope}' WHERE id = '%s'", r1.id));
	cr_assert_eq(kw_db_begin(app, t, NULL), KW_OK);
	kw_apikey_row got;
	cr_assert_eq(kw_apikey_get_by_prefix(app, r1.prefix, &got), KW_OK);
	kw_db_rollback(app);
	cr_assert_eq(got.scopes, KW_SCOPE_SECRETS_READ);
}

Test(apikeys, insert_validates_before_any_sql)
{
	char t[37], key[KW_APIKEY_LEN + 1];
	create_tenant("val", t, key);
	kw_apikey_row good, r;
	memset(&good, 0, sizeof(good));
	snprintf(good.tenant_id, sizeof(good.tenant_id), "%s", t);
	snprintf(good.name, sizeof(good.name), "ok");
	snprintf(good.prefix, sizeof(good.prefix), "kw_abcdefABCDEF");
	good.scopes = KW_SCOPE_ADMIN;
	good.pepper_version = 1;
	cr_assert_eq(kw_db_begin(app, t, NULL), KW_OK);
	unsigned long long before = kw_db_statements();
	r = good, r.scopes = 0;
	cr_assert_eq(kw_apikey_insert(app, &r), KW_ERR_INVALID);
	r = good, r.scopes = 1u << 20;
	cr_assert_eq(kw_apikey_insert(app, &r), KW_ERR_INVALID);
	r = good, r.name[0] = '\0';
	cr_assert_eq(kw_apikey_insert(app, &r), KW_ERR_INVALID);
	r = good, snprintf(r.name, sizeof(r.name), "bad\nname");
	cr_assert_eq(kw_apikey_insert(app, &r), KW_ERR_INVALID);
	r = good, snprintf(r.prefix, sizeof(r.prefix), "kw_abc'--");
	cr_assert_eq(kw_apikey_insert(app, &r), KW_ERR_INVALID);
	r = good, snprintf(r.tenant_id, sizeof(r.tenant_id), "not-a-tenant");
	cr_assert_eq(kw_apikey_insert(app, &r), KW_ERR_INVALID);
	r = good, r.pepper_version = 0;
	cr_assert_eq(kw_apikey_insert(app, &r), KW_ERR_INVALID);
	r = good, r.rate_limit_per_minute = -1;
	cr_assert_eq(kw_apikey_insert(app, &r), KW_ERR_INVALID);
	cr_assert_eq(kw_db_statements(), before);
	r = good;
	cr_assert_eq(kw_apikey_insert(app, &r), KW_OK);
	/* The same prefix again: refused by the database. */
	r = good;
	cr_assert_eq(kw_apikey_insert(app, &r), KW_ERR_EXISTS);
	kw_db_rollback(app);
	expect_sql("0", "SELECT count(*) FROM api_keys WHERE prefix = 'kw_abcdefABCDEF'");
}

Test(apikeys, rls_hides_other_tenants_keys)
{
	char a[37], b[37], ka[KW_APIKEY_LEN + 1], kb[KW_APIKEY_LEN + 1], pa[16], pb[16];
	create_tenant("tenant-a", a, ka);
	create_tenant("tenant-b", b, kb);
	cr_assert_eq(kw_apikey_parse(ka, KW_APIKEY_LEN, pa), KW_OK);
	cr_assert_eq(kw_apikey_parse(kb, KW_APIKEY_LEN, pb), KW_OK);
	kw_apikey_row rb, extra;
	char kx[KW_APIKEY_LEN + 1];
	add_key(a, "a-extra", KW_SCOPE_SECRETS_READ, 0, &extra, kx);
	char *b_id = admin_sqlf("SELECT id FROM api_keys WHERE prefix = '%s'", pb);
	char *b_before = admin_sqlf("SELECT r::text FROM api_keys r WHERE prefix = '%s'", pb);

	cr_assert_eq(kw_db_begin(app, a, NULL), KW_OK);
	kw_apikey_row *rows = NULL;
	size_t n = 0;
	cr_assert_eq(kw_apikey_list(app, &rows, &n), KW_OK);
	cr_assert_eq(n, 2);
	for (size_t i = 0; i < n; i++)
		cr_assert_str_eq(rows[i].tenant_id, a);
	free(rows);
	cr_assert_eq(kw_apikey_get_by_prefix(app, pb, &rb), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_apikey_revoke(app, b_id, &rb), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_apikey_touch(app, b_id), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_apikey_get_by_prefix(app, pa, &rb), KW_OK);
	cr_assert_eq(kw_db_commit(app), KW_OK);

	/* Inserting a key for B while scoped to A is refused by the policy,
	 * and the directory is not written either. */
	kw_apikey_row sneaky;
	char ks[KW_APIKEY_LEN + 1];
	memset(&sneaky, 0, sizeof(sneaky));
	snprintf(sneaky.tenant_id, sizeof(sneaky.tenant_id), "%s", b);
	snprintf(sneaky.name, sizeof(sneaky.name), "sneaky");
	sneaky.scopes = KW_SCOPE_ADMIN;
	sneaky.pepper_version = 1;
	cr_assert_eq(kw_apikey_generate(s, ks, sneaky.prefix), KW_OK);
	cr_assert_eq(kw_db_begin(app, a, NULL), KW_OK);
	cr_assert_eq(kw_apikey_insert(app, &sneaky), KW_ERR_DB);
	kw_db_rollback(app);
	expect_sql("0", "SELECT count(*) FROM api_key_prefixes WHERE prefix = '%s'", sneaky.prefix);

	/* Outside any tenant scope, nothing is visible. */
	cr_assert_eq(kw_apikey_get_by_prefix(app, pa, &rb), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_apikey_list(app, &rows, &n), KW_OK);
	cr_assert_eq(n, 0);
	free(rows);

	/* B's row, as the owner sees it, did not change. */
	expect_sql(b_before, "SELECT r::text FROM api_keys r WHERE prefix = '%s'", pb);
	free(b_id);
	free(b_before);
}

Test(apikeys, revoke_twice_keeps_the_first_time)
{
	char t[37], key[KW_APIKEY_LEN + 1];
	create_tenant("rev", t, key);
	kw_apikey_row r, out;
	char k[KW_APIKEY_LEN + 1];
	add_key(t, "to-revoke", KW_SCOPE_SECRETS_READ, 0, &r, k);

	cr_assert_eq(kw_db_begin(app, t, NULL), KW_OK);
	cr_assert_eq(kw_apikey_revoke(app, r.id, &out), KW_OK);
	cr_assert_eq(kw_db_commit(app), KW_OK);
	cr_assert_str_eq(out.id, r.id);
	cr_assert_str_eq(out.prefix, r.prefix);
	cr_assert_str_eq(out.name, "to-revoke");
	cr_assert_eq(strlen(out.revoked_at), 20);
	char *first = admin_sqlf("SELECT revoked_at::text FROM api_keys WHERE id = '%s'", r.id);
	cr_assert_not_null(first);

	/* Uppercase spelling of the id: the same key. */
	char upper[37];
	snprintf(upper, sizeof(upper), "%s", r.id);
	for (char *p = upper; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	kw_apikey_row again;
	cr_assert_eq(kw_db_begin(app, t, NULL), KW_OK);
	cr_assert_eq(kw_apikey_revoke(app, upper, &again), KW_OK);
	cr_assert_eq(kw_db_commit(app), KW_OK);
	cr_assert_str_eq(again.revoked_at, out.revoked_at);
	expect_sql(first, "SELECT revoked_at::text FROM api_keys WHERE id = '%s'", r.id);
	free(first);

	/* Unknown or malformed ids: not found; malformed ones send nothing. */
	cr_assert_eq(kw_db_begin(app, t, NULL), KW_OK);
	cr_assert_eq(kw_apikey_revoke(app, "00000000-0000-4000-8000-000000000000", &again), KW_ERR_NOT_FOUND);
	unsigned long long before = kw_db_statements();
	static const char *bad[] = {"",
	                            "42",
	                            "not-a-uuid",
	                            "' OR true --",
	                            "00000000-0000-4000-8000-00000000000g",
	                            "00000000-0000-4000-8000-0000000000000"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(kw_apikey_revoke(app, bad[i], &again), KW_ERR_NOT_FOUND, "%s", bad[i]);
	cr_assert_eq(kw_apikey_revoke(app, NULL, &again), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_db_statements(), before);
	kw_db_rollback(app);
}

Test(apikeys, touch_sets_last_used_at)
{
	char t[37], key[KW_APIKEY_LEN + 1];
	create_tenant("touch", t, key);
	kw_apikey_row r, got;
	char k[KW_APIKEY_LEN + 1];
	add_key(t, "used", KW_SCOPE_SECRETS_READ, 0, &r, k);
	cr_assert_str_eq(r.last_used_at, "");
	cr_assert_eq(kw_db_begin(app, t, NULL), KW_OK);
	cr_assert_eq(kw_apikey_touch(app, r.id), KW_OK);
	cr_assert_eq(kw_apikey_get_by_prefix(app, r.prefix, &got), KW_OK);
	cr_assert_eq(kw_db_commit(app), KW_OK);
	cr_assert_eq(strlen(got.last_used_at), 20, "%s", got.last_used_at);
	expect_sql("t", "SELECT last_used_at > now() - interval '1 minute' FROM api_keys WHERE id = '%s'",
	           r.id);
	cr_assert_eq(kw_db_begin(app, t, NULL), KW_OK);
	cr_assert_eq(kw_apikey_touch(app, "00000000-0000-4000-8000-000000000000"), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_apikey_touch(app, "nope"), KW_ERR_NOT_FOUND);
	kw_db_rollback(app);
}

/* Runs sql as the app role inside a transaction scoped to tenant, with
 * kwt.id set to id, and returns the SQLSTATE ("" on success). */
static void app_sqlstate(const char *tenant, const char *id, const char *sql, char state[6])
{
	const char *vals[1] = {id};
	cr_assert_eq(kw_db_begin(app, tenant, NULL), KW_OK);
	cr_assert_eq(kw_db_exec(app, "SELECT set_config('kwt.id', $1, true)", 1, vals, NULL, NULL, NULL),
	             KW_OK);
	PGresult *res = PQexec(kw_db_conn(app), sql);
	const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	snprintf(state, 6, "%s", st != NULL ? st : "");
	PQclear(res);
	kw_db_rollback(app);
}

#define KWT_ID "current_setting('kwt.id')::uuid"

Test(apikeys, app_role_cannot_delete_or_rewrite_keys)
{
	char t[37], key[KW_APIKEY_LEN + 1], state[6];
	create_tenant("priv", t, key);
	char *id = admin_sqlf("SELECT id FROM api_keys WHERE tenant_id = '%s'", t);
	char *before = admin_sqlf("SELECT r::text FROM api_keys r WHERE id = '%s'", id);
	static const char *stmts[] = {
	    "DELETE FROM api_keys WHERE id = " KWT_ID,
	    "UPDATE api_keys SET key_hmac = '\\x"
	    "0000000000000000000000000000000000000000000000000000000000000000' "
	    "WHERE id = " KWT_ID,
	    "UPDATE api_keys SET scopes = '{admin,secrets:read}' WHERE id = " KWT_ID,
	    "UPDATE api_keys SET tenant_id = tenant_id WHERE id = " KWT_ID,
	    "UPDATE api_keys SET prefix = 'kw_xxxxxxxxxxxx' WHERE id = " KWT_ID,
	    "UPDATE api_keys SET pepper_id = 2 WHERE id = " KWT_ID,
	    "UPDATE api_keys SET rate_limit_per_minute = 1000000 WHERE id = " KWT_ID,
	    "UPDATE api_keys SET name = 'renamed' WHERE id = " KWT_ID,
	    "DELETE FROM api_key_prefixes WHERE prefix IN (SELECT prefix FROM api_keys WHERE id = " KWT_ID
	    ")",
	    "UPDATE api_key_prefixes SET tenant_id = tenant_id",
	    /* the directory of every tenant's prefixes: one prefix at a time
	     * through keyward_api_key_tenant only (migration 0009) */
	    "SELECT count(*) FROM api_key_prefixes",
	    "TRUNCATE api_keys",
	    "TRUNCATE api_key_prefixes",
	};
	for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
		app_sqlstate(t, id, stmts[i], state);
		cr_assert_str_eq(state, "42501", "%s answered %s", stmts[i], state);
	}
	expect_sql(before, "SELECT r::text FROM api_keys r WHERE id = '%s'", id);
	/* What it may do, it can. */
	app_sqlstate(t, id, "UPDATE api_keys SET last_used_at = now(), revoked_at = NULL WHERE id = " KWT_ID,
	             state);
	cr_assert_str_eq(state, "");
	free(before);
	free(id);
}

Test(apikeys, audit_chain_verifies_after_tenant_creation)
{
	char id[37], key[KW_APIKEY_LEN + 1];
	create_tenant("audited-1", id, key);
	create_tenant("audited-2", id, key);
	unsigned long long rows = 0;
	char *report = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&report, &len);
	cr_assert_not_null(f);
	cr_assert_eq(kw_audit_verify(hsm, s, admin, f, &rows, NULL, 0), KW_OK);
	fclose(f);
	cr_assert_eq(rows, 2);
	cr_assert(strstr(report, ": ok") != NULL, "%s", report);
	free(report);
	expect_sql("2", "SELECT last_seq FROM audit_chains WHERE chain_id = '%s'", kw_audit_chain_id(chain));
	expect_sql("0", "SELECT count(*) FROM audit_log WHERE context::text LIKE '%%%s%%'",
	           key + KW_APIKEY_PREFIX_LEN + 1);
}

/* keywardctl tenant create / list, as an operator runs them. */
static int run_ctl(const char *args, char *out, size_t outcap, char *err, size_t errcap)
{
	const char *build = getenv("KW_BUILD_DIR");
	char cmd[4096], errpath[] = "/tmp/kwt_ctl_err_XXXXXX";
	int fd = mkstemp(errpath);
	cr_assert(fd >= 0);
	close(fd);
	snprintf(cmd, sizeof(cmd),
	         "KEYWARD_DB_ADMIN_CONNINFO='%s' KEYWARD_DB_CONNINFO='%s' '%s/keywardctl' %s 2>'%s'",
	         tdb.admin, tdb.app, build != NULL ? build : ".", args, errpath);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	size_t n = fread(out, 1, outcap - 1, p);
	out[n] = '\0';
	int st = pclose(p);
	FILE *e = fopen(errpath, "r");
	cr_assert_not_null(e);
	n = fread(err, 1, errcap - 1, e);
	err[n] = '\0';
	fclose(e);
	unlink(errpath);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(apikeys, keywardctl_tenant_create_and_list)
{
	char out[4096], err[4096], id[64] = "", key[128] = "", prefix[16];
	cr_assert_eq(run_ctl("tenant create ctl-one", out, sizeof(out), err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(sscanf(out, "tenant_id: %63s\napi_key: %127s\n", id, key), 2, "%s", out);
	/* Exactly two lines on stdout. */
	char want[512];
	snprintf(want, sizeof(want), "tenant_id: %s\napi_key: %s\n", id, key);
	cr_assert_str_eq(out, want);
	cr_assert(strstr(err, "this key is shown once; store it now") != NULL, "%s", err);
	cr_assert_eq(kw_apikey_parse(key, strlen(key), prefix), KW_OK);
	expect_sql(id, "SELECT tenant_id FROM api_key_prefixes WHERE prefix = '%s'", prefix);

	cr_assert_eq(run_ctl("tenant create ctl-one", out, sizeof(out), err, sizeof(err)), 1);
	cr_assert_str_eq(out, "");
	cr_assert(strstr(err, "keywardctl: a tenant named ctl-one exists already") != NULL, "%s", err);
	cr_assert_eq(run_ctl("tenant create", out, sizeof(out), err, sizeof(err)), 2);
	cr_assert_eq(
	    run_ctl("tenant create \"$(printf 'bad\\001name')\"", out, sizeof(out), err, sizeof(err)), 2,
	    "%s", err);

	cr_assert_eq(run_ctl("tenant list", out, sizeof(out), err, sizeof(err)), 0, "%s", err);
	cr_assert(strstr(out, id) != NULL && strstr(out, "ctl-one") != NULL, "%s", out);
	cr_assert(strstr(out, key + KW_APIKEY_PREFIX_LEN) == NULL);

	cr_assert_eq(run_ctl("audit verify", out, sizeof(out), err, sizeof(err)), 0, "%s%s", out, err);
}
