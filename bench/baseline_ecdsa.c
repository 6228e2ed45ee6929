/* baseline_ecdsa — the raw token ECDSA P-256 sign rate: N threads, each on
 * its own session, signing a JWT-sized message in a loop through
 * kw_hsm_ecdsa_sign (SHA-256 in process, then C_SignInit + C_Sign). The
 * yardstick bench/tokens.sh measures login/s against.
 *   kw_bench_ecdsa [THREADS=2] [SECONDS=5] [token|copy]
 * token (the default, the yardstick): every operation names the token
 * object, as the baseline is defined; copy: each session works on
 * its own session-object copy of the key, as keywardd does.
 * The token comes from KEYWARD_HSM_MODULE, KEYWARD_HSM_URI and
 * KEYWARD_HSM_PIN_SOURCE, as tokens/provision-softhsm.sh prints them. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyward/hsm.h"

#define MAX_THREADS 64

typedef struct worker {
	pthread_t thread;
	kw_hsm_session *session;
	const kw_hsm_key *key;
	unsigned long long ops;
	kw_err err;
} worker;

static atomic_bool go, stop;

static void *sign_loop(void *arg)
{
	worker *w = arg;
	/* About the size of an ES256 signing input: base64url(header).base64url(claims). */
	unsigned char msg[300], sig[KW_ECDSA_SIG_LEN];
	memset(msg, 'a', sizeof(msg));
	while (!atomic_load(&go))
		;
	while (!atomic_load(&stop)) {
		msg[0] = (unsigned char)w->ops; /* a different message each time, as logins are */
		if ((w->err = kw_hsm_ecdsa_sign(w->session, w->key, msg, sizeof(msg), sig)) != KW_OK)
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

int main(int argc, char **argv)
{
	long nthreads = argc > 1 ? strtol(argv[1], NULL, 10) : 2;
	long seconds = argc > 2 ? strtol(argv[2], NULL, 10) : 5;
	const char *objects = argc > 3 ? argv[3] : "token";
	bool copy = strcmp(objects, "copy") == 0;
	if (nthreads < 1 || nthreads > MAX_THREADS || seconds < 1 ||
	    (!copy && strcmp(objects, "token") != 0)) {
		fprintf(stderr, "usage: kw_bench_ecdsa [THREADS 1-%d] [SECONDS >= 1] [token|copy]\n",
		        MAX_THREADS);
		return 2;
	}
	kw_hsm_options opt = {.module_path = env_or("KEYWARD_HSM_MODULE", "/usr/lib/softhsm/libsofthsm2.so"),
	                      .token_uri = env_or("KEYWARD_HSM_URI", "pkcs11:token=keyward"),
	                      .pin_file = getenv("KEYWARD_HSM_PIN_SOURCE"),
	                      .max_sessions = (unsigned)nthreads,
	                      .token_objects_only = !copy};
	if (opt.pin_file == NULL) {
		fprintf(stderr, "kw_bench_ecdsa: KEYWARD_HSM_PIN_SOURCE is not set\n");
		return 1;
	}
	kw_hsm *hsm;
	const kw_hsm_key *key;
	kw_err err = kw_hsm_open(&opt, &hsm);
	if (err != KW_OK) {
		fprintf(stderr, "kw_bench_ecdsa: cannot open the token: %s\n", kw_err_str(err));
		return 1;
	}
	if ((err = kw_hsm_key_active(hsm, KW_KEY_JWT, &key)) != KW_OK) {
		fprintf(stderr, "kw_bench_ecdsa: no JWT key (keywardctl token init?): %s\n", kw_err_str(err));
		kw_hsm_close(hsm);
		return 1;
	}

	worker w[MAX_THREADS];
	memset(w, 0, sizeof(w));
	long started = 0;
	for (; started < nthreads; started++) {
		w[started].key = key;
		if ((err = kw_hsm_session_open(hsm, &w[started].session)) != KW_OK)
			break;
		if (pthread_create(&w[started].thread, NULL, sign_loop, &w[started]) != 0) {
			kw_hsm_session_close(w[started].session);
			err = KW_ERR_INTERNAL;
			break;
		}
	}
	/* Every session is open before the clock starts: time only signing. */
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
		fprintf(stderr, "kw_bench_ecdsa: %s\n", kw_err_str(err));
		return 1;
	}
	printf("ecdsa_sign threads=%ld seconds=%ld objects=%s ops=%llu rate=%.0f/s\n", nthreads, seconds,
	       objects, ops, (double)ops / elapsed);
	return 0;
}
