/* hsm_rate.h — the harness of the raw token rates bench/ compares the
 * service to (kw_bench_ecdsa, kw_bench_gcm): N threads, each on its own
 * session, doing one operation in a loop for a fixed time.
 *   PROGRAM [THREADS=2] [SECONDS=5] [token|copy]
 * token (the default, the yardstick): every operation names the token
 * object, as the issues define their baselines; copy: each session works
 * on its own session-object copy of the key, as keywardd does.
 * The token comes from KEYWARD_HSM_MODULE, KEYWARD_HSM_URI and
 * KEYWARD_HSM_PIN_SOURCE, as tokens/provision-softhsm.sh prints them. */
#ifndef KEYWARD_BENCH_HSM_RATE_H
#define KEYWARD_BENCH_HSM_RATE_H

#include "keyward/hsm/hsm.h"

/* Per-thread room an operation may keep its input in. */
#define KW_BENCH_STATE_MAX 512

typedef struct kw_bench_op {
	const char *program; /* "kw_bench_gcm", for messages */
	const char *label;   /* "gcm_decrypt", the first word of the result line */
	kw_key_family family;
	const char *key_name; /* "KEK", for "no KEK (keywardctl token init?)" */
	/* Before the clock starts, on the thread's session: fills state. */
	kw_err (*prepare)(kw_hsm_session *s, const kw_hsm_key *k, unsigned char *state);
	/* One timed operation; n counts the operations done so far. */
	kw_err (*once)(kw_hsm_session *s, const kw_hsm_key *k, unsigned char *state, unsigned long long n);
} kw_bench_op;

/* Runs the bench and prints "LABEL threads=.. seconds=.. objects=..
 * ops=.. rate=N/s"; the process exit status. */
int kw_bench_hsm_rate(int argc, char **argv, const kw_bench_op *op);

#endif
