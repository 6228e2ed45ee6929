/* config.c — INI loader with KEYWARD_SECTION_KEY environment overrides.
 *
 * The grammar is the small common subset: `[section]`, `key = value`,
 * `#` or `;` comments on their own line, blank lines. Unknown sections or
 * keys are errors (a typo must not silently leave a default in force). A
 * PIN is never a value here: only the path of the file that holds it. */
#include "keyward/core/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { T_STR, T_BOOL, T_INT, T_SIZE, T_MODE, T_DUR } kw_cfg_type;

typedef struct kw_cfg_key {
	const char *section, *key;
	kw_cfg_type type;
	size_t offset;
	const char *def;
} kw_cfg_key;

#define F(field) offsetof(kw_config, field)
static const kw_cfg_key keys[] = {
    {"", "mode", T_MODE, F(development), "production"},
    {"http", "listen", T_STR, F(listen), "127.0.0.1:8080"},
    {"http", "unix_socket", T_STR, F(unix_socket), ""},
    {"http", "admin_listen", T_STR, F(admin_listen), ""},
    {"http", "allow_insecure_http", T_BOOL, F(allow_insecure_http), "false"},
    {"http", "io_threads", T_INT, F(io_threads), "0"},
    {"http", "workers", T_INT, F(workers), "0"},
    {"http", "queue_max", T_INT, F(queue_max), "1024"},
    {"http", "drain_timeout_ms", T_INT, F(drain_timeout_ms), "10000"},
    {"http", "max_body", T_SIZE, F(max_body), "1048576"},
    {"http", "max_headers", T_SIZE, F(max_headers), "65536"},
    {"http", "trusted_proxies", T_STR, F(trusted_proxies), ""},
    {"ratelimit", "ip_per_minute", T_INT, F(rl_ip_per_minute), "1000"},
    {"ratelimit", "key_per_minute", T_INT, F(rl_key_per_minute), "60"},
    {"ratelimit", "auth_fail_per_minute", T_INT, F(rl_auth_fail_per_minute), "20"},
    {"ratelimit", "ipv6_prefix", T_INT, F(rl_ipv6_prefix), "64"},
    {"auth", "key_cache_ttl_ms", T_INT, F(key_cache_ttl_ms), "1000"},
    {"auth", "issuer", T_STR, F(jwt_issuer), "keyward"},
    {"auth", "audience", T_STR, F(jwt_audience), "keyward"},
    {"auth", "leeway", T_DUR, F(jwt_leeway_s), "30s"},
    {"auth", "roles", T_STR, F(roles),
     "track1 12h vault:read vault:write, track2 8h vault:read vault:write, "
     "track3 4h vault:read vault:write, track4 1h vault:read vault:write"},
    {"auth", "wallet_role", T_STR, F(wallet_role), "track4"},
    {"auth", "wallet_nonce_ttl", T_DUR, F(wallet_nonce_ttl_s), "5m"},
    {"auth", "refresh_absolute_ttl", T_DUR, F(refresh_absolute_ttl_s), "30d"},
    {"auth", "refresh_sliding_ttl", T_DUR, F(refresh_sliding_ttl_s), "7d"},
    {"auth", "refresh_grace", T_DUR, F(refresh_grace_s), "0s"},
    {"auth", "refresh_per_minute", T_INT, F(refresh_per_minute), "5"},
    {"auth", "jwks_max_age", T_DUR, F(jwks_max_age_s), "5m"},
    {"auth", "token_cache_size", T_INT, F(token_cache_size), "65536"},
    {"auth", "revocation_stale_ms", T_INT, F(revocation_stale_ms), "3000"},
    {"auth", "housekeeping_interval", T_DUR, F(housekeeping_interval_s), "60s"},
    {"auth", "housekeeping_batch", T_INT, F(housekeeping_batch), "1000"},
    {"audit", "checkpoint_interval", T_DUR, F(audit_checkpoint_interval_s), "60s"},
    {"coalesce", "routes", T_STR, F(coalesce_routes), "secrets_get,vault_key,jwks"},
    {"coalesce", "timeout_ms", T_INT, F(coalesce_timeout_ms), "2000"},
    {"transit", "cache_size", T_INT, F(transit_cache_size), "1024"},
    {"transit", "cache_idle", T_DUR, F(transit_cache_idle_s), "5m"},
    {"tls", "cert", T_STR, F(tls_cert), ""},
    {"tls", "key", T_STR, F(tls_key), ""},
    {"hsm", "module", T_STR, F(hsm_module), "/usr/lib/softhsm/libsofthsm2.so"},
    {"hsm", "uri", T_STR, F(hsm_uri), "pkcs11:token=keyward"},
    {"hsm", "pin_source", T_STR, F(hsm_pin_source), ""},
    {"hsm", "max_sessions", T_INT, F(hsm_max_sessions), "0"},
    {"hsm", "session_copies", T_BOOL, F(hsm_session_copies), "true"},
    {"db", "conninfo", T_STR, F(db_conninfo), ""},
    {"db", "admin_conninfo", T_STR, F(db_admin_conninfo), ""},
    {"db", "migrations_dir", T_STR, F(db_migrations_dir), KW_DEFAULT_MIGRATIONS_DIR},
    {"db", "migrate_on_boot", T_BOOL, F(db_migrate_on_boot), "false"},
    {"log", "file", T_STR, F(log_file), ""},
    {"log", "level", T_STR, F(log_level), "info"},
    {"dev", "state_dir", T_STR, F(dev_state_dir), ".run/dev"},
};
#undef F

static const kw_cfg_key *find_key(const char *section, const char *key)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcasecmp(keys[i].section, section) == 0 && strcasecmp(keys[i].key, key) == 0)
			return &keys[i];
	return NULL;
}

bool kw_duration_parse(const char *text, int64_t *out)
{
	if (text == NULL || !isdigit((unsigned char)text[0]))
		return false;
	errno = 0;
	char *end;
	long long n = strtoll(text, &end, 10);
	if (errno != 0 || n < 0 || n > 100LL * 365 * 86400)
		return false;
	long long mul = 1;
	if (*end == 'd')
		mul = 86400;
	else if (*end == 'h')
		mul = 3600;
	else if (*end == 'm')
		mul = 60;
	else if (*end == 's')
		mul = 1;
	else if (*end != '\0')
		return false;
	if (*end != '\0' && end[1] != '\0')
		return false;
	if (n > 100LL * 365 * 86400 / mul)
		return false;
	*out = (int64_t)(n * mul);
	return true;
}

static bool parse_bool(const char *v, bool *out)
{
	if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") || !strcasecmp(v, "on")) {
		*out = true;
		return true;
	}
	if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0") || !strcasecmp(v, "off")) {
		*out = false;
		return true;
	}
	return false;
}

static bool parse_num(const char *v, long long max, long long *out)
{
	if (*v == '\0' || *v == '-' || *v == '+')
		return false;
	errno = 0;
	char *end;
	long long n = strtoll(v, &end, 10);
	if (errno != 0 || *end != '\0' || n < 0 || n > max)
		return false;
	*out = n;
	return true;
}

kw_err kw_config_set(kw_config *cfg, const char *section, const char *key, const char *value)
{
	const kw_cfg_key *k = find_key(section, key);
	if (k == NULL)
		return KW_ERR_NOT_FOUND;
	if (strlen(value) > 4096)
		return KW_ERR_INVALID;
	char *field = (char *)cfg + k->offset;
	long long n;
	switch (k->type) {
	case T_STR: {
		char *dup = strdup(value);
		if (dup == NULL)
			return KW_ERR_NOMEM;
		free(*(char **)field);
		*(char **)field = dup;
		return KW_OK;
	}
	case T_BOOL:
		return parse_bool(value, (bool *)field) ? KW_OK : KW_ERR_INVALID;
	case T_INT:
		if (!parse_num(value, 1 << 20, &n))
			return KW_ERR_INVALID;
		*(int *)field = (int)n;
		return KW_OK;
	case T_SIZE:
		if (!parse_num(value, 1LL << 30, &n) || n == 0)
			return KW_ERR_INVALID;
		*(size_t *)field = (size_t)n;
		return KW_OK;
	case T_DUR: {
		int64_t d;
		if (!kw_duration_parse(value, &d))
			return KW_ERR_INVALID;
		*(int64_t *)field = d;
		return KW_OK;
	}
	case T_MODE:
		if (strcmp(value, "development") == 0)
			*(bool *)field = true;
		else if (strcmp(value, "production") == 0)
			*(bool *)field = false;
		else
			return KW_ERR_INVALID;
		return KW_OK;
	}
	return KW_ERR_INTERNAL;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

kw_err kw_config_parse(kw_config *cfg, const char *text, size_t len, char *errbuf, size_t errlen)
{
	char section[64] = "";
	size_t lineno = 0, pos = 0;
	char line[4200];
	while (pos < len) {
		size_t end = pos;
		while (end < len && text[end] != '\n')
			end++;
		lineno++;
		size_t n = end - pos;
		if (n >= sizeof(line) || memchr(text + pos, '\0', n) != NULL) {
			snprintf(errbuf, errlen, "line %zu: too long or not text", lineno);
			return KW_ERR_CONFIG;
		}
		memcpy(line, text + pos, n);
		line[n] = '\0';
		pos = end + 1;
		char *s = trim(line);
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']');
			if (close == NULL || close[1] != '\0' || (size_t)(close - s - 1) >= sizeof(section)) {
				snprintf(errbuf, errlen, "line %zu: bad section header", lineno);
				return KW_ERR_CONFIG;
			}
			*close = '\0';
			snprintf(section, sizeof(section), "%s", trim(s + 1));
			continue;
		}
		char *eq = strchr(s, '=');
		if (eq == NULL) {
			snprintf(errbuf, errlen, "line %zu: expected key = value", lineno);
			return KW_ERR_CONFIG;
		}
		*eq = '\0';
		char *key = trim(s), *value = trim(eq + 1);
		size_t vl = strlen(value);
		if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
			value[vl - 1] = '\0';
			value++;
		}
		kw_err err = kw_config_set(cfg, section, key, value);
		if (err == KW_ERR_NOT_FOUND) {
			snprintf(errbuf, errlen, "line %zu: unknown key %s%s%.64s", lineno, section,
			         section[0] ? "." : "", key);
			return KW_ERR_CONFIG;
		}
		if (err != KW_OK) {
			snprintf(errbuf, errlen, "line %zu: bad value for %s%s%.64s", lineno, section,
			         section[0] ? "." : "", key);
			return KW_ERR_CONFIG;
		}
	}
	return KW_OK;
}

static kw_err load_file(kw_config *cfg, const char *path, char *errbuf, size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		snprintf(errbuf, errlen, "cannot open config %s", path);
		return KW_ERR_CONFIG;
	}
	char *buf = malloc(1 << 20);
	size_t n = buf ? fread(buf, 1, (1 << 20), f) : 0;
	bool toobig = buf && n == (1 << 20);
	fclose(f);
	if (buf == NULL)
		return KW_ERR_NOMEM;
	kw_err err = KW_OK;
	if (toobig) {
		snprintf(errbuf, errlen, "config %s is larger than 1 MiB", path);
		err = KW_ERR_CONFIG;
	} else {
		err = kw_config_parse(cfg, buf, n, errbuf, errlen);
	}
	free(buf);
	return err;
}

/* KEYWARD_HTTP_LISTEN -> [http] listen; KEYWARD_MODE -> mode. */
static kw_err load_env(kw_config *cfg, char *errbuf, size_t errlen)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char name[96];
		if (keys[i].section[0])
			snprintf(name, sizeof(name), "KEYWARD_%s_%s", keys[i].section, keys[i].key);
		else
			snprintf(name, sizeof(name), "KEYWARD_%s", keys[i].key);
		for (char *p = name; *p; p++)
			*p = (char)toupper((unsigned char)*p);
		const char *v = getenv(name);
		if (v == NULL)
			continue;
		if (kw_config_set(cfg, keys[i].section, keys[i].key, v) != KW_OK) {
			snprintf(errbuf, errlen, "bad value in environment variable %s", name);
			return KW_ERR_CONFIG;
		}
	}
	return KW_OK;
}

kw_err kw_config_load(kw_config *cfg, const char *path, char *errbuf, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (kw_config_set(cfg, keys[i].section, keys[i].key, keys[i].def) != KW_OK)
			return KW_ERR_NOMEM;
	kw_err err = KW_OK;
	if (path != NULL && (err = load_file(cfg, path, errbuf, errlen)) != KW_OK)
		return err;
	return load_env(cfg, errbuf, errlen);
}

void kw_config_free(kw_config *cfg)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (keys[i].type == T_STR) {
			char **p = (char **)((char *)cfg + keys[i].offset);
			free(*p);
			*p = NULL;
		}
}

const char *kw_config_printable_uri(const char *uri)
{
	return strstr(uri, "pin-") ? "(hsm.uri withheld: it carries a PIN attribute)" : uri;
}
