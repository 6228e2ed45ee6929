/* ratelimit.h — token buckets keyed by client IP, API key or failures.
 *
 * A bucket holds up to `per_minute` tokens and refills at per_minute/60
 * per second. Buckets live in a bounded, sharded table in process memory:
 * when several keywardd instances run behind one load balancer each keeps
 * its own buckets, so the effective limit is per instance. */
#ifndef KEYWARD_RATELIMIT_H
#define KEYWARD_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct kw_ratelimit kw_ratelimit;

typedef struct kw_rl_result {
	bool allowed;
	int limit;       /* RateLimit-Limit */
	int remaining;   /* RateLimit-Remaining, after this request */
	int reset_s;     /* RateLimit-Reset: seconds until the bucket is full */
	int retry_after; /* Retry-After when refused: seconds until one token */
} kw_rl_result;

/* capacity: how many distinct keys are tracked (rounded up). */
kw_ratelimit *kw_ratelimit_new(size_t capacity);
void kw_ratelimit_free(kw_ratelimit *rl);
/* Takes one token from key's bucket if there is one. now: seconds on a
 * monotonic clock (kw_ratelimit_now()). Thread-safe. */
void kw_ratelimit_take(kw_ratelimit *rl, const char *key, int per_minute, double now, kw_rl_result *out);
/* Reports whether a token is available, without taking it. */
void kw_ratelimit_peek(kw_ratelimit *rl, const char *key, int per_minute, double now, kw_rl_result *out);
double kw_ratelimit_now(void);

#endif
