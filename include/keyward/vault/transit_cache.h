/* transit_cache.h — the derived keys of transit encryption, held between
 * requests (DESIGN §5.5). src/vault/transit_cache.c.
 *
 * Per (tenant, key name): the key's latest row (type, latest and minimum
 * versions) and the material of up to KW_TC_VERSIONS of its versions. The
 * material lives in one locked, undumpable slab (keyward/core/secret.h),
 * is copied out to the caller's locked memory, and is wiped when an entry
 * goes: on kw_transit_cache_drop (a rotate or config change, seen here or
 * through the change feed), on clear (the feed restarted), after idle_s
 * without use (kw_transit_cache_sweep), or to make room for another key
 * (the least recently used goes). At most max_keys keys.
 *
 * A reader that missed takes the generation first, reads the database and
 * the token, and puts what it read with that generation: a put is dropped
 * if any drop or clear happened since, so a row read before a change can
 * never outlive the change. Callers use the cache only while the change
 * feed is fresh (keyward/db/changes.h). Thread-safe (one mutex). */
#ifndef KEYWARD_TRANSIT_CACHE_H
#define KEYWARD_TRANSIT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/db/repo_transit.h"

#define KW_TC_VERSIONS 4 /* versions held per key; version v sits in slot v % 4 */

typedef struct kw_transit_cache kw_transit_cache;

typedef struct kw_transit_cache_stats {
	uint64_t hits, misses, drops, evictions, entries;
} kw_transit_cache_stats;

/* max_keys 0 gives a cache that holds nothing (every lookup misses).
 * NULL when out of memory. */
kw_transit_cache *kw_transit_cache_new(size_t max_keys, int idle_s);
void kw_transit_cache_free(kw_transit_cache *c);

uint64_t kw_transit_cache_generation(kw_transit_cache *c);
/* The key's latest row, when held. */
bool kw_transit_cache_head(kw_transit_cache *c, const char *tenant, const char *name,
                           kw_transit_key_row *row);
void kw_transit_cache_put_head(kw_transit_cache *c, uint64_t gen, const char *tenant,
                               const kw_transit_key_row *row);
/* Copies version's len bytes of material into out, when held. */
bool kw_transit_cache_material(kw_transit_cache *c, const char *tenant, const char *name, uint32_t version,
                               unsigned char *out, size_t len);
/* Records material for a key whose head is held (else nothing). */
void kw_transit_cache_put_material(kw_transit_cache *c, uint64_t gen, const char *tenant, const char *name,
                                   uint32_t version, const unsigned char *key, size_t len);
/* Forgets (and wipes) one key / every key. */
void kw_transit_cache_drop(kw_transit_cache *c, const char *tenant, const char *name);
void kw_transit_cache_clear(kw_transit_cache *c);
/* Wipes the keys unused for idle_s. */
void kw_transit_cache_sweep(kw_transit_cache *c);
void kw_transit_cache_stats_get(kw_transit_cache *c, kw_transit_cache_stats *out);

#endif
