/* keycache.c — API keys verified recently, so a hot key costs no
 * database read and no token HMAC (see keyward/auth/apikey.h).
 *
 * A fixed-size table indexed by the SHA-256 of the key; an entry holds
 * the principal and the key's own rate limit, never the key. One mutex:
 * lookups are a copy of one slot. Entries are wiped when dropped. */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/auth/apikey.h"

typedef struct kw_keyentry {
	unsigned char hash[32]; /* SHA-256 of the whole key */
	bool used;
	double verified_at, touched_at;
	int rate_limit;
	kw_principal p;
} kw_keyentry;

struct kw_keycache {
	pthread_mutex_t lock;
	size_t mask;
	kw_keyentry *e; /* guarded by lock */
};

kw_keycache *kw_keycache_new(size_t capacity)
{
	kw_keycache *c = calloc(1, sizeof(*c));
	size_t n = 64;
	while (n < capacity)
		n *= 2;
	if (c == NULL || (c->e = calloc(n, sizeof(kw_keyentry))) == NULL) {
		free(c);
		return NULL;
	}
	c->mask = n - 1;
	pthread_mutex_init(&c->lock, NULL);
	return c;
}

void kw_keycache_free(kw_keycache *c)
{
	if (c == NULL)
		return;
	OPENSSL_cleanse(c->e, (c->mask + 1) * sizeof(kw_keyentry));
	free(c->e);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void kw_keycache_forget(kw_keycache *c, const char *prefix)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i <= c->mask; i++)
		if (c->e[i].used && strcmp(c->e[i].p.prefix, prefix) == 0)
			memset(&c->e[i], 0, sizeof(c->e[i]));
	pthread_mutex_unlock(&c->lock);
}

void kw_keycache_clear(kw_keycache *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->lock);
	OPENSSL_cleanse(c->e, (c->mask + 1) * sizeof(kw_keyentry));
	memset(c->e, 0, (c->mask + 1) * sizeof(kw_keyentry));
	pthread_mutex_unlock(&c->lock);
}

static size_t slot_of(const kw_keycache *c, const unsigned char hash[32])
{
	size_t h;
	memcpy(&h, hash, sizeof(h));
	return h & c->mask;
}

/* Looks the key up; fresh = verified less than ttl ago. Returns the last
 * touch time of the entry (0 when absent) so a refresh keeps it. */
bool kw_keycache_get(kw_keycache *c, const unsigned char hash[32], double now, double ttl, kw_principal *p,
                     int *rate_limit, double *touched_at)
{
	bool fresh = false;
	pthread_mutex_lock(&c->lock);
	kw_keyentry *e = &c->e[slot_of(c, hash)];
	*touched_at = 0;
	if (e->used && CRYPTO_memcmp(e->hash, hash, 32) == 0) {
		*touched_at = e->touched_at;
		if (now - e->verified_at < ttl) {
			*p = e->p;
			*rate_limit = e->rate_limit;
			fresh = true;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return fresh;
}

void kw_keycache_put(kw_keycache *c, const unsigned char hash[32], double now, double touched_at,
                     const kw_principal *p, int rate_limit)
{
	pthread_mutex_lock(&c->lock);
	kw_keyentry *e = &c->e[slot_of(c, hash)];
	memcpy(e->hash, hash, 32);
	e->used = true;
	e->verified_at = now;
	e->touched_at = touched_at;
	e->p = *p;
	e->rate_limit = rate_limit;
	pthread_mutex_unlock(&c->lock);
}

void kw_keycache_touched(kw_keycache *c, const unsigned char hash[32], double now)
{
	pthread_mutex_lock(&c->lock);
	kw_keyentry *e = &c->e[slot_of(c, hash)];
	if (e->used && CRYPTO_memcmp(e->hash, hash, 32) == 0)
		e->touched_at = now;
	pthread_mutex_unlock(&c->lock);
}
