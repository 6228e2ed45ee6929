/* Black-box: TLS on the TCP listener, and the systemd notify protocol. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "kwtest.h"
#include "kwtest_http.h"

TestSuite(transport, .timeout = 120);

Test(transport, tls_listener_serves_https_only)
{
	char dir[] = "/tmp/kwtlsXXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
	         "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s/key.pem "
	         "-out %s/cert.pem -days 1 -subj /CN=localhost 2>/dev/null",
	         dir, dir);
	cr_assert_eq(system(cmd), 0);
	char cert[128], key[128];
	snprintf(cert, sizeof(cert), "KEYWARD_TLS_CERT=%s/cert.pem", dir);
	snprintf(key, sizeof(key), "KEYWARD_TLS_KEY=%s/key.pem", dir);
	const char *env[] = {cert, key, NULL};
	kwt_daemon d;
	kwt_daemon_start(&d, env);

	snprintf(cmd, sizeof(cmd),
	         "curl -sS --max-time 10 --cacert %s/cert.pem --resolve localhost:%d:127.0.0.1 "
	         "https://localhost:%d/healthz > %s/out.txt 2>&1",
	         dir, d.port, d.port, dir);
	cr_assert_eq(system(cmd), 0, "HTTPS request failed");
	char path[160], body[256] = "";
	snprintf(path, sizeof(path), "%s/out.txt", dir);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(body, sizeof(body), f));
	fclose(f);
	cr_assert_str_eq(body, "{\"status\":\"ok\"}");

	/* TLS 1.1 is refused. */
	snprintf(cmd, sizeof(cmd),
	         "curl -s --max-time 10 -k --tls-max 1.1 https://127.0.0.1:%d/healthz >/dev/null 2>&1",
	         d.port);
	cr_assert_neq(system(cmd), 0, "TLS 1.1 was accepted");
	/* TLS 1.2 with a CBC cipher (no AEAD) is refused; with an ECDHE AEAD one it is served. */
	snprintf(cmd, sizeof(cmd),
	         "curl -s --max-time 10 -k --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-SHA "
	         "https://127.0.0.1:%d/healthz >/dev/null 2>&1",
	         d.port);
	cr_assert_neq(system(cmd), 0, "a CBC cipher was accepted");
	snprintf(cmd, sizeof(cmd),
	         "curl -s --max-time 10 -k --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256 "
	         "https://127.0.0.1:%d/healthz >/dev/null 2>&1",
	         d.port);
	cr_assert_eq(system(cmd), 0, "TLS 1.2 with an AEAD cipher was refused");
	/* Plain HTTP to the TLS port gets no HTTP answer. */
	kwt_resp r;
	cr_assert(kwt_http_get(&d, "/healthz", &r) != 0 || r.status != 200);
	kwt_resp_free(&r);
	cr_assert_eq(kwt_daemon_stop(&d), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

static void notify_expect(int fd, const char *needle)
{
	char buf[512];
	for (int i = 0; i < 10; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
		cr_assert_gt(n, 0, "no notify message containing %s", needle);
		buf[n] = '\0';
		if (strstr(buf, needle))
			return;
	}
	cr_assert_fail("no notify message containing %s", needle);
}

Test(transport, sd_notify_ready_and_stopping)
{
	char path[108], env1[160];
	snprintf(path, sizeof(path), "/tmp/kwt-notify-%d.sock", (int)getpid());
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	struct timeval tv = {10, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(env1, sizeof(env1), "NOTIFY_SOCKET=%s", path);
	const char *env[] = {env1, NULL};
	kwt_daemon d;
	kwt_daemon_start(&d, env);
	notify_expect(fd, "READY=1");
	cr_assert_eq(kwt_daemon_stop(&d), 0);
	notify_expect(fd, "STOPPING=1");
	close(fd);
	unlink(path);
}
