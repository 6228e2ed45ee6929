/* Boot of keywardd: production fails closed with one clear line for each
 * missing part; development provisions what is missing and says so. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keyward/db/migrate.h"
#include "kwtest.h"
#include "kwtest_http.h"

static kwt_db db;

static void setup(void)
{
	kw_hsm_close(kwt_hsm_open());
	kwt_db_create(&db);
}

static void teardown(void)
{
	kwt_db_drop(&db);
}

TestSuite(boot, .init = setup, .fini = teardown, .timeout = 120);

static void expect_refusal(const char *const *env, const char *needle)
{
	char line[1024];
	int st = kwt_daemon_boot_fails(&db, env, line, sizeof(line));
	cr_assert_neq(st, 0, "keywardd booted; wanted a refusal mentioning \"%s\"", needle);
	cr_assert_lt(st, 128, "keywardd crashed (status %d) instead of refusing", st);
	cr_assert(strstr(line, needle) != NULL, "last line \"%s\" does not say \"%s\"", line, needle);
	cr_assert(strncmp(line, "keywardd: ", 10) == 0, "not keywardd's own line: %s", line);
}

Test(boot, production_refuses_missing_token)
{
	const char *env[] = {"KEYWARD_HSM_URI=pkcs11:token=no-such-token", NULL};
	expect_refusal(env, "no token matches pkcs11:token=no-such-token");
}

Test(boot, production_refuses_missing_pin)
{
	const char *env[] = {"KEYWARD_HSM_PIN_SOURCE=/nonexistent/pin", NULL};
	expect_refusal(env, "/nonexistent/pin");
}

Test(boot, production_refuses_unset_pin_source)
{
	const char *env[] = {"KEYWARD_HSM_PIN_SOURCE=", NULL};
	expect_refusal(env, "hsm.pin_source is not set");
}

/* A token with no keyward keys: a second token in the same SoftHSM store. */
static void empty_token(char *label, size_t lcap, char *pinfile, size_t pcap)
{
	snprintf(label, lcap, "kw-empty-%d", (int)getpid());
	snprintf(pinfile, pcap, "/tmp/kw-empty-%d.pin", (int)getpid());
	FILE *f = fopen(pinfile, "w");
	cr_assert_not_null(f);
	fputs("87654321\n", f);
	fclose(f);
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
	         "softhsm2-util --init-token --free --label %s --pin 87654321 --so-pin 12345678 >/dev/null",
	         label);
	cr_assert_eq(system(cmd), 0);
}

static void delete_token(const char *label)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "softhsm2-util --delete-token --token %s >/dev/null 2>&1", label);
	cr_assert_eq(system(cmd), 0);
}

Test(boot, production_refuses_token_without_keys)
{
	char label[64], pin[128], uri[128], pinenv[160];
	empty_token(label, sizeof(label), pin, sizeof(pin));
	snprintf(uri, sizeof(uri), "KEYWARD_HSM_URI=pkcs11:token=%s", label);
	snprintf(pinenv, sizeof(pinenv), "KEYWARD_HSM_PIN_SOURCE=%s", pin);
	const char *env[] = {uri, pinenv, NULL};
	expect_refusal(env, "no active kek key in the token");
	delete_token(label);
	unlink(pin);
}

Test(boot, production_refuses_missing_database)
{
	char ci[600];
	snprintf(ci, sizeof(ci), "KEYWARD_DB_CONNINFO=%s dbname=no_such_db_kw", db.app);
	const char *env[] = {ci, NULL};
	expect_refusal(env, "cannot connect to the database");
}

Test(boot, production_refuses_old_schema)
{
	kwt_db empty;
	kwt_db_create(&empty);
	free(kwt_db_admin_sql(&empty, "DELETE FROM schema_migrations"));
	char ci[600];
	snprintf(ci, sizeof(ci), "KEYWARD_DB_CONNINFO=%s", empty.app);
	const char *env[] = {ci, NULL};
	expect_refusal(env, "database schema version is 0, this build needs");
	kwt_db_drop(&empty);
}

/* The service's role must be bound by row-level security. */
Test(boot, production_refuses_a_service_role_that_bypasses_rls)
{
	char ci[700];
	snprintf(ci, sizeof(ci), "KEYWARD_DB_CONNINFO=%s", db.admin); /* a superuser */
	const char *env[] = {ci, NULL};
	expect_refusal(env, "superuser or a BYPASSRLS role");
}

Test(boot, production_refuses_plain_http_on_public_address)
{
	const char *env[] = {"KEYWARD_HTTP_LISTEN=0.0.0.0:0", NULL};
	expect_refusal(env, "plain HTTP on non-loopback 0.0.0.0:0 refused");
}

Test(boot, development_refuses_public_listener)
{
	const char *env[] = {"KEYWARD_MODE=development", "KEYWARD_HTTP_LISTEN=0.0.0.0:0",
	                     "KEYWARD_HTTP_ALLOW_INSECURE_HTTP=true", NULL};
	expect_refusal(env, "development mode refuses the non-loopback listener");
}

Test(boot, bad_config_value_is_refused)
{
	const char *env[] = {"KEYWARD_HTTP_WORKERS=many", NULL};
	expect_refusal(env, "KEYWARD_HTTP_WORKERS");
}

Test(boot, development_provisions_keys_and_schema)
{
	char label[64], pin[128], uri[160], pinenv[160], mig[600];
	empty_token(label, sizeof(label), pin, sizeof(pin));
	snprintf(uri, sizeof(uri), "KEYWARD_HSM_URI=pkcs11:token=%s", label);
	snprintf(pinenv, sizeof(pinenv), "KEYWARD_HSM_PIN_SOURCE=%s", pin);
	free(kwt_db_admin_sql(&db, "DELETE FROM schema_migrations"));
	free(kwt_db_admin_sql(
	    &db, "DROP TABLE api_key_prefixes, api_keys, audit_log, audit_chains, tenants CASCADE"));
	snprintf(mig, sizeof(mig), "KEYWARD_DB_MIGRATIONS_DIR=%s/migrations", getenv("KW_SOURCE_DIR"));
	const char *env[] = {"KEYWARD_MODE=development", uri, pinenv, mig, NULL};
	/* kwt_daemon_start makes its own database; boot on `db` instead. */
	kwt_daemon dd;
	memset(&dd, 0, sizeof(dd));
	char dbenv[600], adminenv[600];
	snprintf(dbenv, sizeof(dbenv), "KEYWARD_DB_CONNINFO=%s", db.app);
	snprintf(adminenv, sizeof(adminenv), "KEYWARD_DB_ADMIN_CONNINFO=%s", db.admin);
	const char *env2[] = {env[0], env[1], env[2], env[3], dbenv, adminenv, NULL};
	kwt_daemon_start(&dd, env2);
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&dd, "/readyz", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	char *log = kwt_daemon_log(&dd);
	cr_assert(strstr(log, "DEVELOPMENT MODE: created 5 missing key families"), "%s", log);
	char applied[64];
	snprintf(applied, sizeof(applied), "applied %d migration", KW_SCHEMA_VERSION);
	cr_assert(strstr(log, applied), "%s", log);
	free(log);
	cr_assert_eq(kwt_daemon_stop(&dd), 0);
	char *v = kwt_db_admin_sql(&db, "SELECT max(version) FROM schema_migrations");
	cr_assert_eq(atoi(v), KW_SCHEMA_VERSION);
	free(v);
	delete_token(label);
	unlink(pin);
}

/* A key of known value planted under the next KEK label by someone with
 * the PIN: production does not boot on such a token, a running instance
 * stops answering ready, `token status` names it. */
static uint32_t plant_next_kek(void)
{
	kw_hsm *hsm = kwt_hsm_open();
	kw_hsm_session *s = NULL;
	cr_assert_eq(kw_hsm_session_open(hsm, &s), KW_OK);
	const kw_hsm_key *k = NULL;
	cr_assert_eq(kw_hsm_key_active(hsm, KW_KEY_KEK, &k), KW_OK);
	uint32_t v = kw_hsm_key_version(k) + 1;
	const unsigned char known[32] = {0x42};
	cr_assert_eq(kw_hsm_test_plant_key(s, KW_KEY_KEK, v, known, sizeof(known)), KW_OK);
	kw_hsm_session_close(s);
	kw_hsm_close(hsm);
	return v;
}

static void remove_kek(uint32_t v)
{
	kw_hsm *hsm = kwt_hsm_open();
	kw_hsm_session *s = NULL;
	cr_assert_eq(kw_hsm_session_open(hsm, &s), KW_OK);
	cr_assert_eq(kw_hsm_key_destroy(s, KW_KEY_KEK, v), KW_OK);
	kw_hsm_session_close(s);
	kw_hsm_close(hsm);
}

Test(boot, production_refuses_a_token_with_a_planted_key)
{
	uint32_t v = plant_next_kek();
	expect_refusal(NULL, "carry a keyward key label but are not what keyward creates");
	char bin[600], cmd[1200], out[4096];
	snprintf(cmd, sizeof(cmd), "%s token status 2>&1", kwt_bin_sh("keywardctl", bin, sizeof(bin)));
	FILE *p = popen(cmd, "r");
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	int st = pclose(p);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "token status: %d\n%s", st, out);
	cr_assert_not_null(strstr(out, "REFUSED: CKA_LOCAL is false"), "%s", out);
	remove_kek(v);
}

Test(boot, a_running_instance_is_not_ready_while_a_planted_key_exists)
{
	static const char *const env[] = {"KEYWARD_AUTH_HOUSEKEEPING_INTERVAL=1s", NULL};
	kwt_daemon dd;
	kwt_daemon_start(&dd, env);
	kwt_resp r;
	cr_assert_eq(kwt_http_get(&dd, "/readyz", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	kwt_resp_free(&r);
	uint32_t v = plant_next_kek();
	usleep(2500 * 1000); /* the next re-read of the token's keys */
	cr_assert_eq(kwt_http_get(&dd, "/readyz", &r), 0);
	cr_assert_eq(r.status, 503, "%s", r.body);
	cr_assert_not_null(strstr(r.body, "refused_keys"), "%s", r.body);
	kwt_resp_free(&r);
	char *log = kwt_daemon_log(&dd);
	cr_assert_not_null(strstr(log, "REFUSED keyward/kek/"), "%s", log);
	free(log);
	remove_kek(v);
	kwt_daemon_stop(&dd);
}
