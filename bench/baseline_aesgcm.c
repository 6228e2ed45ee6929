/* baseline_aesgcm — the raw in-process AES-256-GCM encrypt rate of
 * OpenSSL's EVP on one thread: 64-byte messages, each with its own IV and
 * tag, one cipher context reused (the cheapest way EVP allows). The
 * yardstick bench/transit.sh measures batch encrypt items/s against.
 *   kw_bench_aesgcm [SECONDS=5]        prints "... rate=<messages>/s"
 *   kw_bench_aesgcm SECONDS json       what JSON alone costs a batch of
 *     1000 × 64 B (jansson, as the service uses it, one thread): parsing
 *     the request, and building and printing the answer, in items/s */
#include <jansson.h>
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

/* The JSON floor of a 1000-item batch: items/s of parse and of answer. */
static int json_floor(double secs)
{
	char item[128];
	size_t cap = 1000 * 120 + 32, n = 0;
	char *body = malloc(cap);
	n += (size_t)snprintf(body + n, cap - n, "{\"batch\":[");
	for (int i = 0; i < 1000; i++) {
		snprintf(item, sizeof(item), "%s{\"plaintext\":\"%086dAA==\"}", i ? "," : "",
		         i); /* 64 B in base64 */
		n += (size_t)snprintf(body + n, cap - n, "%s", item);
	}
	n += (size_t)snprintf(body + n, cap - n, "]}");
	unsigned long long parsed = 0, printed = 0;
	double t0 = now_s(), t = t0;
	while (t - t0 < secs) {
		json_t *o = json_loadb(body, n, JSON_REJECT_DUPLICATES, NULL);
		if (json_array_size(json_object_get(o, "batch")) != 1000)
			return 1;
		json_decref(o);
		parsed += 1000;
		t = now_s();
	}
	double tp = t - t0;
	t0 = now_s(), t = t0;
	while (t - t0 < secs) {
		json_t *a = json_array();
		for (int i = 0; i < 1000; i++)
			json_array_append_new(
			    a, json_pack("{s:s, s:I}", "ciphertext",
			                 "$enc1$v1$AAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
			                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==$"
			                 "AAAAAAAAAAAAAAAAAAAAAA==",
			                 "key_version", (json_int_t)1));
		json_t *o = json_pack("{s:o}", "batch", a);
		char *text = json_dumps(o, JSON_COMPACT);
		free(text);
		json_decref(o);
		printed += 1000;
		t = now_s();
	}
	printf("kw_bench_aesgcm: jansson, batch of 1000 x 64 B, 1 thread: parse rate=%.0f/s, answer "
	       "rate=%.0f/s\n",
	       (double)parsed / tp, (double)printed / (t - t0));
	free(body);
	return 0;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 5.0;
	if (argc > 2 && strcmp(argv[2], "json") == 0)
		return json_floor(secs);
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
