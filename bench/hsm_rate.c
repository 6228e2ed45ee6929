/* hsm_rate.c — see hsm_rate.h. */
#include "hsm_rate.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 64

typedef struct worker {
	pthread_t thread;
	const kw_bench_op *op;
	kw_hsm_session *session;
	const kw_hsm_key *key;
	alignas(16) unsigned char state[KW_BENCH_STATE_MAX];
	unsigned long long ops;
	kw_err err;
} worker;

static atomic_bool go, stop;

static void *loop(void *arg)
{
	worker *w = arg;
	while (!atomic_load(&go))
		;
	while (!atomic_load(&stop)) {
		if ((w->err = w->op->once(w->session, w->key, w->state, w->ops)) != KW_OK)
			break;
		w->ops++;
	}
	return NULL;
}

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && *v ? v : def;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int kw_bench_hsm_rate(int argc, char **argv, const kw_bench_op *op)
{
	long nthreads = argc > 1 ? strtol(argv[1], NULL, 10) : 2;
	long seconds = argc > 2 ? strtol(argv[2], NULL, 10) : 5;
	const char *objects = argc > 3 ? argv[3] : "token";
	bool copy = strcmp(objects, "copy") == 0;
	if (nthreads < 1 || nthreads > MAX_THREADS || seconds < 1 ||
	    (!copy && strcmp(objects, "token") != 0)) {
		fprintf(stderr, "usage: %s [THREADS 1-%d] [SECONDS >= 1] [token|copy]\n", op->program,
		        MAX_THREADS);
		return 2;
	}
	kw_hsm_options opt = {.module_path = env_or("KEYWARD_HSM_MODULE", "/usr/lib/softhsm/libsofthsm2.so"),
	                      .token_uri = env_or("KEYWARD_HSM_URI", "pkcs11:token=keyward"),
	                      .pin_file = getenv("KEYWARD_HSM_PIN_SOURCE"),
	                      .max_sessions = (unsigned)nthreads,
	                      .token_objects_only = !copy};
	if (opt.pin_file == NULL) {
		fprintf(stderr, "%s: KEYWARD_HSM_PIN_SOURCE is not set\n", op->program);
		return 1;
	}
	kw_hsm *hsm;
	const kw_hsm_key *key;
	kw_err err = kw_hsm_open(&opt, &hsm);
	if (err != KW_OK) {
		fprintf(stderr, "%s: cannot open the token: %s\n", op->program, kw_err_str(err));
		return 1;
	}
	if ((err = kw_hsm_key_active(hsm, op->family, &key)) != KW_OK) {
		fprintf(stderr, "%s: no %s (keywardctl token init?): %s\n", op->program, op->key_name,
		        kw_err_str(err));
		kw_hsm_close(hsm);
		return 1;
	}

	static worker w[MAX_THREADS];
	long started = 0;
	for (; started < nthreads; started++) {
		w[started] = (worker){.op = op, .key = key};
		if ((err = kw_hsm_session_open(hsm, &w[started].session)) != KW_OK)
			break;
		if (op->prepare != NULL &&
		    (err = op->prepare(w[started].session, key, w[started].state)) != KW_OK) {
			kw_hsm_session_close(w[started].session);
			break;
		}
		if (pthread_create(&w[started].thread, NULL, loop, &w[started]) != 0) {
			kw_hsm_session_close(w[started].session);
			err = KW_ERR_INTERNAL;
			break;
		}
	}
	/* Every session is open before the clock starts: time only the operation. */
	double t0 = now();
	atomic_store(&go, true);
	if (err == KW_OK) {
		struct timespec d = {.tv_sec = seconds};
		while (nanosleep(&d, &d) != 0)
			;
	}
	atomic_store(&stop, true);
	double elapsed = now() - t0;

	unsigned long long ops = 0;
	for (long i = 0; i < started; i++) {
		pthread_join(w[i].thread, NULL);
		kw_hsm_session_close(w[i].session);
		ops += w[i].ops;
		if (w[i].err != KW_OK && err == KW_OK)
			err = w[i].err;
	}
	kw_hsm_close(hsm);
	if (err != KW_OK) {
		fprintf(stderr, "%s: %s\n", op->program, kw_err_str(err));
		return 1;
	}
	printf("%s threads=%ld seconds=%ld objects=%s ops=%llu rate=%.0f/s\n", op->label, nthreads, seconds,
	       objects, ops, (double)ops / elapsed);
	return 0;
}
