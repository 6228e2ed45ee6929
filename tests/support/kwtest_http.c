/* kwtest_http.c — see kwtest_http.h. */
#include "kwtest_http.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

const char *kwt_bin(const char *name, char *buf, size_t cap)
{
	const char *dir = getenv("KW_BUILD_DIR");
	snprintf(buf, cap, "%s/%s", dir ? dir : ".", name);
	return buf;
}

const char *kwt_shq(const char *s, char *buf, size_t cap)
{
	size_t n = 0;
	buf[n++] = '\'';
	for (; *s != '\0'; s++) {
		const char *piece = *s == '\'' ? "'\\''" : NULL;
		size_t len = piece ? strlen(piece) : 1;
		cr_assert_lt(n + len + 2, cap, "a shell word does not fit its buffer");
		if (piece)
			memcpy(buf + n, piece, len);
		else
			buf[n] = *s;
		n += len;
	}
	buf[n++] = '\'';
	buf[n] = '\0';
	return buf;
}

const char *kwt_bin_sh(const char *name, char *buf, size_t cap)
{
	char path[1024];
	return kwt_shq(kwt_bin(name, path, sizeof(path)), buf, cap);
}

int kwt_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	cr_assert(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
	close(fd);
	return ntohs(sa.sin_port);
}

/* Child: environment for keywardd from the test environment. */
static pid_t spawn(const kwt_db *db, int port, const char *unix_path, const char *log_path,
                   const char *const *extra_env)
{
	char bin[512];
	kwt_bin("keywardd", bin, sizeof(bin));
	const char *module = kwt_env("KEYWARD_HSM_MODULE"), *uri = kwt_env("KEYWARD_HSM_URI"),
	           *pin = kwt_env("KEYWARD_HSM_PIN_SOURCE"), *sconf = kwt_env("SOFTHSM2_CONF");
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid > 0)
		return pid;
	int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	char listen[64];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	setenv("SOFTHSM2_CONF", sconf, 1);
	setenv("KEYWARD_MODE", "production", 1);
	setenv("KEYWARD_HTTP_LISTEN", listen, 1);
	setenv("KEYWARD_HTTP_UNIX_SOCKET", unix_path ? unix_path : "", 1);
	setenv("KEYWARD_HTTP_IO_THREADS", "2", 1);
	setenv("KEYWARD_HTTP_WORKERS", "4", 1);
	setenv("KEYWARD_HTTP_DRAIN_TIMEOUT_MS", "5000", 1);
	setenv("KEYWARD_HSM_MODULE", module, 1);
	setenv("KEYWARD_HSM_URI", uri, 1);
	setenv("KEYWARD_HSM_PIN_SOURCE", pin, 1);
	setenv("KEYWARD_DB_CONNINFO", db->app, 1);
	setenv("KEYWARD_DB_ADMIN_CONNINFO", db->admin, 1);
	setenv("KEYWARD_LOG_LEVEL", "info", 1);
	char mig[512];
	snprintf(mig, sizeof(mig), "%s/migrations",
	         getenv("KW_SOURCE_DIR") ? getenv("KW_SOURCE_DIR") : KW_SOURCE_DIR);
	setenv("KEYWARD_DB_MIGRATIONS_DIR", mig, 1);
	unsetenv("JOURNAL_STREAM");
	unsetenv("NOTIFY_SOCKET");
	for (size_t i = 0; extra_env && extra_env[i]; i++)
		putenv((char *)extra_env[i]);
	execl(bin, "keywardd", (char *)NULL);
	_exit(127);
}

static int connect_to(const kwt_daemon *d, bool use_unix)
{
	int fd;
	if (use_unix) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", d->unix_path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
			close(fd);
			return -1;
		}
		return fd;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)d->port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int parse_response(char *buf, size_t len, kwt_resp *out)
{
	char *sep = memmem(buf, len, "\r\n\r\n", 4);
	if (sep == NULL || len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
		return -1;
	size_t hlen = (size_t)(sep - buf);
	out->head = strndup(buf, hlen);
	out->status = (int)strtol(buf + 9, NULL, 10);
	char cl[32];
	const char *clv = kwt_resp_header(out, "Content-Length", cl, sizeof(cl));
	size_t blen = len - hlen - 4;
	if (clv) {
		size_t want = (size_t)strtoul(clv, NULL, 10);
		if (blen < want)
			return 1; /* need more */
		blen = want;
	}
	out->body = malloc(blen + 1);
	memcpy(out->body, sep + 4, blen);
	out->body[blen] = '\0';
	out->body_len = blen;
	return 0;
}

int kwt_http_raw(const kwt_daemon *d, bool use_unix, const void *raw, size_t len, kwt_resp *out)
{
	memset(out, 0, sizeof(*out));
	int fd = connect_to(d, use_unix);
	if (fd < 0)
		return -1;
	size_t sent = 0;
	while (sent < len) {
		ssize_t w = send(fd, (const char *)raw + sent, len - sent, MSG_NOSIGNAL);
		if (w <= 0)
			break; /* the server may answer (413/431) before reading everything */
		sent += (size_t)w;
	}
	size_t cap = 1 << 16, got = 0;
	char *buf = malloc(cap + 1);
	int rc = -1;
	for (;;) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, 20000) <= 0)
			break;
		if (got == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
		}
		ssize_t r = recv(fd, buf + got, cap - got, 0);
		if (r <= 0) {
			if (got > 0) {
				free(out->head);
				out->head = NULL;
				rc = parse_response(buf, got, out) == 0 ? 0 : -1;
			}
			break;
		}
		got += (size_t)r;
		free(out->head);
		out->head = NULL;
		int pr = parse_response(buf, got, out);
		if (pr == 0) {
			rc = 0;
			break;
		}
	}
	free(buf);
	close(fd);
	return rc;
}

int kwt_http_get(const kwt_daemon *d, const char *path, kwt_resp *out)
{
	char req[1024];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
	                 path);
	return kwt_http_raw(d, false, req, (size_t)n, out);
}

int kwt_http_post(const kwt_daemon *d, const char *path, const char *body, kwt_resp *out)
{
	size_t blen = strlen(body);
	char *req = malloc(blen + 512);
	int n = snprintf(req, blen + 512,
	                 "POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: "
	                 "application/json\r\nContent-Length: %zu\r\n\r\n%s",
	                 path, blen, body);
	int rc = kwt_http_raw(d, false, req, (size_t)n, out);
	free(req);
	return rc;
}

const char *kwt_resp_header(const kwt_resp *r, const char *name, char *buf, size_t cap)
{
	if (r->head == NULL)
		return NULL;
	size_t nl = strlen(name);
	for (const char *line = strstr(r->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
		const char *h = line + 2;
		if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
			const char *v = h + nl + 1;
			while (*v == ' ')
				v++;
			const char *e = strstr(v, "\r\n");
			size_t vl = e ? (size_t)(e - v) : strlen(v);
			if (vl >= cap)
				vl = cap - 1;
			memcpy(buf, v, vl);
			buf[vl] = '\0';
			return buf;
		}
	}
	return NULL;
}

void kwt_resp_free(kwt_resp *r)
{
	free(r->head);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

void kwt_assert_json_error(const kwt_resp *r, int status, const char *code)
{
	cr_assert_eq(r->status, status, "status %d, want %d; body: %s", r->status, status,
	             r->body ? r->body : "");
	char ct[128], rid[160];
	cr_assert_not_null(kwt_resp_header(r, "Content-Type", ct, sizeof(ct)));
	cr_assert(strncmp(ct, "application/json", 16) == 0, "content type %s", ct);
	cr_assert_not_null(kwt_resp_header(r, "X-Request-Id", rid, sizeof(rid)), "no X-Request-Id");
	json_error_t jerr;
	json_t *o = json_loadb(r->body, r->body_len, 0, &jerr);
	cr_assert_not_null(o, "error body is not JSON: %s", r->body);
	cr_assert_str_eq(json_string_value(json_object_get(o, "error")), code);
	cr_assert_not_null(json_string_value(json_object_get(o, "message")));
	cr_assert_str_eq(json_string_value(json_object_get(o, "request_id")), rid);
	json_decref(o);
}

/* Over the Unix socket: it is plain HTTP even when TCP speaks TLS. */
static bool healthy(const kwt_daemon *d)
{
	const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	kwt_resp r;
	bool ok = kwt_http_raw(d, true, req, sizeof(req) - 1, &r) == 0 && r.status == 200;
	kwt_resp_free(&r);
	return ok;
}

char *kwt_daemon_log(const kwt_daemon *d)
{
	FILE *f = fopen(d->log_path, "r");
	if (f == NULL)
		return strdup("");
	char *buf = calloc(1, 1 << 20);
	size_t n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

void kwt_daemon_start(kwt_daemon *d, const char *const *extra_env)
{
	memset(d, 0, sizeof(*d));
	kw_hsm *hsm = kwt_hsm_open(); /* makes sure the token has its keys */
	kw_hsm_close(hsm);
	kwt_db_create(&d->db);
	d->own_db = true;
	d->port = kwt_free_port();
	snprintf(d->unix_path, sizeof(d->unix_path), "/tmp/kwt-%d-%d.sock", (int)getpid(), d->port);
	snprintf(d->log_path, sizeof(d->log_path), "/tmp/kwt-%d-%d.log", (int)getpid(), d->port);
	d->pid = spawn(&d->db, d->port, d->unix_path, d->log_path, extra_env);
	for (int i = 0; i < 300; i++) {
		if (healthy(d))
			return;
		int st;
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			char *log = kwt_daemon_log(d);
			cr_assert_fail("keywardd exited at boot (status %d):\n%s", st, log);
		}
		struct timespec nap = {0, 50 * 1000 * 1000};
		nanosleep(&nap, NULL);
	}
	kill(d->pid, SIGKILL);
	cr_assert_fail("keywardd did not answer /healthz within 15 s");
}

int kwt_daemon_stop(kwt_daemon *d)
{
	int st = 0;
	if (d->pid > 0) {
		kill(d->pid, SIGTERM);
		for (int i = 0; i < 400; i++) {
			if (waitpid(d->pid, &st, WNOHANG) == d->pid)
				break;
			if (i == 399) {
				kill(d->pid, SIGKILL);
				waitpid(d->pid, &st, 0);
			}
			struct timespec nap = {0, 25 * 1000 * 1000};
			nanosleep(&nap, NULL);
		}
		d->pid = 0;
	}
	if (d->own_db)
		kwt_db_drop(&d->db);
	d->own_db = false;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int kwt_daemon_boot_fails(const kwt_db *db, const char *const *extra_env, char *last_line, size_t cap)
{
	char log_path[256];
	snprintf(log_path, sizeof(log_path), "/tmp/kwt-bootfail-%d.log", (int)getpid());
	pid_t pid = spawn(db, kwt_free_port(), NULL, log_path, extra_env);
	int st = 0;
	for (int i = 0; i < 600; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			break;
		if (i == 599) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			cr_assert_fail("keywardd kept running when it should have refused to boot");
		}
		struct timespec nap = {0, 25 * 1000 * 1000};
		nanosleep(&nap, NULL);
	}
	last_line[0] = '\0';
	FILE *f = fopen(log_path, "r");
	char line[1024];
	while (f && fgets(line, sizeof(line), f))
		snprintf(last_line, cap, "%s", line);
	if (f)
		fclose(f);
	unlink(log_path);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int kwt_http_req(const kwt_daemon *d, const char *method, const char *path, const char *headers,
                 const char *body, kwt_resp *out)
{
	size_t blen = body ? strlen(body) : 0, hlen = headers ? strlen(headers) : 0;
	size_t cap = blen + hlen + strlen(path) + 512;
	char *req = malloc(cap);
	/* The test's own User-Agent, if it sends one, is the only one. */
	bool own_ua = headers != NULL && strcasestr(headers, "User-Agent:") != NULL;
	int n = snprintf(req, cap,
	                 "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s%s"
	                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	                 method, path, own_ua ? "" : "User-Agent: kwtest/1\r\n", headers ? headers : "", blen,
	                 body ? body : "");
	int rc = kwt_http_raw(d, false, req, (size_t)n, out);
	free(req);
	return rc;
}

int kwt_ctl(const kwt_daemon *d, const char *args, char *out, size_t cap)
{
	char bin[600], cmd[2000];
	snprintf(cmd, sizeof(cmd), "KEYWARD_DB_ADMIN_CONNINFO='%s' %s %s 2>&1", d->db.admin,
	         kwt_bin_sh("keywardctl", bin, sizeof(bin)), args);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	size_t n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void kwt_audit_settle(const kwt_daemon *d)
{
	for (int i = 0; i < 100; i++) {
		kwt_resp r;
		if (kwt_http_get(d, "/metrics", &r) == 0) {
			bool settled =
			    r.status == 200 && strstr(r.body, "\nkeyward_audit_pending 0\n") != NULL;
			kwt_resp_free(&r);
			if (settled)
				return;
		}
		usleep(50 * 1000);
	}
	cr_assert_fail("the audit writer did not settle within 5 s");
}

void kwt_tenant_create(const kwt_daemon *d, const char *name, kwt_tenant *out)
{
	char bin[600], cmd[2048];
	kwt_bin_sh("keywardctl", bin, sizeof(bin));
	snprintf(cmd, sizeof(cmd),
	         "KEYWARD_DB_ADMIN_CONNINFO='%s' KEYWARD_MODE=production %s tenant create '%s' 2>/dev/null",
	         d->db.admin, bin, name);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	char line[512];
	memset(out, 0, sizeof(*out));
	while (fgets(line, sizeof(line), p)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "tenant_id: ", 11) == 0)
			snprintf(out->id, sizeof(out->id), "%.63s", line + 11);
		else if (strncmp(line, "api_key: ", 9) == 0)
			snprintf(out->admin_key, sizeof(out->admin_key), "%.127s", line + 9);
	}
	cr_assert_eq(pclose(p), 0, "keywardctl tenant create %s failed", name);
	cr_assert(out->id[0] && out->admin_key[0], "keywardctl printed no tenant id or key");
	snprintf(out->auth, sizeof(out->auth), "Authorization: Bearer %s\r\n", out->admin_key);
}

void kwt_api_key_create(const kwt_daemon *d, const kwt_tenant *t, const char *name, const char *scopes_json,
                        int rate_limit, char key[128], char id[64])
{
	char body[512];
	if (rate_limit > 0)
		snprintf(body, sizeof(body), "{\"name\":\"%s\",\"scopes\":%s,\"rate_limit_per_minute\":%d}",
		         name, scopes_json, rate_limit);
	else
		snprintf(body, sizeof(body), "{\"name\":\"%s\",\"scopes\":%s}", name, scopes_json);
	kwt_resp r;
	cr_assert_eq(kwt_http_req(d, "POST", "/api/v1/api-keys", t->auth, body, &r), 0);
	cr_assert_eq(r.status, 201, "create key: %d %s", r.status, r.body);
	json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
	cr_assert_not_null(o);
	snprintf(key, 128, "%s", json_string_value(json_object_get(o, "key")));
	snprintf(id, 64, "%s", json_string_value(json_object_get(o, "id")));
	json_decref(o);
	kwt_resp_free(&r);
}

void kwt_private_start(kwt_private *p, const char *tag, const char *const *extra_env)
{
	char cmd[2048], bin[600];
	memset(p, 0, sizeof(*p));
	snprintf(p->label, sizeof(p->label), "kwt-%s-%d", tag, (int)getpid());
	snprintf(cmd, sizeof(cmd),
	         "softhsm2-util --init-token --free --label %s --pin 87654321 --so-pin 12345678 >/dev/null",
	         p->label);
	cr_assert_eq(system(cmd), 0);
	snprintf(p->pin, sizeof(p->pin), "/tmp/kwt_private_pin_XXXXXX");
	int fd = mkstemp(p->pin);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "87654321", 8), 8);
	close(fd);
	snprintf(p->uri_env, sizeof(p->uri_env), "KEYWARD_HSM_URI=pkcs11:token=%s", p->label);
	snprintf(p->pin_env, sizeof(p->pin_env), "KEYWARD_HSM_PIN_SOURCE=%s", p->pin);
	snprintf(cmd, sizeof(cmd),
	         "KEYWARD_HSM_URI='pkcs11:token=%s' KEYWARD_HSM_PIN_SOURCE=%s %s token init >/dev/null",
	         p->label, p->pin, kwt_bin_sh("keywardctl", bin, sizeof(bin)));
	cr_assert_eq(system(cmd), 0);
	const char *env[16] = {p->uri_env, p->pin_env, "KEYWARD_AUTH_HOUSEKEEPING_INTERVAL=1s"};
	size_t n = 3;
	for (size_t i = 0; extra_env != NULL && extra_env[i] != NULL && n < 15; i++)
		env[n++] = extra_env[i];
	env[n] = NULL;
	kwt_daemon_start(&p->d, env);
	snprintf(p->ctl, sizeof(p->ctl),
	         "KEYWARD_HSM_URI='pkcs11:token=%s' KEYWARD_HSM_PIN_SOURCE=%s "
	         "KEYWARD_AUTH_HOUSEKEEPING_INTERVAL=1s "
	         "KEYWARD_DB_ADMIN_CONNINFO='%s' %s",
	         p->label, p->pin, p->d.db.admin, kwt_bin_sh("keywardctl", bin, sizeof(bin)));
}

void kwt_private_stop(kwt_private *p)
{
	kwt_daemon_stop(&p->d);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "softhsm2-util --delete-token --token %s >/dev/null 2>&1", p->label);
	int rc = system(cmd); /* best effort: a leftover test token harms nothing */
	(void)rc;
	unlink(p->pin);
}

int kwt_private_ctl(const kwt_private *p, const char *args, char *out, size_t cap)
{
	char cmd[2048], line[1024];
	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", p->ctl, args);
	FILE *f = popen(cmd, "r");
	cr_assert_not_null(f);
	size_t used = 0;
	if (out)
		out[0] = '\0';
	while (fgets(line, sizeof(line), f)) {
		size_t n = strlen(line);
		if (out && used + n < cap) {
			memcpy(out + used, line, n + 1);
			used += n;
		}
	}
	int st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
