/* keywardctl — provisioning and maintenance for keyward.
 *
 * One function per subcommand behind one table. It reads the same config
 * as keywardd (-c, then KEYWARD_* overrides), talks to the token through
 * src/hsm and to PostgreSQL as the schema owner (db.admin_conninfo). It
 * never prints a key or a PIN; the only secrets it ever prints are
 * credentials created for the operator, once. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "keyward-sign.h"
#include "keyward/app/app.h"
#include "keyward/audit/audit.h"
#include "keyward/auth/apikey.h"
#include "keyward/auth/jwt.h"
#include "keyward/auth/tokens.h"
#include "keyward/core/config.h"
#include "keyward/core/log.h"
#include "keyward/core/secret.h"
#include "keyward/core/text.h"
#include "keyward/db/db.h"
#include "keyward/db/migrate.h"
#include "keyward/db/repo_secrets.h"
#include "keyward/db/repo_transit.h"
#include "keyward/db/sessions.h"
#include "keyward/hsm/hsm.h"
#include "keyward/vault/secrets.h"
#include "keyward/vault/signing.h"
#include "keyward/vault/vault.h"

typedef struct kw_ctl {
	kw_config cfg;
	kw_hsm *hsm;
	kw_hsm_session *session;
	kw_db *db;
	int argc;
	char **argv;
} kw_ctl;

static int ctl_fail(const char *what, kw_err err)
{
	fprintf(stderr, "keywardctl: %s: %s\n", what, kw_err_str(err));
	return 1;
}

static kw_err ctl_hsm(kw_ctl *c)
{
	if (c->session)
		return KW_OK;
	if (c->cfg.hsm_pin_source[0] == '\0') {
		fprintf(stderr, "keywardctl: hsm.pin_source is not set\n");
		return KW_ERR_CONFIG;
	}
	kw_hsm_options opt = {.module_path = c->cfg.hsm_module,
	                      .token_uri = c->cfg.hsm_uri,
	                      .pin_file = c->cfg.hsm_pin_source,
	                      .max_sessions = 4};
	kw_err err = kw_hsm_open(&opt, &c->hsm);
	if (err == KW_OK)
		err = kw_hsm_session_open(c->hsm, &c->session);
	if (err != KW_OK)
		fprintf(stderr, "keywardctl: cannot open token %s: %s\n",
		        kw_config_printable_uri(c->cfg.hsm_uri), kw_err_str(err));
	return err;
}

static kw_err ctl_db(kw_ctl *c)
{
	if (c->db)
		return KW_OK;
	const char *ci = c->cfg.db_admin_conninfo[0] ? c->cfg.db_admin_conninfo : c->cfg.db_conninfo;
	kw_err err = kw_db_connect(ci, &c->db);
	if (err != KW_OK)
		fprintf(stderr, "keywardctl: cannot connect to the database (db.admin_conninfo): %s\n",
		        kw_err_str(err));
	return err;
}

static int cmd_token_init(kw_ctl *c)
{
	kw_err err = ctl_hsm(c);
	int created = 0;
	if (err == KW_OK)
		err = kw_hsm_token_init(c->session, &created);
	if (err != KW_OK)
		return ctl_fail("token init", err);
	printf("token init: created %d key famil%s, kept the rest\n", created, created == 1 ? "y" : "ies");
	return 0;
}

static int cmd_token_status(kw_ctl *c)
{
	kw_hsm_key_info infos[128];
	size_t n = 0;
	kw_err err = ctl_hsm(c);
	if (err == KW_OK)
		err = kw_hsm_key_list(c->session, infos, 128, &n);
	if (err != KW_OK)
		return ctl_fail("token status", err);
	printf("%-22s %-7s %-7s %-6s %-9s %-11s %-17s\n", "LABEL", "VERSION", "ACTIVE", "OBJECT", "SENSITIVE",
	       "EXTRACTABLE", "NEVER_EXTRACTABLE");
	int unsafe = 0, refused = 0;
	for (size_t i = 0; i < n; i++) {
		const kw_hsm_key_info *k = &infos[i];
		printf("%-22s %-7u %-7s %-6s %-9s %-11s %-17s%s%s\n", k->label, k->version,
		       k->active ? "yes" : "no",
		       k->family == KW_KEY_JWT ? (k->is_private_half ? "priv" : "pub") : "secret",
		       k->sensitive ? "true" : "false", k->extractable ? "true" : "false",
		       k->never_extractable ? "true" : "false", k->refused[0] ? " REFUSED: " : "",
		       k->refused);
		bool is_public = k->family == KW_KEY_JWT && !k->is_private_half;
		if (!is_public && (!k->sensitive || k->extractable || !k->never_extractable))
			unsafe++;
		refused += k->refused[0] != '\0';
	}
	if (unsafe)
		fprintf(stderr, "keywardctl: %d key object(s) are extractable or not sensitive\n", unsafe);
	if (refused)
		fprintf(
		    stderr,
		    "keywardctl: %d object(s) carry a keyward label but are not what keyward creates; "
		    "keywardd "
		    "never uses them and refuses to boot in production while they exist. Find out who made "
		    "them, then destroy them.\n",
		    refused);
	return unsafe || refused ? 1 : 0;
}

static int cmd_migrate(kw_ctl *c)
{
	const char *sub = c->argc > 0 ? c->argv[0] : "status";
	kw_err err = ctl_db(c);
	if (err != KW_OK)
		return 1;
	if (strcmp(sub, "up") == 0) {
		int applied = 0;
		if ((err = kw_migrate_up(c->db, c->cfg.db_migrations_dir, &applied)) != KW_OK)
			return ctl_fail("migrate up", err);
		printf("migrate up: applied %d migration(s)\n", applied);
		return 0;
	}
	if (strcmp(sub, "down") == 0) {
		int steps = 1;
		if (c->argc > 1) {
			char *end;
			long v = strtol(c->argv[1], &end, 10);
			if (*end != '\0' || v < 1 || v > 1000) {
				fprintf(stderr, "keywardctl: migrate down N: N must be 1..1000\n");
				return 2;
			}
			steps = (int)v;
		}
		if ((err = kw_migrate_down(c->db, c->cfg.db_migrations_dir, steps)) != KW_OK)
			return ctl_fail("migrate down", err);
		printf("migrate down: reverted %d migration(s)\n", steps);
		return 0;
	}
	if (strcmp(sub, "status") == 0) {
		if ((err = kw_migrate_status(c->db, c->cfg.db_migrations_dir, stdout)) != KW_OK)
			return ctl_fail("migrate status", err);
		return 0;
	}
	fprintf(stderr, "keywardctl: migrate up|down [N]|status\n");
	return 2;
}

static int rotate(kw_ctl *c, kw_key_family f, const char *family, const char *what,
                  kw_err (*made)(kw_ctl *c, uint32_t version, void *arg), void *arg, char label[64],
                  uint32_t *prev);

/* Reads every checkpoint line of path ("-" = stdin); lines without one
 * are skipped, a malformed one is an error naming its line. */
static int read_checkpoints(const char *path, kw_audit_checkpoint **out, size_t *n)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (f == NULL) {
		fprintf(stderr, "keywardctl: audit verify: cannot open %s: %s\n", path, strerror(errno));
		return 2;
	}
	char *line = NULL;
	size_t cap = 0, have = 0, lineno = 0;
	int rc = 0;
	*out = NULL;
	*n = 0;
	while (rc == 0 && getline(&line, &cap, f) >= 0) {
		lineno++;
		kw_audit_checkpoint cp;
		kw_err err = kw_audit_checkpoint_parse(line, &cp);
		if (err == KW_ERR_NOT_FOUND)
			continue;
		if (err != KW_OK) {
			fprintf(stderr, "keywardctl: audit verify: %s line %zu: a malformed checkpoint\n",
			        path, lineno);
			rc = 2;
			break;
		}
		if (*n == have) {
			size_t more = have ? 2 * have : 64;
			kw_audit_checkpoint *g = realloc(*out, more * sizeof(*g));
			if (g == NULL) {
				rc = ctl_fail("audit verify", KW_ERR_NOMEM);
				break;
			}
			*out = g;
			have = more;
		}
		(*out)[(*n)++] = cp;
	}
	free(line);
	if (f != stdin)
		fclose(f);
	return rc;
}

static int cmd_audit_verify(kw_ctl *c)
{
	unsigned long long rows = 0;
	kw_audit_checkpoint *cps = NULL;
	size_t ncps = 0;
	if (c->argc == 2 && strcmp(c->argv[0], "--checkpoints") == 0) {
		int rc = read_checkpoints(c->argv[1], &cps, &ncps);
		if (rc != 0) {
			free(cps);
			return rc;
		}
	} else if (c->argc != 0) {
		fprintf(stderr, "keywardctl: audit verify [--checkpoints FILE]\n");
		return 2;
	}
	kw_err err = ctl_hsm(c);
	if (err == KW_OK)
		err = ctl_db(c);
	if (err == KW_OK)
		err = kw_audit_verify(c->hsm, c->session, c->db, stdout, &rows, cps, ncps);
	free(cps);
	if (err == KW_ERR_VERIFY || err == KW_ERR_INVALID)
		return 1; /* kw_audit_verify named what is wrong */
	if (err != KW_OK)
		return ctl_fail("audit verify", err);
	if (ncps > 0)
		printf("audit verify: the database holds every one of %zu checkpoint(s)\n", ncps);
	return 0;
}

static int cmd_audit_checkpoint(kw_ctl *c)
{
	kw_err err = ctl_hsm(c);
	if (err == KW_OK)
		err = ctl_db(c);
	if (err == KW_OK)
		err = kw_audit_checkpoints_current(c->hsm, c->session, c->db, stdout);
	if (err == KW_ERR_VERIFY)
		return 1;
	return err == KW_OK ? 0 : ctl_fail("audit checkpoint", err);
}

static int cmd_audit_rotate_key(kw_ctl *c)
{
	uint32_t prev = 0;
	char label[64];
	if (rotate(c, KW_KEY_AUDIT, "audit", "audit key", NULL, NULL, label, &prev) != 0)
		return 1;
	printf("active: %s (previous: keyward/audit/%" PRIu32 ", kept: the rows it MAC'd still verify)\n",
	       label, prev);
	printf("running keywardd instances start new chains under it within %" PRId64 " s\n",
	       c->cfg.housekeeping_interval_s);
	return 0;
}

static int cmd_tenant_create(kw_ctl *c)
{
	if (c->argc != 1) {
		fprintf(stderr, "keywardctl: tenant create NAME\n");
		return 2;
	}
	const char *name = c->argv[0];
	char id[37], key[KW_APIKEY_LEN + 1];
	kw_audit_chain *chain = NULL;
	kw_err err = ctl_hsm(c);
	if (err == KW_OK)
		err = ctl_db(c);
	if (err != KW_OK)
		return 1;
	if ((err = kw_audit_chain_new(c->hsm, "keywardctl", &chain)) != KW_OK)
		return ctl_fail("tenant create", err);
	err = kw_tenant_create(c->db, c->hsm, c->session, chain, name, id, key);
	kw_audit_chain_free(chain);
	if (err == KW_ERR_EXISTS) {
		fprintf(stderr, "keywardctl: a tenant named %s exists already\n", name);
		return 1;
	}
	if (err == KW_ERR_INVALID) {
		fprintf(stderr, "keywardctl: a tenant name is 1 to 128 bytes of UTF-8 without control "
		                "characters\n");
		return 2;
	}
	if (err != KW_OK)
		return ctl_fail("tenant create", err);
	printf("tenant_id: %s\napi_key: %s\n", id, key);
	fflush(stdout);
	OPENSSL_cleanse(key, sizeof(key));
	fprintf(stderr, "keywardctl: this key is shown once; store it now\n");
	return 0;
}

static int cmd_tenant_list(kw_ctl *c)
{
	kw_tenant_row *rows = NULL;
	size_t n = 0;
	if (ctl_db(c) != KW_OK)
		return 1;
	kw_err err = kw_tenant_list(c->db, &rows, &n);
	if (err != KW_OK)
		return ctl_fail("tenant list", err);
	printf("%-36s  %-20s  %s\n", "ID", "CREATED_AT", "NAME");
	for (size_t i = 0; i < n; i++)
		printf("%-36s  %-20s  %s\n", rows[i].id, rows[i].created_at, rows[i].name);
	free(rows);
	return 0;
}

/* One audit row for an operator action, on its own chain. */
static kw_err ctl_audit(kw_ctl *c, const char *action, const char *target, const char *context)
{
	kw_audit_chain *chain = NULL;
	kw_err err = kw_audit_chain_new(c->hsm, "keywardctl", &chain);
	kw_audit_event ev = {
	    .actor = "keywardctl", .action = action, .target = target, .status = "ok", .context = context};
	if (err == KW_OK)
		err = kw_audit_write_one(chain, c->session, c->db, &ev);
	kw_audit_chain_free(chain);
	return err;
}

/* Two rotations at once would both create version n+1: serialise them on
 * the database, then re-read the token. Held for the session; waits at
 * most a minute for another rotation to finish. */
static kw_err ctl_rotation_lock(kw_ctl *c, const char *family)
{
	char name[64];
	snprintf(name, sizeof(name), "keyward:rotate:%s", family);
	for (int i = 0; i < 600; i++) {
		bool got = false;
		kw_err err = kw_db_try_lock(c->db, name, &got);
		if (err != KW_OK)
			return err;
		if (got)
			return kw_hsm_keys_refresh(c->hsm);
		if (i == 0)
			fprintf(stderr, "keywardctl: another %s rotation is running; waiting for it\n",
			        family);
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return KW_ERR_BUSY;
}

/* Records a rotation where `retire` looks for it (key_rotations, which the
 * service's roles cannot write). Without it, retire needs --force. */
static void ctl_rotation_record(kw_ctl *c, const char *family, uint32_t version, uint32_t previous)
{
	kw_err err = kw_rotation_record(c->db, family, version, previous);
	if (err != KW_OK)
		fprintf(stderr,
		        "keywardctl: warning: the rotation is not recorded in key_rotations (%s; it takes "
		        "db.admin_conninfo): `%s retire %" PRIu32 "` will need --force\n",
		        kw_err_str(err), family, previous);
}

/* Seconds until `wait_s` have passed since the rotation away from version
 * v of family; *known is false when no such rotation is recorded. */
static kw_err ctl_rotation_wait(kw_ctl *c, const char *family, unsigned long v, int64_t wait_s, bool *known,
                                long long *wait)
{
	return kw_rotation_wait(c->db, family, (uint32_t)v, wait_s, known, wait);
}

/* The start of a rotation of family f: the token and the database, the
 * rotation lock, and the active version (*prev). 0, or the exit code. */
static int rotate_begin(kw_ctl *c, kw_key_family f, const char *family, const char *what, uint32_t *prev)
{
	const kw_hsm_key *active;
	kw_err err = ctl_hsm(c);
	if (err == KW_OK)
		err = ctl_db(c);
	if (err != KW_OK)
		return 1;
	if ((err = ctl_rotation_lock(c, family)) != KW_OK) {
		fprintf(stderr, "keywardctl: %s rotate: cannot take the rotation lock: %s\n", family,
		        kw_err_str(err));
		return 1;
	}
	if ((err = kw_hsm_key_active(c->hsm, f, &active)) != KW_OK) {
		fprintf(stderr, "keywardctl: %s rotate: no active %s (run keywardctl token init): %s\n",
		        family, what, kw_err_str(err));
		return 1;
	}
	*prev = kw_hsm_key_version(active);
	return 0;
}

/* A rotation of family f: version prev + 1 made in the token and read
 * back, then (made) checked by made(c, version, arg) if given, recorded
 * and audited. label gets "keyward/<family>/<n>". 0, or the exit code. */
static int rotate(kw_ctl *c, kw_key_family f, const char *family, const char *what,
                  kw_err (*made)(kw_ctl *c, uint32_t version, void *arg), void *arg, char label[64],
                  uint32_t *prev)
{
	if (rotate_begin(c, f, family, what, prev) != 0)
		return 1;
	uint32_t next = *prev + 1;
	char ctx[64];
	kw_err err = kw_hsm_key_generate(c->session, f, next);
	if (err == KW_OK)
		err = kw_hsm_keys_refresh(c->hsm);
	if (err == KW_OK && made != NULL)
		err = made(c, next, arg);
	if (err != KW_OK) {
		fprintf(stderr, "keywardctl: %s rotate: %s\n", family, kw_err_str(err));
		return 1;
	}
	snprintf(label, 64, "keyward/%s/%" PRIu32, family, next);
	snprintf(ctx, sizeof(ctx), "{\"previous\":%" PRIu32 "}", *prev);
	/* Only JWT and KEK retirements wait out their rotation (key_rotations);
	 * audit keys are never retired, derivation roots by what uses them. */
	if (f == KW_KEY_JWT || f == KW_KEY_KEK)
		ctl_rotation_record(c, family, next, *prev);
	char action[32];
	snprintf(action, sizeof(action), "%s.rotate", family);
	if ((err = ctl_audit(c, action, label, ctx)) != KW_OK) {
		fprintf(stderr, "keywardctl: %s rotate: the key was created but the audit row failed: %s\n",
		        family, kw_err_str(err));
		return 1;
	}
	return 0;
}

static kw_err jwt_key_of(kw_ctl *c, uint32_t version, void *arg)
{
	const kw_hsm_key *k;
	kw_err err = kw_hsm_key_get(c->hsm, KW_KEY_JWT, version, &k);
	return err == KW_OK ? kw_jwt_key_from_hsm(c->hsm, k, arg) : err;
}

static int cmd_jwt_rotate(kw_ctl *c)
{
	uint32_t prev = 0;
	char label[64];
	kw_jwt_key key;
	if (rotate(c, KW_KEY_JWT, "jwt", "JWT key", jwt_key_of, &key, label, &prev) != 0)
		return 1;
	printf("active: %s kid=%s (previous: %" PRIu32 ", still published and verified until retired)\n",
	       label, key.kid, prev);
	printf("running keywardd instances pick it up within a minute, or at once on a token they do not "
	       "know\n");
	return 0;
}

/* Version v of family f exists in the token and is not the active one;
 * otherwise says so. */
static bool retire_version_ok(kw_ctl *c, kw_key_family f, const char *family, const char *what, uint32_t v)
{
	const kw_hsm_key *active, *k;
	kw_err err = kw_hsm_key_active(c->hsm, f, &active);
	if (err != KW_OK) {
		fprintf(stderr, "keywardctl: %s retire: %s\n", family, kw_err_str(err));
		return false;
	}
	if (kw_hsm_key_version(active) == v) {
		fprintf(stderr, "keywardctl: keyward/%s/%" PRIu32 " is the active %s; rotate first\n", family,
		        v, what);
		return false;
	}
	if (kw_hsm_key_get(c->hsm, f, v, &k) != KW_OK) {
		fprintf(stderr, "keywardctl: no key keyward/%s/%" PRIu32 " in the token\n", family, v);
		return false;
	}
	return true;
}

/* Whether version v of family may be retired now: wait_s must have passed
 * since the rotation away from it (or --force). Otherwise says why, with
 * the family's own words (waiting: v and the seconds left; unknown: v). */
static bool retire_may_proceed(kw_ctl *c, const char *family, uint32_t v, int64_t wait_s, bool force,
                               const char *waiting, const char *unknown)
{
	bool known = false;
	long long wait = 0;
	kw_err err = ctl_rotation_wait(c, family, v, wait_s, &known, &wait);
	if (err != KW_OK && !force) { /* forced, it need not know */
		fprintf(stderr, "keywardctl: %s retire: cannot read the rotation time: %s\n", family,
		        kw_err_str(err));
		return false;
	}
	if (err != KW_OK)
		fprintf(stderr, "keywardctl: warning: cannot read the rotation time (%s); forced, going on\n",
		        kw_err_str(err));
	if (force || (known && wait <= 0))
		return true;
	fputs("keywardctl: ", stderr);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	if (known)
		fprintf(stderr, waiting, v, wait);
	else
		fprintf(stderr, unknown, v);
#pragma GCC diagnostic pop
	fputc('\n', stderr);
	return false;
}

/* "N [--force]" of the retire commands; false = usage printed. */
static bool retire_args(const kw_ctl *c, const char *cmd, uint32_t *version, bool *force)
{
	*force = c->argc == 2 && strcmp(c->argv[1], "--force") == 0;
	char *end = NULL;
	unsigned long v = c->argc >= 1 ? strtoul(c->argv[0], &end, 10) : 0;
	if ((c->argc != 1 && !*force) || v == 0 || v > UINT32_MAX || end == NULL || *end != '\0') {
		fprintf(stderr, "keywardctl: %s N [--force]\n", cmd);
		return false;
	}
	*version = (uint32_t)v;
	return true;
}

static kw_err ctl_both(kw_ctl *c)
{
	kw_err err = ctl_hsm(c);
	if (err == KW_OK)
		err = ctl_db(c);
	return err;
}

/* The start of `<family> retire N [--force]`: its arguments, the token
 * and the database, and a version that may be retired (in the token, not
 * active). 0, or the exit code. */
static int retire_begin(kw_ctl *c, kw_key_family f, const char *family, const char *what, uint32_t *version,
                        bool *force)
{
	char cmd[32];
	snprintf(cmd, sizeof(cmd), "%s retire", family);
	if (!retire_args(c, cmd, version, force))
		return 2;
	if (ctl_both(c) != KW_OK || !retire_version_ok(c, f, family, what, *version))
		return 1;
	return 0;
}

static int cmd_jwt_retire(kw_ctl *c)
{
	bool force = false;
	uint32_t v = 0;
	int rc = retire_begin(c, KW_KEY_JWT, "jwt", "key", &v, &force);
	if (rc != 0)
		return rc;
	kw_err err;
	/* Tokens it signed live at most the longest role TTL (+ leeway) after
	 * the rotation that replaced it. */
	kw_roles roles;
	if (kw_roles_parse(c->cfg.roles, &roles) != KW_OK) {
		fprintf(stderr, "keywardctl: auth.roles is malformed\n");
		return 1;
	}
	int64_t max_ttl = 0;
	for (size_t i = 0; i < roles.n; i++)
		if (roles.roles[i].ttl_s > max_ttl)
			max_ttl = roles.roles[i].ttl_s;
	/* Running instances switch signing keys within a housekeeping interval. */
	max_ttl += c->cfg.jwt_leeway_s + c->cfg.housekeeping_interval_s;
	if (!retire_may_proceed(
	        c, "jwt", v, max_ttl, force,
	        "tokens signed by keyward/jwt/%" PRIu32
	        " may be valid for %lld more seconds; retire it after that (or --force)",
	        "no rotation away from keyward/jwt/%" PRIu32
	        " is recorded; tokens it signed may still be valid (--force to retire anyway)"))
		return 1;
	char label[64];
	snprintf(label, sizeof(label), "keyward/jwt/%" PRIu32 "", v);
	if ((err = kw_hsm_key_destroy(c->session, KW_KEY_JWT, (uint32_t)v)) != KW_OK)
		return ctl_fail("jwt retire", err);
	if ((err = ctl_audit(c, "jwt.retire", label, force ? "{\"forced\":true}" : NULL)) != KW_OK)
		return ctl_fail("jwt retire: the key was destroyed but the audit row failed", err);
	printf("retired: %s (no longer published; tokens it signed are refused)\n", label);
	return 0;
}

/* --- KEK: rotate, rewrap, retire ------------------------------------------ */

static int cmd_kek_rotate(kw_ctl *c)
{
	uint32_t prev = 0;
	char label[64];
	if (rotate(c, KW_KEY_KEK, "kek", "KEK", NULL, NULL, label, &prev) != 0)
		return 1;
	printf("active: %s (previous: keyward/kek/%" PRIu32 ", still unwraps its rows)\n", label, prev);
	printf("running keywardd instances wrap with it within %" PRId64
	       " s; then run: keywardctl kek rewrap\n",
	       c->cfg.housekeeping_interval_s);
	return 0;
}

static void print_row(void *arg, const char *tenant_id, const char *user_id)
{
	(void)arg;
	fprintf(stderr, "  tenant %s user %s\n", tenant_id, user_id);
}

/* Lists (some of) the rows a rewrap run set aside. */
static void print_set_aside(kw_ctl *c, unsigned long long bad)
{
	size_t n = 0;
	if (kw_rewrap_set_aside(c->db, 20, print_row, NULL, &n) != KW_OK)
		return;
	if (bad > (unsigned long long)n)
		fprintf(stderr, "  ... and %llu more (each is named in the log)\n",
		        bad - (unsigned long long)n);
}

/* --- secrets import ---------------------------------------------------------- */

typedef struct import_item {
	char name[KW_SECRET_NAME_MAX + 1];
	char content_type[KW_SECRET_CTYPE_MAX + 1];
	kw_secret *value;
	unsigned long line;
} import_item;

/* One line {name, value, content_type?}: false with why (a literal). */
static bool import_line(const char *text, size_t len, import_item *it, const char **why)
{
	json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	const char *name = json_string_value(json_object_get(o, "name"));
	json_t *jv = json_object_get(o, "value"), *jc = json_object_get(o, "content_type");
	const char *v = json_string_value(jv), *ct = jc ? json_string_value(jc) : "application/octet-stream";
	size_t n = json_string_length(jv), got = 0;
	*why = NULL;
	if (!json_is_object(o))
		*why = "not a JSON object";
	else if (!kw_secret_name_ok(name))
		*why = "name must be [A-Za-z0-9_./-]{1,256}";
	else if (ct == NULL || strlen(ct) == 0 || strlen(ct) > KW_SECRET_CTYPE_MAX)
		*why = "content_type must be a string of 1-255 characters";
	else if (v == NULL)
		*why = "value must be a base64 string";
	else if ((it->value = kw_secret_new(kw_b64_decoded_max(n))) == NULL)
		*why = "out of memory";
	else if (kw_b64_decode(v, n, kw_secret_data(it->value), kw_b64_decoded_max(n), &got) != KW_OK)
		*why = "value is not standard base64 (padded)";
	else if (got > KW_SECRET_VALUE_MAX)
		*why = "value is over 64 KiB";
	for (size_t i = 0; ct != NULL && *why == NULL && ct[i]; i++)
		if (ct[i] < 0x20 || ct[i] > 0x7e)
			*why = "content_type must be printable ASCII";
	if (*why == NULL) {
		snprintf(it->name, sizeof(it->name), "%s", name);
		snprintf(it->content_type, sizeof(it->content_type), "%s", ct);
		kw_secret_truncate(it->value, got);
	}
	if (v != NULL)
		OPENSSL_cleanse((void *)v, n); /* jansson's copy of the value */
	json_decref(o);
	return *why == NULL;
}

static void import_free(import_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kw_secret_free(items[i].value);
	free(items);
}

/* Reads FILE whole: every line checked before anything is written. */
static bool import_read(const char *path, import_item **out, size_t *nout)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		fprintf(stderr, "keywardctl: secrets import: cannot open %s: %s\n", path, strerror(errno));
		return false;
	}
	char *line = NULL;
	size_t cap = 0, n = 0, alloc = 0;
	ssize_t len;
	unsigned long lineno = 0;
	import_item *items = NULL;
	bool ok = true;
	while (ok && (len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (len == 0)
			continue; /* blank lines separate nothing */
		if (n == alloc) {
			import_item *g = realloc(items, (alloc = alloc ? 2 * alloc : 64) * sizeof(*items));
			if (g == NULL) {
				ok = false;
				break;
			}
			items = g;
		}
		memset(&items[n], 0, sizeof(items[n]));
		const char *why = NULL;
		items[n].line = lineno;
		ok = import_line(line, (size_t)len, &items[n], &why);
		for (size_t i = 0; ok && i < n; i++)
			if (strcmp(items[i].name, items[n].name) == 0) {
				why = "the name is on an earlier line too";
				ok = false;
			}
		n++;
		if (!ok)
			fprintf(stderr, "keywardctl: secrets import: %s line %lu: %s; nothing was imported\n",
			        path, lineno, why ? why : "out of memory");
		OPENSSL_cleanse(line, cap);
	}
	free(line);
	fclose(f);
	if (!ok) {
		import_free(items, n);
		return false;
	}
	*out = items;
	*nout = n;
	return true;
}

static int cmd_secrets_import(kw_ctl *c)
{
	if (c->argc != 2 || !kw_is_uuid(c->argv[0])) {
		fprintf(
		    stderr,
		    "keywardctl: secrets import TENANT_ID FILE  (JSON lines {name, value, content_type?})\n");
		return 2;
	}
	const char *tenant = c->argv[0];
	import_item *items = NULL;
	size_t n = 0;
	if (!import_read(c->argv[1], &items, &n))
		return 1;
	bool exists = false;
	kw_err err = ctl_both(c);
	if (err == KW_OK && (err = kw_tenant_exists(c->db, tenant, &exists)) == KW_OK && !exists)
		err = KW_ERR_NOT_FOUND;
	kw_audit_chain *chain = NULL;
	if (err == KW_OK)
		err = kw_audit_chain_new(c->hsm, "keywardctl", &chain);
	size_t failed_at = n;
	if (err == KW_OK && (err = kw_db_begin(c->db, tenant, NULL)) == KW_OK) {
		for (size_t i = 0; i < n && err == KW_OK; i++) {
			kw_secret_meta m = {0};
			kw_secret_version v;
			memset(&v, 0, sizeof(v));
			snprintf(m.name, sizeof(m.name), "%s", items[i].name);
			snprintf(m.content_type, sizeof(m.content_type), "%s", items[i].content_type);
			err = kw_random_uuid(m.id);
			if (err == KW_OK)
				err = kw_secrets_seal(c->hsm, c->session, tenant, m.id, 1,
				                      kw_secret_data(items[i].value),
				                      kw_secret_len(items[i].value), &v);
			if (err == KW_OK)
				err = kw_secrets_create(c->db, &m, &v);
			kw_secret_version_clear(&v);
			if (err != KW_OK)
				failed_at = i;
		}
		char ctx[48];
		snprintf(ctx, sizeof(ctx), "{\"secrets\":%zu}", n);
		kw_audit_event ev = {.tenant_id = tenant,
		                     .actor = "keywardctl",
		                     .action = "secrets.import",
		                     .target = "secrets",
		                     .status = "ok",
		                     .context = ctx};
		if (err == KW_OK)
			err = kw_audit_append(chain, c->session, c->db, &ev);
		err = kw_audit_end_tx(chain, c->db, err);
	}
	kw_audit_chain_free(chain);
	if (err == KW_ERR_EXISTS && failed_at < n)
		fprintf(stderr,
		        "keywardctl: secrets import: line %lu: the tenant has a secret named %s; nothing was "
		        "imported\n",
		        items[failed_at].line, items[failed_at].name);
	else if (err == KW_ERR_NOT_FOUND && !exists)
		fprintf(stderr, "keywardctl: secrets import: no tenant %s\n", tenant);
	else if (err != KW_OK)
		fprintf(stderr, "keywardctl: secrets import: %s; nothing was imported\n", kw_err_str(err));
	import_free(items, n);
	if (err != KW_OK)
		return 1;
	printf("imported: %zu secrets into tenant %s\n", n, tenant);
	return 0;
}

/* --- sign -------------------------------------------------------------------- */

static int sign_usage(void)
{
	fprintf(stderr,
	        "usage: keywardctl sign METHOD TARGET [BODY_FILE]\n"
	        "  prints X-Timestamp, X-Nonce and X-Signature as \"Header: value\" lines (for curl -H)\n"
	        "  the key id comes from KEYWARD_SIGN_KID, the secret from the file named by\n"
	        "  KEYWARD_SIGN_SECRET_FILE (never from the command line); TARGET is the path and\n"
	        "  query exactly as the request will send them\n");
	return 2;
}

/* Reads a whole file (at most max bytes) into a new buffer. */
static unsigned char *read_all(const char *path, size_t max, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	unsigned char *b = malloc(max + 1);
	size_t n = b ? fread(b, 1, max + 1, f) : 0;
	fclose(f);
	if (b == NULL || n > max) {
		free(b);
		return NULL;
	}
	*len = n;
	return b;
}

static int cmd_sign(kw_ctl *c)
{
	if (c->argc == 1 && strcmp(c->argv[0], "--help") == 0) {
		sign_usage();
		return 0;
	}
	if (c->argc < 2 || c->argc > 3)
		return sign_usage();
	const char *kid = getenv("KEYWARD_SIGN_KID"), *sfile = getenv("KEYWARD_SIGN_SECRET_FILE");
	if (kid == NULL || sfile == NULL) {
		fprintf(stderr, "keywardctl: sign: set KEYWARD_SIGN_KID and KEYWARD_SIGN_SECRET_FILE\n");
		return 2;
	}
	kw_secret *secret = NULL;
	if (kw_secret_read_file(sfile, &secret) != KW_OK) {
		fprintf(stderr, "keywardctl: sign: cannot read the secret file %s\n", sfile);
		return 1;
	}
	char key[64] = "";
	size_t klen = kw_secret_len(secret);
	if (klen < sizeof(key))
		memcpy(key, kw_secret_data(secret), klen);
	kw_secret_free(secret);
	unsigned char *body = NULL;
	size_t blen = 0;
	if (c->argc == 3 && (body = read_all(c->argv[2], 64u << 20, &blen)) == NULL) {
		OPENSSL_cleanse(key, sizeof(key));
		fprintf(stderr, "keywardctl: sign: cannot read %s (at most 64 MiB)\n", c->argv[2]);
		return 1;
	}
	keyward_sign_headers h;
	int rc = keyward_sign(kid, key, c->argv[0], c->argv[1], body, blen, 0, NULL, &h);
	OPENSSL_cleanse(key, sizeof(key));
	free(body);
	if (rc != 0) {
		fprintf(stderr,
		        "keywardctl: sign: a malformed key id or secret (a secret is kws_ and 49 base62 "
		        "characters, its checksum included)\n");
		return 1;
	}
	printf("X-Timestamp: %s\nX-Nonce: %s\nX-Signature: %s\n", h.timestamp, h.nonce, h.signature);
	return 0;
}

/* What `kek rewrap` re-wraps: vaults, then secret versions' data keys. */
typedef struct rewrap_kind {
	const char *what;
	kw_err (*start)(kw_db *db);
	kw_err (*batch)(kw_hsm *hsm, kw_hsm_session *s, kw_db *db, kw_audit_chain *audit, size_t batch,
	                size_t *done, size_t *skipped);
	kw_err (*left)(kw_db *db, uint32_t active, long long *left);
} rewrap_kind;

static const rewrap_kind rewrap_kinds[] = {
    {"vault rows", kw_vault_rewrap_start, kw_vault_rewrap_batch, kw_vault_rewrap_left},
    {"secret versions", kw_secrets_rewrap_start, kw_secrets_rewrap_batch, kw_secrets_rewrap_left},
    {"signing keys", kw_signing_rewrap_start, kw_signing_rewrap_batch, kw_signing_rewrap_left},
};

/* Bounded batches of one kind until none is left (or every row left is
 * held by a request for a minute). */
static kw_err rewrap_kind_run(kw_ctl *c, const rewrap_kind *k, kw_audit_chain *chain, size_t batch,
                              uint32_t v, unsigned long long *total, unsigned long long *bad)
{
	kw_err err = k->start(c->db);
	int idle = 0;
	while (err == KW_OK) {
		size_t done = 0, skipped = 0;
		err = k->batch(c->hsm, c->session, c->db, chain, batch, &done, &skipped);
		if (err != KW_OK)
			break;
		*total += done;
		*bad += skipped;
		if (done > 0 || skipped > 0) {
			idle = 0;
			continue;
		}
		long long left = 0;
		if ((err = k->left(c->db, v, &left)) != KW_OK || left == 0)
			break;
		if (++idle > 600) {
			fprintf(stderr, "keywardctl: kek rewrap: %lld %s stayed locked for a minute\n", left,
			        k->what);
			err = KW_ERR_BUSY;
			break;
		}
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return err;
}

static int cmd_kek_rewrap(kw_ctl *c)
{
	unsigned long batch = 500;
	char *end = NULL;
	if (c->argc == 2 && strcmp(c->argv[0], "--batch") == 0)
		batch = strtoul(c->argv[1], &end, 10);
	if ((c->argc != 0 && c->argc != 2) || (c->argc == 2 && (end == NULL || *end != '\0')) || batch == 0 ||
	    batch > 100000) {
		fprintf(stderr, "keywardctl: kek rewrap [--batch N]  (1 <= N <= 100000, default 500)\n");
		return 2;
	}
	kw_err err = ctl_both(c);
	if (err != KW_OK)
		return 1;
	if ((err = kw_vault_maintenance_check(c->db)) != KW_OK)
		return ctl_fail("kek rewrap: this role cannot see every vault (use db.admin_conninfo)", err);
	const kw_hsm_key *active;
	if ((err = kw_hsm_key_active(c->hsm, KW_KEY_KEK, &active)) != KW_OK)
		return ctl_fail("kek rewrap: no active KEK", err);
	uint32_t v = kw_hsm_key_version(active);
	kw_audit_chain *chain = NULL;
	if ((err = kw_audit_chain_new(c->hsm, "keywardctl", &chain)) != KW_OK)
		return ctl_fail("kek rewrap", err);
	unsigned long long total[3] = {0, 0, 0}, bad[3] = {0, 0, 0};
	for (size_t i = 0; i < 3 && err == KW_OK; i++)
		err = rewrap_kind_run(c, &rewrap_kinds[i], chain, batch, v, &total[i], &bad[i]);
	kw_audit_chain_free(chain);
	if (err != KW_OK) {
		fprintf(stderr,
		        "keywardctl: kek rewrap stopped after %llu vault rows and %llu secret versions: %s "
		        "(run it "
		        "again to go on)\n",
		        total[0], total[1], kw_err_str(err));
		return 1;
	}
	if (bad[2] > 0)
		fprintf(
		    stderr,
		    "keywardctl: kek rewrap: %llu signing keys do not unwrap (see the log); rotate them\n",
		    bad[2]);
	if (bad[0] + bad[1] + bad[2] > 0) {
		fprintf(stderr,
		        "keywardctl: kek rewrap: %llu vault rows and %llu secret versions re-wrapped; %llu "
		        "vault rows "
		        "and %llu secret versions do not unwrap under their own KEK and were left as they "
		        "are (see "
		        "the log; restore them from a backup, or have their users rotate or their owners "
		        "write a new "
		        "version):\n",
		        total[0], total[1], bad[0], bad[1]);
		if (bad[0] > 0)
			print_set_aside(c, bad[0]);
		return 1;
	}
	printf("rewrapped: %llu vault rows, %llu secret versions, %llu signing keys; everything is now under "
	       "keyward/kek/%" PRIu32 "\n",
	       total[0], total[1], total[2], v);
	return 0;
}

static int cmd_kek_retire(kw_ctl *c)
{
	bool force = false;
	uint32_t v = 0;
	int rc = retire_begin(c, KW_KEY_KEK, "kek", "KEK", &v, &force);
	if (rc != 0)
		return rc;
	kw_err err = kw_vault_maintenance_check(c->db);
	if (err != KW_OK)
		return ctl_fail("kek retire: this role cannot see every vault (use db.admin_conninfo)", err);
	/* Instances that have not yet re-read the token may still wrap with it
	 * for up to one housekeeping interval after the rotation. (Should one
	 * try after the retirement below, the database refuses the row.) */
	if (!retire_may_proceed(
	        c, "kek", v, c->cfg.housekeeping_interval_s + 5, force,
	        "running instances may still wrap with keyward/kek/%" PRIu32
	        " for %lld more seconds; retire it after that (and after a last kek rewrap)",
	        "no rotation away from keyward/kek/%" PRIu32
	        " is recorded, so instances may still wrap with it (--force to retire anyway)"))
		return 1;
	long long rows = 0;
	err = kw_vault_kek_retire(c->db, (uint32_t)v, &rows);
	if (err == KW_ERR_EXISTS) {
		fprintf(stderr,
		        "keywardctl: %lld vault rows and secret versions are still wrapped by "
		        "keyward/kek/%" PRIu32 "; run keywardctl kek "
		        "rewrap first\n",
		        rows, v);
		return 1;
	}
	if (err != KW_OK)
		return ctl_fail("kek retire: cannot mark it retired", err);
	char label[64];
	snprintf(label, sizeof(label), "keyward/kek/%" PRIu32 "", v);
	if ((err = kw_hsm_key_destroy(c->session, KW_KEY_KEK, (uint32_t)v)) != KW_OK)
		return ctl_fail("kek retire: marked retired, but the token did not destroy it (run again)",
		                err);
	if ((err = ctl_audit(c, "kek.retire", label, force ? "{\"forced\":true}" : NULL)) != KW_OK)
		return ctl_fail("kek retire: the key was destroyed but the audit row failed", err);
	printf("retired: %s (destroyed in the token; the database refuses rows under it)\n", label);
	return 0;
}

/* --- derivation roots (transit keys) --------------------------------------- */

static int cmd_derive_rotate(kw_ctl *c)
{
	uint32_t prev = 0;
	char label[64];
	if (rotate(c, KW_KEY_DERIVE, "derive", "derivation root", NULL, NULL, label, &prev) != 0)
		return 1;
	printf("active: %s (previous: keyward/derive/%" PRIu32
	       ", kept: the transit key versions derived from it "
	       "still decrypt)\n",
	       label, prev);
	printf(
	    "new transit key versions (create, rotate) derive from it once running keywardd instances have "
	    "re-read the token (within %" PRId64 " s)\n",
	    c->cfg.housekeeping_interval_s);
	return 0;
}

static int cmd_derive_retire(kw_ctl *c)
{
	bool force = false;
	uint32_t v = 0;
	int rc = retire_begin(c, KW_KEY_DERIVE, "derive", "derivation root", &v, &force);
	if (rc != 0)
		return rc;
	long long using = 0;
	kw_err err = kw_transit_versions_using(c->db, v, &using);
	if (err != KW_OK)
		return ctl_fail("derive retire: cannot count the transit key versions derived from it", err);
	if (using > 0) {
		fprintf(
		    stderr,
		    "keywardctl: %lld transit key version(s) still decryptable are derived from "
		    "keyward/derive/%" PRIu32
		    "; rotate those keys, rewrap their data and raise their min_decryption_version first\n",
		    using, v);
		return 1;
	}
	char label[64];
	snprintf(label, sizeof(label), "keyward/derive/%" PRIu32, v);
	if ((err = kw_hsm_key_destroy(c->session, KW_KEY_DERIVE, v)) != KW_OK)
		return ctl_fail("derive retire: the token did not destroy it", err);
	if ((err = ctl_audit(c, "derive.retire", label, force ? "{\"forced\":true}" : NULL)) != KW_OK)
		return ctl_fail("derive retire: the key was destroyed but the audit row failed", err);
	printf("retired: %s (destroyed in the token)\n", label);
	return 0;
}

typedef struct kw_ctl_cmd {
	const char *group, *verb;
	int (*fn)(kw_ctl *c);
	const char *help;
} kw_ctl_cmd;

static const kw_ctl_cmd commands[] = {
    {"token", "init", cmd_token_init, "create version 1 of every key family (idempotent)"},
    {"token", "status", cmd_token_status, "list keys and their attributes, read back from the token"},
    {"migrate", NULL, cmd_migrate, "up | down [N] | status"},
    {"tenant", "create", cmd_tenant_create, "NAME: create a tenant and print its first admin API key, once"},
    {"tenant", "list", cmd_tenant_list, "list tenants: id, creation time, name"},
    {"audit", "verify", cmd_audit_verify,
     "[--checkpoints FILE]: verify every audit chain, and that none is behind a checkpoint"},
    {"audit", "checkpoint", cmd_audit_checkpoint, "print every chain's current checkpoint (MAC checked)"},
    {"audit", "rotate-key", cmd_audit_rotate_key, "create keyward/audit/<n+1>; new chains are MAC'd with it"},
    {"jwt", "rotate", cmd_jwt_rotate, "create keyward/jwt/<n+1> and make it the signing key"},
    {"jwt", "retire", cmd_jwt_retire, "N [--force]: destroy keyward/jwt/N once no token it signed is valid"},
    {"kek", "rotate", cmd_kek_rotate, "create keyward/kek/<n+1> and make it the wrapping key"},
    {"kek", "rewrap", cmd_kek_rewrap,
     "[--batch N]: re-wrap every vault and secret version under the active KEK (resumable)"},
    {"sign", NULL, cmd_sign, "METHOD TARGET [BODY_FILE]: print the signature headers of a request (--help)"},
    {"secrets", "import", cmd_secrets_import,
     "TENANT FILE: load JSON lines {name, value (base64), content_type?} in one transaction"},
    {"derive", "rotate", cmd_derive_rotate,
     "create keyward/derive/<n+1>: new transit key versions derive from it"},
    {"derive", "retire", cmd_derive_retire,
     "N: destroy keyward/derive/N once no decryptable transit key version uses it"},
    {"kek", "retire", cmd_kek_retire,
     "N [--force]: destroy keyward/kek/N once no vault row or secret version uses it"},
};

/* After a command that changed the token's keys (a rotation or retirement
 * of JWT, KEK, derivation-root or audit keys), tell every running
 * instance through the change feed: they re-read the token within a
 * second instead of at their next housekeeping. */
static void announce_key_change(kw_ctl *c, const kw_ctl_cmd *cmd)
{
	static const char *const groups[] = {"jwt", "kek", "derive"};
	bool keys =
	    cmd->verb != NULL && (strcmp(cmd->verb, "rotate") == 0 || strcmp(cmd->verb, "retire") == 0 ||
	                          strcmp(cmd->verb, "rotate-key") == 0);
	bool group = strcmp(cmd->group, "audit") == 0 && cmd->verb && strcmp(cmd->verb, "rotate-key") == 0;
	for (size_t i = 0; i < 3; i++)
		group = group || strcmp(cmd->group, groups[i]) == 0;
	if (!keys || !group || c->db == NULL)
		return;
	const char *vals[1] = {cmd->group};
	if (kw_db_exec(c->db, "SELECT changes_announce('token_keys', $1)", 1, vals, NULL, NULL, NULL) !=
	    KW_OK)
		fprintf(stderr,
		        "keywardctl: warning: running instances were not told (they re-read the token's keys "
		        "within auth.housekeeping_interval)\n");
}

static void usage(void)
{
	fprintf(stderr, "usage: keywardctl [-c keywardd.conf] COMMAND\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(stderr, "  %-7s %-8s %s\n", commands[i].group,
		        commands[i].verb ? commands[i].verb : "", commands[i].help);
}

int main(int argc, char **argv)
{
	prctl(PR_SET_DUMPABLE, 0);
	kw_log_open(NULL);
	kw_log_set_level(KW_LOG_WARN);
	if (kw_secure_heap_init() != KW_OK) {
		fprintf(stderr, "keywardctl: cannot set up OpenSSL's secure heap\n");
		return 1;
	}
	int i = 1;
	const char *conf = NULL;
	if (i + 1 < argc && (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))) {
		conf = argv[i + 1];
		i += 2;
	}
	if (i >= argc) {
		usage();
		return 2;
	}
	kw_ctl c = {0};
	char errbuf[512] = "";
	if (kw_config_load(&c.cfg, conf, errbuf, sizeof(errbuf)) != KW_OK) {
		fprintf(stderr, "keywardctl: %s\n", errbuf);
		kw_config_free(&c.cfg);
		return 1;
	}
	int rc = 2;
	const kw_ctl_cmd *cmd = NULL;
	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
		if (strcmp(commands[k].group, argv[i]) != 0)
			continue;
		if (commands[k].verb == NULL) {
			cmd = &commands[k];
			c.argc = argc - i - 1;
			c.argv = argv + i + 1;
			break;
		}
		if (i + 1 < argc && strcmp(commands[k].verb, argv[i + 1]) == 0) {
			cmd = &commands[k];
			c.argc = argc - i - 2;
			c.argv = argv + i + 2;
			break;
		}
	}
	if (cmd == NULL)
		usage();
	else
		rc = cmd->fn(&c);
	if (cmd != NULL && rc == 0)
		announce_key_change(&c, cmd);
	if (c.session)
		kw_hsm_session_close(c.session);
	if (c.hsm)
		kw_hsm_close(c.hsm);
	if (c.db)
		kw_db_close(c.db);
	kw_config_free(&c.cfg);
	return rc;
}
