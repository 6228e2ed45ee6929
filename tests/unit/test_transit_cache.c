/* test_transit_cache.c — the transit key cache: what it holds, that a put
 * read before a change never outlives the change, that drops wipe, and its
 * bounds (keys, idle time). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "keyward/vault/transit_cache.h"

static const char *T1 = "11111111-1111-4111-8111-111111111111";
static const char *T2 = "22222222-2222-4222-8222-222222222222";

static kw_transit_key_row head(const char *name, uint32_t latest, uint32_t min)
{
	kw_transit_key_row r;
	memset(&r, 0, sizeof(r));
	snprintf(r.name, sizeof(r.name), "%s", name);
	snprintf(r.type, sizeof(r.type), "aes256-gcm");
	r.latest_version = r.version = latest;
	r.min_decryption_version = min;
	r.derive_version = 1;
	return r;
}

Test(transit_cache, holds_heads_and_material_per_tenant_and_version)
{
	kw_transit_cache *c = kw_transit_cache_new(8, 300);
	cr_assert_not_null(c);
	kw_transit_key_row h = head("emails", 3, 1), got;
	unsigned char k3[32], k1[32], out[32];
	memset(k3, 0x33, sizeof(k3));
	memset(k1, 0x11, sizeof(k1));
	cr_assert_not(kw_transit_cache_head(c, T1, "emails", &got));
	uint64_t g = kw_transit_cache_generation(c);
	kw_transit_cache_put_head(c, g, T1, &h);
	cr_assert(kw_transit_cache_head(c, T1, "emails", &got));
	cr_assert_eq(got.latest_version, 3);
	cr_assert_not(kw_transit_cache_head(c, T2, "emails", &got), "another tenant's key of that name");
	cr_assert_not(kw_transit_cache_material(c, T1, "emails", 3, out, 32));
	kw_transit_cache_put_material(c, g, T1, "emails", 3, k3, 32);
	kw_transit_cache_put_material(c, g, T1, "emails", 1, k1, 32);
	cr_assert(kw_transit_cache_material(c, T1, "emails", 3, out, 32));
	cr_assert_arr_eq(out, k3, 32);
	cr_assert(kw_transit_cache_material(c, T1, "emails", 1, out, 32));
	cr_assert_arr_eq(out, k1, 32);
	cr_assert_not(kw_transit_cache_material(c, T1, "emails", 2, out, 32));
	/* Version 5 shares slot 1 with version 1: it replaces it. */
	kw_transit_cache_put_material(c, g, T1, "emails", 5, k3, 32);
	cr_assert_not(kw_transit_cache_material(c, T1, "emails", 1, out, 32));
	/* Material only for a key whose head is held. */
	kw_transit_cache_put_material(c, g, T2, "emails", 3, k3, 32);
	cr_assert_not(kw_transit_cache_material(c, T2, "emails", 3, out, 32));
	kw_transit_cache_stats st;
	kw_transit_cache_stats_get(c, &st);
	cr_assert_eq(st.entries, 1);
	kw_transit_cache_free(c);
}

Test(transit_cache, a_read_from_before_a_change_is_never_put)
{
	kw_transit_cache *c = kw_transit_cache_new(8, 300);
	kw_transit_key_row old = head("k", 1, 1), got;
	uint64_t g = kw_transit_cache_generation(c); /* a reader starts reading */
	kw_transit_cache_drop(c, T1, "k");           /* a rotate commits meanwhile */
	kw_transit_cache_put_head(c, g, T1, &old);   /* the reader's stale row */
	cr_assert_not(kw_transit_cache_head(c, T1, "k", &got), "a row read before a drop was kept");
	g = kw_transit_cache_generation(c);
	kw_transit_cache_clear(c); /* the feed restarted */
	kw_transit_cache_put_head(c, g, T1, &old);
	cr_assert_not(kw_transit_cache_head(c, T1, "k", &got));
	g = kw_transit_cache_generation(c);
	kw_transit_cache_put_head(c, g, T1, &old);
	cr_assert(kw_transit_cache_head(c, T1, "k", &got));
	kw_transit_cache_free(c);
}

Test(transit_cache, drop_forgets_one_key_and_clear_every_key)
{
	kw_transit_cache *c = kw_transit_cache_new(8, 300);
	kw_transit_key_row a = head("a", 1, 1), b = head("b", 1, 1), got;
	unsigned char k[64], out[64];
	memset(k, 0x5a, sizeof(k));
	uint64_t g = kw_transit_cache_generation(c);
	kw_transit_cache_put_head(c, g, T1, &a);
	kw_transit_cache_put_head(c, g, T1, &b);
	kw_transit_cache_put_material(c, g, T1, "a", 1, k, 64);
	kw_transit_cache_drop(c, T1, "a");
	cr_assert_not(kw_transit_cache_head(c, T1, "a", &got));
	cr_assert_not(kw_transit_cache_material(c, T1, "a", 1, out, 64));
	cr_assert(kw_transit_cache_head(c, T1, "b", &got));
	kw_transit_cache_clear(c);
	cr_assert_not(kw_transit_cache_head(c, T1, "b", &got));
	kw_transit_cache_drop(NULL, T1, "a"); /* no cache: nothing to do */
	kw_transit_cache_stats st;
	kw_transit_cache_stats_get(c, &st);
	cr_assert_eq(st.entries, 0);
	cr_assert_eq(st.drops, 2);
	kw_transit_cache_free(c);
}

Test(transit_cache, holds_at_most_max_keys)
{
	kw_transit_cache *c = kw_transit_cache_new(4, 300);
	kw_transit_key_row got;
	for (int i = 0; i < 10; i++) {
		char name[8];
		snprintf(name, sizeof(name), "k%d", i);
		kw_transit_key_row h = head(name, 1, 1);
		kw_transit_cache_put_head(c, kw_transit_cache_generation(c), T1, &h);
	}
	kw_transit_cache_stats st;
	kw_transit_cache_stats_get(c, &st);
	cr_assert_eq(st.entries, 4);
	cr_assert_eq(st.evictions, 6);
	int held = 0;
	for (int i = 0; i < 10; i++) {
		char name[8];
		snprintf(name, sizeof(name), "k%d", i);
		held += kw_transit_cache_head(c, T1, name, &got);
	}
	cr_assert_eq(held, 4);
	kw_transit_cache_free(c);

	c = kw_transit_cache_new(0, 300); /* a cache that holds nothing */
	kw_transit_key_row h = head("k", 1, 1);
	kw_transit_cache_put_head(c, kw_transit_cache_generation(c), T1, &h);
	cr_assert_not(kw_transit_cache_head(c, T1, "k", &got));
	kw_transit_cache_free(c);
}

Test(transit_cache, idle_keys_are_wiped)
{
	kw_transit_cache *c = kw_transit_cache_new(4, 1);
	kw_transit_key_row h = head("k", 1, 1), got;
	kw_transit_cache_put_head(c, kw_transit_cache_generation(c), T1, &h);
	cr_assert(kw_transit_cache_head(c, T1, "k", &got));
	sleep(2);
	kw_transit_cache_sweep(c);
	kw_transit_cache_stats st;
	kw_transit_cache_stats_get(c, &st);
	cr_assert_eq(st.entries, 0, "an idle key was kept");
	cr_assert_not(kw_transit_cache_head(c, T1, "k", &got));
	kw_transit_cache_free(c);
}
