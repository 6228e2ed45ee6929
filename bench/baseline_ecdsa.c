/* baseline_ecdsa — the raw token ECDSA P-256 sign rate: each thread signs
 * a JWT-sized message in a loop through kw_hsm_ecdsa_sign (SHA-256 in
 * process, then C_SignInit + C_Sign). The yardstick bench/tokens.sh
 * measures login/s against.
 *   kw_bench_ecdsa [THREADS=2] [SECONDS=5] [token|copy]   (see hsm_rate.h) */
#include <string.h>

#include "hsm_rate.h"

/* About the size of an ES256 signing input: base64url(header).base64url(claims). */
#define MSG_LEN 300

static kw_err prepare(kw_hsm_session *s, const kw_hsm_key *k, unsigned char *state)
{
	(void)s;
	(void)k;
	memset(state, 'a', MSG_LEN);
	return KW_OK;
}

static kw_err once(kw_hsm_session *s, const kw_hsm_key *k, unsigned char *state, unsigned long long n)
{
	unsigned char sig[KW_ECDSA_SIG_LEN];
	state[0] = (unsigned char)n; /* a different message each time, as logins are */
	return kw_hsm_ecdsa_sign(s, k, state, MSG_LEN, sig);
}

int main(int argc, char **argv)
{
	_Static_assert(MSG_LEN <= KW_BENCH_STATE_MAX, "the message fits the state");
	static const kw_bench_op op = {"kw_bench_ecdsa", "ecdsa_sign", KW_KEY_JWT, "JWT key", prepare, once};
	return kw_bench_hsm_rate(argc, argv, &op);
}
