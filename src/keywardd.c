/* keywardd — the HSM-backed key service.
 *
 * Wires the modules in order (config, log, token, database, audit writer,
 * worker pool, HTTP server), tells systemd it is ready, then waits for
 * signals on the main thread: SIGHUP reopens the log, SIGTERM/SIGINT drain
 * in-flight requests and tear everything down in reverse. All other
 * threads block these signals. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "keyward/api/api.h"
#include "keyward/app/app.h"
#include "keyward/audit/audit.h"
#include "keyward/core/log.h"
#include "keyward/core/secret.h"

static void usage(void)
{
	fprintf(stderr,
	        "usage: keywardd [-c /etc/keyward/keywardd.conf]\n"
	        "Every setting can be overridden by KEYWARD_SECTION_KEY (e.g. KEYWARD_HTTP_LISTEN).\n");
}

int main(int argc, char **argv)
{
	const char *conf = NULL;
	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
			conf = argv[++i];
		} else if (!strcmp(argv[i], "--version")) {
			puts("keywardd 0.1.0");
			return 0;
		} else {
			usage();
			return 2;
		}
	}
	/* Secrets pass through this process: no core dumps, no ptrace by peers. */
	prctl(PR_SET_DUMPABLE, 0);
	struct rlimit nocore = {0, 0};
	setrlimit(RLIMIT_CORE, &nocore);

	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	kw_config cfg;
	char errbuf[512] = "";
	kw_log_open(NULL);
	if (kw_secure_heap_init() != KW_OK) {
		fprintf(stderr, "keywardd: cannot set up OpenSSL's secure heap\n");
		return 1;
	}
	if (kw_config_load(&cfg, conf, errbuf, sizeof(errbuf)) != KW_OK) {
		fprintf(stderr, "keywardd: %s\n", errbuf);
		kw_config_free(&cfg);
		return 1;
	}
	kw_log_level level;
	if (!kw_log_parse_level(cfg.log_level, &level)) {
		fprintf(stderr, "keywardd: log.level must be err, warn, info or debug\n");
		kw_config_free(&cfg);
		return 1;
	}
	kw_log_set_level(level);
	if (kw_log_open(cfg.log_file) != 0) {
		fprintf(stderr, "keywardd: cannot open log file %s\n", cfg.log_file);
		kw_config_free(&cfg);
		return 1;
	}

	kw_app app;
	memset(&app, 0, sizeof(app));
	int rc = 1;
	if (kw_server_validate(&cfg, errbuf, sizeof(errbuf)) != KW_OK)
		goto out;
	if (kw_app_boot(&app, &cfg, errbuf, sizeof(errbuf)) != KW_OK)
		goto out;
	/* From here on every audit chain's progress is logged (none has any
	 * yet): at each checkpoint interval, when it ends, and at shutdown. */
	(void)kw_audit_checkpoints_log(false);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int workers = cfg.workers > 0 ? cfg.workers : (int)(ncpu > 0 ? ncpu * 2 : 2);
	kw_pool_hooks hooks = kw_app_pool_hooks(&app);
	if (kw_pool_start(&hooks, workers, cfg.queue_max, &app.pool) != KW_OK) {
		snprintf(errbuf, sizeof(errbuf), "cannot start the worker pool");
		goto out;
	}
	if (kw_housekeeper_start(&app, &app.housekeeper) != KW_OK) {
		snprintf(errbuf, sizeof(errbuf), "cannot start the housekeeping thread");
		goto out;
	}
	kw_server_opts opts = {.cfg = &cfg,
	                       .trusted = app.trusted,
	                       .pool = app.pool,
	                       .app = &app,
	                       .routes = kw_api_routes,
	                       .nroutes = kw_api_routes_count};
	if (kw_server_start(&opts, &app.server, errbuf, sizeof(errbuf)) != KW_OK)
		goto out;
	kw_info("keywardd ready: listen=%s unix=%s workers=%d mode=%s", cfg.listen[0] ? cfg.listen : "-",
	        cfg.unix_socket[0] ? cfg.unix_socket : "-", workers,
	        cfg.development ? "development" : "production");
	sd_notify(0, "READY=1\nSTATUS=serving");

	uint64_t wd_usec = 0;
	bool watchdog = sd_watchdog_enabled(0, &wd_usec) > 0;
	for (;;) {
		int sig;
		if (watchdog) {
			struct timespec ts = {(time_t)(wd_usec / 2000000),
			                      (long)((wd_usec / 2) % 1000000) * 1000};
			sig = sigtimedwait(&sigs, NULL, &ts);
			if (sig < 0) {
				if (errno == EAGAIN)
					sd_notify(0, "WATCHDOG=1");
				continue;
			}
		} else if (sigwait(&sigs, &sig) != 0) {
			continue;
		}
		if (sig == SIGHUP) {
			if (kw_log_open(cfg.log_file) != 0)
				kw_err_log("SIGHUP: cannot reopen log file");
			else
				kw_info("SIGHUP: log reopened");
			continue;
		}
		break;
	}
	sd_notify(0, "STOPPING=1");
	kw_info("shutting down: draining %ld request(s) in flight", kw_server_in_flight(app.server));
	int left = kw_server_drain(app.server, cfg.drain_timeout_ms);
	if (left > 0) {
		kw_warn("drain timeout: %d request(s) abandoned", left);
		kw_pool_cancel_queued(app.pool);
	}
	rc = 0;
out:
	/* Housekeeping may nudge the pool's idle workers: it stops first. */
	kw_housekeeper_stop(app.housekeeper);
	app.housekeeper = NULL;
	kw_pool_stop(app.pool);
	app.pool = NULL;
	/* The writer's last rows answer their requests through the server's
	 * loops: flush it while they still exist. The loops may still read its
	 * counters (/metrics), so it is freed only after them. */
	kw_audit_writer_join(app.audit);
	/* Every chain's last checkpoint, now that nothing appends any more. */
	kw_audit_checkpoints_log(true);
	kw_server_free(app.server);
	app.server = NULL;
	kw_audit_writer_stop(app.audit);
	app.audit = NULL;
	kw_app_shutdown(&app);
	kw_config_free(&cfg);
	if (rc != 0) {
		/* The boot refusal is the last line, and the only one it needs. */
		fprintf(stderr, "keywardd: %s\n", errbuf[0] ? errbuf : "boot failed");
		return rc;
	}
	kw_info("stopped");
	return 0;
}
