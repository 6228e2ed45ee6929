/* kwtest_http.h — black-box harness: start the real keywardd, speak HTTP.
 *
 * The daemon runs as a child process against the test token and a fresh
 * database of its own; requests are raw bytes over a socket, so tests can
 * send hostile input that no HTTP library would produce. */
#ifndef KWTEST_HTTP_H
#define KWTEST_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "kwtest.h"

typedef struct kwt_daemon {
	pid_t pid;
	int port;
	char unix_path[108];
	char log_path[256];
	kwt_db db;
	bool own_db;
} kwt_daemon;

/* Starts keywardd in production mode on 127.0.0.1:<free port> and a Unix
 * socket, with its own fresh database, and waits until /healthz answers.
 * extra_env: NULL-terminated "NAME=value" list applied last (may be NULL). */
void kwt_daemon_start(kwt_daemon *d, const char *const *extra_env);
/* SIGTERM and wait; returns the exit status (or 128 + signal). */
int kwt_daemon_stop(kwt_daemon *d);
/* Runs keywardd expecting it to fail at boot; returns the exit status and
 * the last line it printed to stderr in last_line. */
int kwt_daemon_boot_fails(const kwt_db *db, const char *const *extra_env, char *last_line, size_t cap);
/* The daemon's log so far (malloc'd). */
char *kwt_daemon_log(const kwt_daemon *d);

typedef struct kwt_resp {
	int status;
	char *head; /* status line and headers */
	char *body;
	size_t body_len;
} kwt_resp;

/* Sends raw bytes, reads one response. Returns 0, or -1 if the connection
 * failed or closed without a response. port 0 = use unix_path. */
int kwt_http_raw(const kwt_daemon *d, bool use_unix, const void *raw, size_t len, kwt_resp *out);
/* GET path with "Connection: close". */
int kwt_http_get(const kwt_daemon *d, const char *path, kwt_resp *out);
int kwt_http_post(const kwt_daemon *d, const char *path, const char *body, kwt_resp *out);
/* A response header's value (case-insensitive), copied into buf; NULL if absent. */
const char *kwt_resp_header(const kwt_resp *r, const char *name, char *buf, size_t cap);
void kwt_resp_free(kwt_resp *r);
/* Asserts the body is the JSON error shape with this code and a request_id. */
void kwt_assert_json_error(const kwt_resp *r, int status, const char *code);

/* A request with extra header lines ("Name: value\r\n"...), e.g. an
 * Authorization header. body may be NULL. */
int kwt_http_req(const kwt_daemon *d, const char *method, const char *path, const char *headers,
                 const char *body, kwt_resp *out);

/* A tenant made by `keywardctl tenant create` against the daemon's
 * database: its id and its first admin key. */
typedef struct kwt_tenant {
	char id[64];
	char admin_key[128];
	char auth[200]; /* "Authorization: Bearer <admin_key>\r\n" */
} kwt_tenant;
void kwt_tenant_create(const kwt_daemon *d, const char *name, kwt_tenant *out);
/* Creates an API key through the API with the given admin key; returns
 * the new key (and its id) or fails the test. */
void kwt_api_key_create(const kwt_daemon *d, const kwt_tenant *t, const char *name, const char *scopes_json,
                        int rate_limit, char key[128], char id[64]);

/* Waits (up to 5 s) until the daemon's audit writer has settled every row
 * it was given (keyward_audit_pending 0): refusal rows are posted to it
 * and land shortly after their answers. */
void kwt_audit_settle(const kwt_daemon *d);
/* Runs keywardctl with args (shell words) against d's database, as its
 * schema owner; its exit status, and its output (stdout and stderr) in out. */
int kwt_ctl(const kwt_daemon *d, const char *args, char *out, size_t cap);
/* A SoftHSM token of the test's own (label kwt-<tag>-<pid>, every key
 * family made by keywardctl token init), for tests that rotate or retire
 * keys, and a daemon on it with its own database (extra_env applied last).
 * ctl becomes a shell prefix that runs keywardctl on that token and
 * database. kwt_private_stop stops the daemon and deletes the token. */
typedef struct kwt_private {
	kwt_daemon d;
	char ctl[1400];
	char label[64], pin[64], uri_env[128], pin_env[128];
} kwt_private;
void kwt_private_start(kwt_private *p, const char *tag, const char *const *extra_env);
void kwt_private_stop(kwt_private *p);
/* Runs "<p->ctl> ARGS 2>&1": its exit status and its output (cap bytes). */
int kwt_private_ctl(const kwt_private *p, const char *args, char *out, size_t cap);

/* A TCP port nobody listens on right now. */
int kwt_free_port(void);
/* Path of a built binary: $KW_BUILD_DIR/name. */
const char *kwt_bin(const char *name, char *buf, size_t cap);
/* The same, as one single-quoted shell word (for system() and popen()). */
const char *kwt_bin_sh(const char *name, char *buf, size_t cap);
/* s as one single-quoted shell word in buf (fails the test if it does not fit). */
const char *kwt_shq(const char *s, char *buf, size_t cap);

#endif
