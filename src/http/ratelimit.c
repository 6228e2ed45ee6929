/* ratelimit.c — bounded, sharded token buckets.
 *
 * Each shard is a small open-addressed table behind its own mutex; a key
 * probes 8 slots and, when all are taken by other keys, replaces the one
 * touched longest ago. Memory is fixed at creation: a flood of distinct
 * client addresses evicts idle buckets instead of growing the table. */
#include "keyward/http/ratelimit.h"

#include "keyward/core/error.h"

#include <math.h>
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
	double last; /* 0 = empty slot */
} kw_bucket;

typedef struct kw_shard {
	pthread_mutex_t lock;
	kw_bucket *slots; /* guarded by lock */
	size_t mask;
} kw_shard;

struct kw_ratelimit {
	kw_shard shards[KW_RL_SHARDS];
};

double kw_ratelimit_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

kw_ratelimit *kw_ratelimit_new(size_t capacity)
{
	kw_ratelimit *rl = calloc(1, sizeof(*rl));
	if (rl == NULL)
		return NULL;
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
	free(rl);
}

/* call with shard lock held */
static kw_bucket *find_locked(kw_shard *sh, const char *key, uint64_t h, double now, double cap)
{
	kw_bucket *victim = NULL;
	for (size_t i = 0; i < KW_RL_PROBE; i++) {
		kw_bucket *b = &sh->slots[(h + i) & sh->mask];
		if (b->last != 0 && strcmp(b->key, key) == 0)
			return b;
		if (victim == NULL || b->last < victim->last)
			victim = b;
	}
	/* New key: a full bucket, in the slot idle the longest. */
	snprintf(victim->key, sizeof(victim->key), "%s", key);
	victim->tokens = cap;
	victim->last = now;
	return victim;
}

static void step(kw_ratelimit *rl, const char *key, int per_minute, double now, bool take, kw_rl_result *out)
{
	double cap = per_minute > 0 ? per_minute : 1;
	double rate = cap / 60.0;
	if (strlen(key) >= KW_RL_KEY)
		kw_misuse("kw_ratelimit: key too long");
	uint64_t h = hash(key);
	kw_shard *sh = &rl->shards[h % KW_RL_SHARDS];
	pthread_mutex_lock(&sh->lock);
	kw_bucket *b = find_locked(sh, key, h / KW_RL_SHARDS, now, cap);
	b->tokens = fmin(cap, b->tokens + (now - b->last) * rate);
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
