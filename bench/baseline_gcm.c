/* baseline_gcm — the raw token AES-256-GCM decrypt rate: each thread
 * unwraps a 48-byte blob (a 32-byte key and its tag, with a vault-sized
 * AAD) under the token's KEK in a loop through kw_hsm_gcm_decrypt
 * (C_DecryptInit + C_Decrypt). The yardstick bench/vault.sh measures
 * GET /api/v1/me/encryption-vault/key against.
 *   kw_bench_gcm [THREADS=2] [SECONDS=5] [token|copy]   (see hsm_rate.h) */
#include <string.h>

#include "hsm_rate.h"

/* The AAD of a vault row: purpose, tenant, user, KEK version. */
static const char aad[] = "keyward:v1:encryption-vault:6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f:user-1:1";

typedef struct blob {
	unsigned char ct[48], iv[KW_GCM_IV_LEN];
} blob;

/* A blob to unwrap, made by the token as the service makes them. */
static kw_err prepare(kw_hsm_session *s, const kw_hsm_key *k, unsigned char *state)
{
	blob *b = (blob *)state;
	unsigned char mk[32] = {1};
	return kw_hsm_gcm_encrypt(s, k, (const unsigned char *)aad, sizeof(aad) - 1, mk, sizeof(mk), b->iv,
	                          b->ct);
}

static kw_err once(kw_hsm_session *s, const kw_hsm_key *k, unsigned char *state, unsigned long long n)
{
	(void)n;
	const blob *b = (const blob *)state;
	unsigned char mk[32];
	return kw_hsm_gcm_decrypt(s, k, b->iv, (const unsigned char *)aad, sizeof(aad) - 1, b->ct,
	                          sizeof(b->ct), mk);
}

int main(int argc, char **argv)
{
	_Static_assert(sizeof(blob) <= KW_BENCH_STATE_MAX, "blob fits the state");
	static const kw_bench_op op = {"kw_bench_gcm", "gcm_decrypt", KW_KEY_KEK, "KEK", prepare, once};
	return kw_bench_hsm_rate(argc, argv, &op);
}
