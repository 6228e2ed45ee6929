/* baseline_aesgcm — the raw in-process AES-256-GCM encrypt rate of
 * OpenSSL's EVP on one thread: 64-byte messages, each with its own IV and
 * tag, one cipher context reused (the cheapest way EVP allows). The
 * yardstick bench/transit.sh measures batch encrypt items/s against.
 *   kw_bench_aesgcm [SECONDS=5]   prints "... rate=<messages>/s" */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 5.0;
	unsigned char key[32], iv[12], pt[64], ct[64], tag[16];
	if (secs <= 0 || RAND_bytes(key, sizeof(key)) != 1 || RAND_bytes(iv, sizeof(iv)) != 1 ||
	    RAND_bytes(pt, sizeof(pt)) != 1) {
		fprintf(stderr, "usage: kw_bench_aesgcm [SECONDS]\n");
		return 2;
	}
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL) != 1)
		return 1;
	unsigned long long n = 0;
	double t0 = now_s(), t = t0;
	while (t - t0 < secs) {
		for (int i = 0; i < 1000; i++, n++) {
			int len = 0, fin = 0;
			memcpy(iv, &n, sizeof(n)); /* a distinct IV per message */
			if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1 ||
			    EVP_EncryptUpdate(ctx, ct, &len, pt, sizeof(pt)) != 1 ||
			    EVP_EncryptFinal_ex(ctx, ct + len, &fin) != 1 ||
			    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, sizeof(tag), tag) != 1)
				return 1;
		}
		t = now_s();
	}
	EVP_CIPHER_CTX_free(ctx);
	printf("kw_bench_aesgcm: AES-256-GCM encrypt, 64 B, 1 thread, %.1f s: rate=%.0f/s\n", t - t0,
	       (double)n / (t - t0));
	return 0;
}
