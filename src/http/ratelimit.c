/* ratelimit.c — bounded, sharded token buckets.
 *
 * Each shard is a small open-addressed table behind its own mutex; a key
 * probes 8 slots. Memory is fixed at creation: a flood of distinct keys
 * evicts buckets instead of growing the table. Two things keep a caller
 * from steering that to its advantage (evicting its own drained failure
 * budget, or a victim's): slots come from SipHash under a random key of
 * this process, so nobody can choose keys that share a victim's slots; and
 * a new key takes the slot whose bucket is fullest now — evicting a full
 * bucket loses nothing (a new one starts full), a drained one is evicted
 * last. */
#include "keyward/http/ratelimit.h"

#include "keyward/core/error.h"

#include <math.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KW_RL_SHARDS 16
#define KW_RL_PROBE  8
#define KW_RL_KEY    128 /* longer keys are a caller's bug (they would never match) */

typedef struct kw_bucket {
	char key[KW_RL_KEY];
	double tokens;
	double cap;  /* its limit per minute: it refills at cap / 60 a second */
	double last; /* 0 = empty slot */
} kw_bucket;

typedef struct kw_shard {
	pthread_mutex_t lock;
	kw_bucket *slots; /* guarded by lock */
	size_t mask;
} kw_shard;

struct kw_ratelimit {
	kw_shard shards[KW_RL_SHARDS];
	EVP_MAC_CTX *siphash; /* keyed once; duplicated per lookup */
};

double kw_ratelimit_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* SipHash-2-4 of s under this process's key. */
static uint64_t hash(const kw_ratelimit *rl, const char *s)
{
	unsigned char out[8] = {0};
	size_t n = 0;
	EVP_MAC_CTX *c = EVP_MAC_CTX_dup(rl->siphash);
	if (c == NULL || EVP_MAC_update(c, (const unsigned char *)s, strlen(s)) != 1 ||
	    EVP_MAC_final(c, out, &n, sizeof(out)) != 1)
		kw_misuse("kw_ratelimit: SipHash failed");
	EVP_MAC_CTX_free(c);
	uint64_t h = 0;
	for (int i = 0; i < 8; i++)
		h = h << 8 | out[i];
	return h;
}

static EVP_MAC_CTX *siphash_new(void)
{
	unsigned char key[16];
	size_t size = 8;
	OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
	                       OSSL_PARAM_construct_end()};
	EVP_MAC *m = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
	EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
	EVP_MAC_free(m);
	if (c == NULL || RAND_bytes(key, sizeof(key)) != 1 ||
	    EVP_MAC_init(c, key, sizeof(key), params) != 1) {
		EVP_MAC_CTX_free(c);
		c = NULL;
	}
	OPENSSL_cleanse(key, sizeof(key));
	return c;
}

kw_ratelimit *kw_ratelimit_new(size_t capacity)
{
	kw_ratelimit *rl = calloc(1, sizeof(*rl));
	if (rl == NULL)
		return NULL;
	if ((rl->siphash = siphash_new()) == NULL) {
		free(rl);
		return NULL;
	}
	size_t per = 64;
	while (per * KW_RL_SHARDS < capacity)
		per *= 2;
	for (int i = 0; i < KW_RL_SHARDS; i++) {
		pthread_mutex_init(&rl->shards[i].lock, NULL);
		rl->shards[i].slots = calloc(per, sizeof(kw_bucket));
		rl->shards[i].mask = per - 1;
		if (rl->shards[i].slots == NULL) {
			kw_ratelimit_free(rl);
			return NULL;
		}
	}
	return rl;
}

void kw_ratelimit_free(kw_ratelimit *rl)
{
	if (rl == NULL)
		return;
	for (int i = 0; i < KW_RL_SHARDS; i++) {
		free(rl->shards[i].slots);
		pthread_mutex_destroy(&rl->shards[i].lock);
	}
	EVP_MAC_CTX_free(rl->siphash);
	free(rl);
}

/* A bucket's tokens at now. */
static double level(const kw_bucket *b, double now)
{
	return fmin(b->cap, b->tokens + (now - b->last) * b->cap / 60.0);
}

/* call with shard lock held */
static kw_bucket *find_locked(kw_shard *sh, const char *key, uint64_t h, double now, double cap)
{
	kw_bucket *victim = NULL;
	double victim_level = -1;
	for (size_t i = 0; i < KW_RL_PROBE; i++) {
		kw_bucket *b = &sh->slots[(h + i) & sh->mask];
		if (b->last != 0 && strcmp(b->key, key) == 0)
			return b;
		/* An empty slot first, else the fullest bucket for its own limit
		 * (ties: the idlest): a drained one is evicted last. */
		double l = b->last == 0 ? INFINITY : level(b, now) / b->cap;
		if (victim == NULL || l > victim_level || (l == victim_level && b->last < victim->last)) {
			victim = b;
			victim_level = l;
		}
	}
	/* New key: a full bucket. */
	snprintf(victim->key, sizeof(victim->key), "%s", key);
	victim->tokens = cap;
	victim->cap = cap;
	victim->last = now;
	return victim;
}

static void step(kw_ratelimit *rl, const char *key, int per_minute, double now, bool take, kw_rl_result *out)
{
	double cap = per_minute > 0 ? per_minute : 1;
	double rate = cap / 60.0;
	if (strlen(key) >= KW_RL_KEY)
		kw_misuse("kw_ratelimit: key too long");
	uint64_t h = hash(rl, key);
	kw_shard *sh = &rl->shards[h % KW_RL_SHARDS];
	pthread_mutex_lock(&sh->lock);
	kw_bucket *b = find_locked(sh, key, h / KW_RL_SHARDS, now, cap);
	b->cap = cap; /* a key's limit may change (an API key's own) */
	b->tokens = fmin(cap, level(b, now));
	b->last = now;
	bool allowed = b->tokens >= 1.0;
	if (allowed && take)
		b->tokens -= 1.0;
	double tokens = b->tokens;
	pthread_mutex_unlock(&sh->lock);
	out->allowed = allowed;
	out->limit = (int)cap;
	out->remaining = (int)floor(tokens);
	out->reset_s = (int)ceil((cap - tokens) / rate);
	out->retry_after = allowed ? 0 : (int)ceil((1.0 - tokens) / rate);
	if (!allowed && out->retry_after < 1)
		out->retry_after = 1;
}

void kw_ratelimit_take(kw_ratelimit *rl, const char *key, int per_minute, double now, kw_rl_result *out)
{
	step(rl, key, per_minute, now, true, out);
}

void kw_ratelimit_peek(kw_ratelimit *rl, const char *key, int per_minute, double now, kw_rl_result *out)
{
	step(rl, key, per_minute, now, false, out);
}
