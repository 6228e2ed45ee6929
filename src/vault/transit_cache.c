/* transit_cache.c — see keyward/vault/transit_cache.h.
 *
 * Entries sit in a fixed array; a chained hash (bucket heads and next
 * links, as indexes) finds them; a free list holds the unused ones. Entry
 * i's material is slab[i * KW_TC_VERSIONS + slot], 64 bytes each. */
#include "keyward/vault/transit_cache.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyward/core/secret.h"

#define KW_TC_MATERIAL 64

typedef struct tc_entry {
	int32_t next; /* in its bucket's chain, or in the free list; -1 ends */
	bool used;
	uint64_t hash;
	char tenant[37];
	kw_transit_key_row head;
	uint32_t version[KW_TC_VERSIONS]; /* 0: the slot is empty */
	int64_t last_used_s;
} tc_entry;

struct kw_transit_cache {
	pthread_mutex_t mu;
	size_t cap, nbuckets, used;
	int idle_s;
	uint64_t seed, generation;
	tc_entry *e;
	int32_t *bucket, free_head;
	kw_secret *slab;
	uint64_t hits, misses, drops, evictions;
};

static int64_t mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec;
}

static uint64_t hash_of(const kw_transit_cache *c, const char *tenant, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ c->seed;
	for (const char *p = tenant; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	h = (h ^ 0xff) * 0x100000001b3ULL; /* a separator no name or id holds */
	for (const char *p = name; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	return h ^ (h >> 33);
}

static unsigned char *material(kw_transit_cache *c, int32_t i, size_t slot)
{
	return kw_secret_data(c->slab) + ((size_t)i * KW_TC_VERSIONS + slot) * KW_TC_MATERIAL;
}

kw_transit_cache *kw_transit_cache_new(size_t max_keys, int idle_s)
{
	kw_transit_cache *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	pthread_mutex_init(&c->mu, NULL);
	c->cap = max_keys;
	c->idle_s = idle_s;
	c->free_head = -1;
	if (max_keys == 0)
		return c;
	c->nbuckets = 1;
	while (c->nbuckets < max_keys)
		c->nbuckets <<= 1;
	c->e = calloc(max_keys, sizeof(*c->e));
	c->bucket = malloc(c->nbuckets * sizeof(*c->bucket));
	c->slab = kw_secret_new(max_keys * KW_TC_VERSIONS * KW_TC_MATERIAL);
	if (c->e == NULL || c->bucket == NULL || c->slab == NULL ||
	    RAND_bytes((unsigned char *)&c->seed, sizeof(c->seed)) != 1) {
		kw_transit_cache_free(c);
		return NULL;
	}
	for (size_t b = 0; b < c->nbuckets; b++)
		c->bucket[b] = -1;
	for (size_t i = max_keys; i-- > 0;) {
		c->e[i].next = c->free_head;
		c->free_head = (int32_t)i;
	}
	return c;
}

void kw_transit_cache_free(kw_transit_cache *c)
{
	if (c == NULL)
		return;
	kw_secret_free(c->slab);
	free(c->e);
	free(c->bucket);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

/* The entry of (tenant, name), or -1. Under the lock. */
static int32_t find(kw_transit_cache *c, uint64_t h, const char *tenant, const char *name)
{
	if (c->cap == 0)
		return -1;
	for (int32_t i = c->bucket[h & (c->nbuckets - 1)]; i >= 0; i = c->e[i].next)
		if (c->e[i].hash == h && strcmp(c->e[i].tenant, tenant) == 0 &&
		    strcmp(c->e[i].head.name, name) == 0)
			return i;
	return -1;
}

/* Unlinks entry i, wipes its material and frees it. Under the lock. */
static void remove_entry(kw_transit_cache *c, int32_t i)
{
	int32_t *link = &c->bucket[c->e[i].hash & (c->nbuckets - 1)];
	while (*link != i)
		link = &c->e[*link].next;
	*link = c->e[i].next;
	OPENSSL_cleanse(material(c, i, 0), KW_TC_VERSIONS * KW_TC_MATERIAL);
	memset(&c->e[i], 0, sizeof(c->e[i]));
	c->e[i].next = c->free_head;
	c->free_head = i;
	c->used--;
}

/* The entry, unless idle too long (then removed). Under the lock. */
static int32_t find_live(kw_transit_cache *c, const char *tenant, const char *name)
{
	int32_t i = find(c, hash_of(c, tenant, name), tenant, name);
	int64_t now = mono_s();
	if (i >= 0 && now - c->e[i].last_used_s >= c->idle_s) {
		remove_entry(c, i);
		i = -1;
	}
	if (i >= 0)
		c->e[i].last_used_s = now;
	return i;
}

uint64_t kw_transit_cache_generation(kw_transit_cache *c)
{
	pthread_mutex_lock(&c->mu);
	uint64_t g = c->generation;
	pthread_mutex_unlock(&c->mu);
	return g;
}

bool kw_transit_cache_head(kw_transit_cache *c, const char *tenant, const char *name, kw_transit_key_row *row)
{
	pthread_mutex_lock(&c->mu);
	int32_t i = find_live(c, tenant, name);
	if (i >= 0) {
		*row = c->e[i].head;
		c->hits++;
	} else {
		c->misses++;
	}
	pthread_mutex_unlock(&c->mu);
	return i >= 0;
}

void kw_transit_cache_put_head(kw_transit_cache *c, uint64_t gen, const char *tenant,
                               const kw_transit_key_row *row)
{
	if (c->cap == 0 || strlen(tenant) >= sizeof(c->e[0].tenant))
		return;
	pthread_mutex_lock(&c->mu);
	uint64_t h = hash_of(c, tenant, row->name);
	int32_t i = find(c, h, tenant, row->name);
	if (gen != c->generation || i >= 0)
		goto out;       /* something changed since the read, or another reader was first */
	if (c->free_head < 0) { /* full: the least recently used goes */
		int32_t lru = 0;
		for (size_t k = 1; k < c->cap; k++)
			if (c->e[k].last_used_s < c->e[lru].last_used_s)
				lru = (int32_t)k;
		remove_entry(c, lru);
		c->evictions++;
	}
	i = c->free_head;
	c->free_head = c->e[i].next;
	tc_entry *e = &c->e[i];
	e->used = true;
	e->hash = h;
	memcpy(e->tenant, tenant, strlen(tenant) + 1);
	e->head = *row;
	e->last_used_s = mono_s();
	size_t b = h & (c->nbuckets - 1);
	e->next = c->bucket[b];
	c->bucket[b] = i;
	c->used++;
out:
	pthread_mutex_unlock(&c->mu);
}

bool kw_transit_cache_material(kw_transit_cache *c, const char *tenant, const char *name, uint32_t version,
                               unsigned char *out, size_t len)
{
	bool hit = false;
	if (len > KW_TC_MATERIAL || version == 0)
		return false;
	pthread_mutex_lock(&c->mu);
	int32_t i = find_live(c, tenant, name);
	if (i >= 0 && c->e[i].version[version % KW_TC_VERSIONS] == version) {
		memcpy(out, material(c, i, version % KW_TC_VERSIONS), len);
		hit = true;
	}
	if (hit)
		c->hits++;
	else
		c->misses++;
	pthread_mutex_unlock(&c->mu);
	return hit;
}

void kw_transit_cache_put_material(kw_transit_cache *c, uint64_t gen, const char *tenant, const char *name,
                                   uint32_t version, const unsigned char *key, size_t len)
{
	if (c->cap == 0 || len > KW_TC_MATERIAL || version == 0)
		return;
	pthread_mutex_lock(&c->mu);
	int32_t i = find(c, hash_of(c, tenant, name), tenant, name);
	if (i >= 0 && gen == c->generation) {
		size_t slot = version % KW_TC_VERSIONS;
		unsigned char *m = material(c, i, slot);
		OPENSSL_cleanse(m, KW_TC_MATERIAL);
		memcpy(m, key, len);
		c->e[i].version[slot] = version;
	}
	pthread_mutex_unlock(&c->mu);
}

void kw_transit_cache_drop(kw_transit_cache *c, const char *tenant, const char *name)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->generation++;
	int32_t i = find(c, hash_of(c, tenant, name), tenant, name);
	if (i >= 0) {
		remove_entry(c, i);
		c->drops++;
	}
	pthread_mutex_unlock(&c->mu);
}

void kw_transit_cache_clear(kw_transit_cache *c)
{
	pthread_mutex_lock(&c->mu);
	c->generation++;
	for (size_t i = 0; i < c->cap; i++)
		if (c->e[i].used) {
			remove_entry(c, (int32_t)i);
			c->drops++;
		}
	pthread_mutex_unlock(&c->mu);
}

void kw_transit_cache_sweep(kw_transit_cache *c)
{
	int64_t now = mono_s();
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->cap; i++)
		if (c->e[i].used && now - c->e[i].last_used_s >= c->idle_s) {
			remove_entry(c, (int32_t)i);
			c->evictions++;
		}
	pthread_mutex_unlock(&c->mu);
}

void kw_transit_cache_stats_get(kw_transit_cache *c, kw_transit_cache_stats *out)
{
	pthread_mutex_lock(&c->mu);
	*out = (kw_transit_cache_stats){.hits = c->hits,
	                                .misses = c->misses,
	                                .drops = c->drops,
	                                .evictions = c->evictions,
	                                .entries = c->used};
	pthread_mutex_unlock(&c->mu);
}
