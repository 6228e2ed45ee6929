/* boot.c — the checks keywardd makes before it serves (DESIGN §6).
 *
 * Production fails closed: a missing token, PIN, active key, database or
 * schema version stops the boot with one line saying which. Development
 * repairs what it can (creates missing keys, applies migrations) and says
 * so loudly on every boot. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "keyward/app.h"
#include "keyward/auth.h"
#include "keyward/clientip.h"
#include "keyward/log.h"
#include "keyward/migrate.h"
#include "keyward/ratelimit.h"

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
	                      .max_sessions = (unsigned)cfg->hsm_max_sessions};
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
	err = kw_migrate_current(db, &version);
	kw_db_close(db);
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
	if (err == KW_OK &&
	    (err = kw_audit_writer_start(app->hsm, cfg->db_conninfo, 256, &app->audit)) != KW_OK)
		snprintf(errbuf, errlen, "cannot start the audit writer: %s", kw_err_str(err));
	if (err != KW_OK)
		kw_app_shutdown(app);
	return err;
}

void kw_app_shutdown(kw_app *app)
{
	kw_ratelimit_free(app->rl);
	app->rl = NULL;
	kw_cidr_list_free(app->trusted);
	app->trusted = NULL;
	kw_keycache_free(app->keycache);
	app->keycache = NULL;
	if (app->audit)
		kw_audit_writer_stop(app->audit);
	app->audit = NULL;
	if (app->hsm)
		kw_hsm_close(app->hsm);
	app->hsm = NULL;
}
