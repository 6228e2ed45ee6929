/* boot.c — the checks keywardd makes before it serves (DESIGN §6).
 *
 * Production fails closed: a missing token, PIN, active key, database or
 * schema version stops the boot with one line saying which. Development
 * repairs what it can (creates missing keys, applies migrations) and says
 * so loudly on every boot. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/app/app.h"
#include "keyward/auth/apikey.h"
#include "keyward/auth/revocation.h"
#include "keyward/auth/signature.h"
#include "keyward/auth/tokens.h"
#include "keyward/core/log.h"
#include "keyward/db/changes.h"
#include "keyward/db/migrate.h"
#include "keyward/http/clientip.h"
#include "keyward/http/ratelimit.h"
#include "keyward/vault/transit_cache.h"

__attribute__((format(printf, 4, 5))) static kw_err fail(char *errbuf, size_t errlen, kw_err err,
                                                         const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
	return err;
}

static kw_err boot_hsm(kw_app *app, kw_config *cfg, char *errbuf, size_t errlen)
{
	if (cfg->hsm_pin_source[0] == '\0')
		return fail(errbuf, errlen, KW_ERR_CONFIG, "hsm.pin_source is not set%s", "");
	if (access(cfg->hsm_pin_source, R_OK) != 0)
		return fail(errbuf, errlen, KW_ERR_CONFIG, "cannot read the PIN file %s",
		            cfg->hsm_pin_source);
	kw_hsm_options opt = {.module_path = cfg->hsm_module,
	                      .token_uri = cfg->hsm_uri,
	                      .pin_file = cfg->hsm_pin_source,
	                      .max_sessions = (unsigned)cfg->hsm_max_sessions,
	                      .token_objects_only = !cfg->hsm_session_copies};
	kw_err err = kw_hsm_open(&opt, &app->hsm);
	switch (err) {
	case KW_OK:
		break;
	case KW_ERR_NOT_FOUND:
		return fail(errbuf, errlen, err, "no token matches %s (or its module/PIN file is missing)",
		            kw_config_printable_uri(cfg->hsm_uri));
	case KW_ERR_PIN:
		return fail(errbuf, errlen, err, "the token refused the PIN from %s, or the PIN is locked",
		            cfg->hsm_pin_source);
	default:
		return fail(errbuf, errlen, err, "cannot open the token %s with module %s: %s",
		            kw_config_printable_uri(cfg->hsm_uri), cfg->hsm_module, kw_err_str(err));
	}
	/* An object labelled like a key family that keyward did not create (a
	 * key of known value planted by someone with the PIN) is never used;
	 * in production its mere presence stops the boot. */
	char planted[192];
	size_t nplanted = kw_hsm_refused_keys(app->hsm, planted, sizeof(planted));
	if (nplanted > 0 && !cfg->development)
		return fail(errbuf, errlen, KW_ERR_HSM,
		            "%zu token object(s) carry a keyward key label but are not what keyward creates, "
		            "e.g. %s; "
		            "keywardctl token status lists them",
		            nplanted, planted);
	if (nplanted > 0)
		kw_warn(
		    "DEVELOPMENT MODE: %zu token object(s) refused as keys (%s); production would not boot",
		    nplanted, planted);
	for (int f = 0; f < KW_KEY_FAMILY_COUNT; f++) {
		const kw_hsm_key *k;
		if (kw_hsm_key_active(app->hsm, (kw_key_family)f, &k) == KW_OK)
			continue;
		if (!cfg->development)
			return fail(errbuf, errlen, KW_ERR_NOT_FOUND,
			            "no active %s key in the token (run keywardctl token init)",
			            kw_key_family_name((kw_key_family)f));
		kw_hsm_session *s = NULL;
		int created = 0;
		err = kw_hsm_session_open(app->hsm, &s);
		if (err == KW_OK)
			err = kw_hsm_token_init(s, &created);
		kw_hsm_session_close(s);
		if (err != KW_OK)
			return fail(errbuf, errlen, err, "development: cannot create keys: %s",
			            kw_err_str(err));
		kw_warn("DEVELOPMENT MODE: created %d missing key families in the token", created);
		break;
	}
	return KW_OK;
}

static kw_err boot_db(kw_app *app, kw_config *cfg, char *errbuf, size_t errlen)
{
	(void)app;
	if (cfg->db_conninfo[0] == '\0')
		return fail(errbuf, errlen, KW_ERR_CONFIG, "db.conninfo is not set%s", "");
	kw_err err = KW_OK;
	if (cfg->development || cfg->db_migrate_on_boot) {
		const char *ci = cfg->db_admin_conninfo[0] ? cfg->db_admin_conninfo : cfg->db_conninfo;
		kw_db *adb = NULL;
		int applied = 0;
		if ((err = kw_db_connect(ci, &adb)) != KW_OK)
			return fail(errbuf, errlen, err, "cannot connect to the database for migrations%s",
			            "");
		err = kw_migrate_up(adb, cfg->db_migrations_dir, &applied);
		kw_db_close(adb);
		if (err != KW_OK)
			return fail(errbuf, errlen, err, "migrations from %s failed", cfg->db_migrations_dir);
		if (applied > 0)
			kw_warn("%sapplied %d migration(s) at boot",
			        cfg->development ? "DEVELOPMENT MODE: " : "", applied);
	}
	kw_db *db = NULL;
	if ((err = kw_db_connect(cfg->db_conninfo, &db)) != KW_OK)
		return fail(errbuf, errlen, err, "cannot connect to the database (db.conninfo)%s", "");
	int version = 0;
	bool bypasses = false;
	err = kw_migrate_current(db, &version);
	/* Every tenant boundary is row-level security: a service role that
	 * escapes it would serve every tenant's rows to a wrong query. */
	kw_err rls_err = err == KW_OK ? kw_db_role_bypasses_rls(db, &bypasses) : KW_OK;
	kw_db_close(db);
	if (rls_err != KW_OK)
		return fail(errbuf, errlen, rls_err, "cannot read the service role's attributes: %s",
		            kw_err_str(rls_err));
	if (bypasses && !cfg->development)
		return fail(errbuf, errlen, KW_ERR_CONFIG,
		            "db.conninfo logs in as a superuser or a BYPASSRLS role, which row-level "
		            "security does not "
		            "bind; use a role IN ROLE keyward_app%s",
		            "");
	if (bypasses)
		kw_warn("DEVELOPMENT MODE: db.conninfo's role bypasses row-level security; production would "
		        "not boot");
	if (err != KW_OK)
		return fail(errbuf, errlen, err, "cannot read the schema version: %s", kw_err_str(err));
	if (version < KW_SCHEMA_VERSION) {
		char v[64];
		snprintf(v, sizeof(v), "%d, this build needs %d", version, KW_SCHEMA_VERSION);
		return fail(errbuf, errlen, KW_ERR_CONFIG,
		            "database schema version is %s (run keywardctl migrate up)", v);
	}
	return KW_OK;
}

/* Roles, token lifetimes, the JWT key set, the caches and the revocation
 * listener. */
static kw_err boot_tokens(kw_app *app, kw_config *cfg, char *errbuf, size_t errlen)
{
	app->roles = calloc(1, sizeof(*app->roles));
	if (app->roles == NULL)
		return fail(errbuf, errlen, KW_ERR_NOMEM, "out of memory%s", "");
	if (kw_roles_parse(cfg->roles, app->roles) != KW_OK)
		return fail(errbuf, errlen, KW_ERR_CONFIG,
		            "auth.roles: expected \"name ttl [permission ...], ...\" with ttl 1m..24h: %s",
		            cfg->roles);
	if (kw_roles_find(app->roles, cfg->wallet_role) == NULL)
		return fail(errbuf, errlen, KW_ERR_CONFIG, "auth.wallet_role %s is not in auth.roles",
		            cfg->wallet_role);
	if (cfg->refresh_grace_s > 60)
		return fail(errbuf, errlen, KW_ERR_CONFIG, "auth.refresh_grace must be at most 60s%s", "");
	if (cfg->refresh_sliding_ttl_s < 60 || cfg->refresh_absolute_ttl_s < cfg->refresh_sliding_ttl_s)
		return fail(errbuf, errlen, KW_ERR_CONFIG,
		            "auth.refresh_sliding_ttl must be >= 1m and <= auth.refresh_absolute_ttl%s", "");
	if (cfg->jwt_leeway_s > 300 || cfg->revocation_stale_ms < 1000 || cfg->refresh_per_minute < 1 ||
	    cfg->housekeeping_batch < 1 || cfg->housekeeping_interval_s < 1 || cfg->wallet_nonce_ttl_s < 10)
		return fail(errbuf, errlen, KW_ERR_CONFIG,
		            "auth: leeway <= 5m, revocation_stale_ms >= 1000, refresh_per_minute >= 1, "
		            "housekeeping_batch >= 1, housekeeping_interval >= 1s, wallet_nonce_ttl >= 10s%s",
		            "");
	int64_t max_ttl = 0;
	for (size_t i = 0; i < app->roles->n; i++)
		if (app->roles->roles[i].ttl_s > max_ttl)
			max_ttl = app->roles->roles[i].ttl_s;
	app->access_ttl_max_s = max_ttl + cfg->jwt_leeway_s;
	kw_err err = kw_jwt_keyset_load(app->hsm, &app->jwks);
	if (err != KW_OK)
		return fail(errbuf, errlen, err, "cannot read the JWT keys from the token: %s",
		            kw_err_str(err));
	app->tokcache = kw_tokcache_new((size_t)(cfg->token_cache_size > 0 ? cfg->token_cache_size : 1));
	if (app->tokcache == NULL)
		return fail(errbuf, errlen, KW_ERR_NOMEM, "out of memory%s", "");
	err = kw_revcache_start(cfg->db_conninfo, cfg->revocation_stale_ms, &app->revs);
	if (err != KW_OK)
		return fail(errbuf, errlen, err, "cannot start the revocation listener: %s", kw_err_str(err));
	if (!kw_revcache_wait_ready(app->revs, 5000))
		return fail(errbuf, errlen, KW_ERR_DB_UNAVAILABLE,
		            "the revocation list (jwt_revocations) could not be loaded%s", "");
	return KW_OK;
}

static void transit_apply(void *arg, const kw_change *c)
{
	kw_app *app = arg;
	if (strcmp(c->kind, "transit_key") == 0)
		kw_transit_cache_drop(app->transit_keys, c->tenant_id, c->subject);
	else if (strcmp(c->kind, "signing_key") == 0)
		kw_sigcache_drop(app->sigkeys, c->subject);
	else if (strcmp(c->kind, "api_key") == 0)
		kw_keycache_forget(app->keycache, c->subject);
	else if (strcmp(c->kind, "token_keys") == 0)
		kw_app_keys_refresh(app);
}

static void transit_reset(void *arg)
{
	kw_app *app = arg;
	kw_transit_cache_clear(app->transit_keys);
	kw_sigcache_clear(app->sigkeys);
	kw_keycache_clear(app->keycache);
}

static void transit_tick(void *arg)
{
	kw_transit_cache_sweep(((kw_app *)arg)->transit_keys);
}

/* The transit key cache and the change feed that keeps it true. */
static kw_err boot_changes(kw_app *app, kw_config *cfg, char *errbuf, size_t errlen)
{
	if (cfg->transit_cache_size < 0 || cfg->transit_cache_size > 1000000 || cfg->transit_cache_idle_s < 1)
		return fail(errbuf, errlen, KW_ERR_CONFIG,
		            "transit.cache_size must be 0 .. 1000000 and transit.cache_idle at least 1s%s",
		            "");
	app->transit_keys = kw_transit_cache_new(
	    (size_t)cfg->transit_cache_size,
	    (int)(cfg->transit_cache_idle_s > INT32_MAX ? INT32_MAX : cfg->transit_cache_idle_s));
	if (app->transit_keys == NULL)
		return fail(errbuf, errlen, KW_ERR_NOMEM, "out of memory for transit.cache_size keys%s", "");
	app->sigkeys = kw_sigcache_new(4096, 300);
	if (app->sigkeys == NULL)
		return fail(errbuf, errlen, KW_ERR_NOMEM, "out of memory for the signing-key cache%s", "");
	const kw_change_sink sink = {
	    .apply = transit_apply, .reset = transit_reset, .tick = transit_tick, .arg = app};
	kw_err err = kw_changes_start(cfg->db_conninfo, &sink, 1, &app->changes);
	if (err != KW_OK)
		return fail(errbuf, errlen, err, "cannot start the change feed: %s", kw_err_str(err));
	if (!kw_changes_wait_ready(app->changes, 5000))
		return fail(errbuf, errlen, KW_ERR_DB_UNAVAILABLE,
		            "the change feed (table changes) could not be followed%s", "");
	return KW_OK;
}

kw_err kw_app_boot(kw_app *app, kw_config *cfg, char *errbuf, size_t errlen)
{
	memset(app, 0, sizeof(*app));
	app->cfg = cfg;
	if (cfg->development)
		kw_warn("DEVELOPMENT MODE: keys and schema are created on demand; never use this mode in "
		        "production");
	if (kw_cidr_list_parse(cfg->trusted_proxies, &app->trusted) != KW_OK)
		return fail(errbuf, errlen, KW_ERR_CONFIG,
		            "http.trusted_proxies: not a list of IPs/CIDRs: %s", cfg->trusted_proxies);
	app->rl = kw_ratelimit_new(1 << 16);
	app->keycache = kw_keycache_new(4096);
	if (app->rl == NULL || app->keycache == NULL) {
		kw_app_shutdown(app);
		return fail(errbuf, errlen, KW_ERR_NOMEM, "out of memory%s", "");
	}
	kw_err err = boot_hsm(app, cfg, errbuf, errlen);
	if (err == KW_OK)
		err = boot_db(app, cfg, errbuf, errlen);
	if (err == KW_OK)
		err = boot_tokens(app, cfg, errbuf, errlen);
	if (err == KW_OK)
		err = boot_changes(app, cfg, errbuf, errlen);
	if (err == KW_OK &&
	    (err = kw_audit_writer_start(app->hsm, cfg->db_conninfo, 256, &app->audit)) != KW_OK)
		snprintf(errbuf, errlen, "cannot start the audit writer: %s", kw_err_str(err));
	if (err != KW_OK)
		kw_app_shutdown(app);
	return err;
}

void kw_app_shutdown(kw_app *app)
{
	/* Each part is stopped or freed, and forgotten, in the reverse order of boot. */
#define DROP(fn, member) (fn(app->member), app->member = NULL)
	DROP(kw_housekeeper_stop, housekeeper);
	DROP(kw_changes_stop, changes);
	DROP(kw_transit_cache_free, transit_keys);
	DROP(kw_sigcache_free, sigkeys);
	DROP(kw_revcache_stop, revs);
	DROP(kw_tokcache_free, tokcache);
	DROP(kw_jwt_keyset_free, jwks);
	DROP(free, roles);
	DROP(kw_ratelimit_free, rl);
	DROP(kw_cidr_list_free, trusted);
	DROP(kw_keycache_free, keycache);
#undef DROP
	if (app->audit)
		kw_audit_writer_stop(app->audit);
	app->audit = NULL;
	if (app->hsm)
		kw_hsm_close(app->hsm);
	app->hsm = NULL;
}
