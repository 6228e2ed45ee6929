/* config.h — keywardd.conf (INI) plus KEYWARD_SECTION_KEY overrides.
 *
 * Values are plain data; nothing here opens files other than the config
 * itself. The PIN is never a config value: only the path of its source. */
#ifndef KEYWARD_CONFIG_H
#define KEYWARD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"

typedef struct kw_config {
	bool development; /* mode = development | production */

	/* [http] */
	char *listen;       /* "127.0.0.1:8080"; empty disables TCP */
	char *admin_listen; /* "127.0.0.1:9090": /metrics and /readyz only there; empty = with the rest */
	char *unix_socket;  /* path; empty disables */
	bool allow_insecure_http;
	char *tls_cert, *tls_key;
	int io_threads;        /* 0 = number of CPUs */
	int workers;           /* 0 = number of CPUs * 2 */
	int queue_max;         /* bounded work queue; full -> 503 */
	int drain_timeout_ms;  /* SIGTERM grace for in-flight requests */
	size_t max_body;       /* bytes; default 1 MiB */
	size_t max_headers;    /* bytes; default 64 KiB */
	char *trusted_proxies; /* comma-separated IPs/CIDRs whose X-Forwarded-For is believed */

	/* [ratelimit] — per minute, per instance */
	int rl_ip_per_minute;        /* every /api/ request, by client IP */
	int rl_key_per_minute;       /* by API key, unless the key overrides it */
	int rl_auth_fail_per_minute; /* failed authentications, by client IP */
	int rl_ipv6_prefix; /* IPv6 clients share a budget per prefix of this length (128: per address) */

	/* [auth] */
	int key_cache_ttl_ms;           /* how long a verified API key is trusted without a DB look-up */
	char *jwt_issuer;               /* iss of access tokens */
	char *jwt_audience;             /* their aud, required on every access token */
	int64_t jwt_leeway_s;           /* clock skew allowed on exp/nbf */
	char *roles;                    /* "name ttl [permission ...], ..." */
	char *wallet_role;              /* role of wallet sign-ins */
	int64_t wallet_nonce_ttl_s;     /* sign-in nonce lifetime */
	int64_t refresh_absolute_ttl_s; /* a family's whole life */
	int64_t refresh_sliding_ttl_s;  /* a refresh token unused this long dies */
	int64_t refresh_grace_s;        /* reuse of the previous token allowed this long (<= 60) */
	int refresh_per_minute;         /* refreshes per subject and minute */
	int64_t jwks_max_age_s;         /* Cache-Control of the JWKS */
	int token_cache_size;           /* verified access tokens kept */
	int revocation_stale_ms;        /* fail closed when the revocation list is older */
	int64_t housekeeping_interval_s;
	int housekeeping_batch; /* rows deleted per statement */

	/* [audit] */
	int64_t audit_checkpoint_interval_s; /* how often chain checkpoints are logged */

	/* [coalesce] */
	char *coalesce_routes;   /* route names whose identical concurrent GETs run once */
	int coalesce_timeout_ms; /* a follower waiting longer runs on its own */

	/* [transit] */
	int transit_cache_size;       /* transit keys whose derived versions are held (0: none) */
	int64_t transit_cache_idle_s; /* a key unused this long is wiped from the cache */

	/* [hsm] */
	char *hsm_module;        /* path of the PKCS#11 module */
	char *hsm_uri;           /* RFC 7512 token URI */
	char *hsm_pin_source;    /* file holding the user PIN */
	int hsm_max_sessions;    /* 0 = token's ulMaxSessionCount */
	bool hsm_session_copies; /* operate on per-session copies of token keys */

	/* [db] */
	char *db_conninfo;       /* service role (no RLS bypass) */
	char *db_admin_conninfo; /* schema owner, for keywardctl */
	char *db_migrations_dir;
	bool db_migrate_on_boot;

	/* [log] */
	char *log_file; /* empty = stderr */
	char *log_level;

	/* [dev] — development mode only */
	char *dev_state_dir; /* where a dev token and cluster live */
} kw_config;

/* Fills cfg with defaults, then the file at path (NULL: no file), then the
 * environment. On error, *errmsg (static or owned by cfg) says which line
 * or key is wrong. The caller frees with kw_config_free in every case. */
KW_MUST_CHECK kw_err kw_config_load(kw_config *cfg, const char *path, char *errbuf, size_t errlen);
void kw_config_free(kw_config *cfg);

/* "30d", "12h", "5m", "90s", "90" -> seconds; false if malformed. */
bool kw_duration_parse(const char *text, int64_t *out);

/* The URI as it may be printed: withheld when it carries a PIN attribute
 * (RFC 7512 pin-value / pin-source). */
const char *kw_config_printable_uri(const char *uri);

/* One INI assignment, as the loader applies it; exposed for the fuzzer. */
KW_MUST_CHECK kw_err kw_config_set(kw_config *cfg, const char *section, const char *key, const char *value);
/* Parses a whole INI text; for the file loader and the fuzzer. */
KW_MUST_CHECK kw_err kw_config_parse(kw_config *cfg, const char *text, size_t len, char *errbuf,
                                     size_t errlen);

#endif
