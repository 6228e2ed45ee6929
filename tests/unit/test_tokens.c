/* Unit tests: durations, roles, access-token claims, the verified-token
 * cache, the refresh-token format and the random ids (no token, no
 * database). Base64url for refresh tokens is built with OpenSSL's encoder
 * here, independently of the library's. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <malloc.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/auth/tokens.h"
#include "keyward/core/config.h"

/* The default of [auth] roles in src/core/config.c. */
#define DEFAULT_ROLES                                                                                        \
	"track1 12h vault:read vault:write, track2 8h vault:read vault:write, "                              \
	"track3 4h vault:read vault:write, track4 1h vault:read vault:write"

#define TID "0f8e2a4c-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
#define SID "6a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d"
#define JTI "00112233445566778899aabbccddeeff"

/* --- durations ---------------------------------------------------------- */

Test(tokens, duration_parse_accepts_units)
{
	struct {
		const char *text;
		int64_t want;
	} ok[] = {{"30d", 30 * 86400}, {"12h", 12 * 3600}, {"5m", 300}, {"90s", 90},
	          {"90", 90},          {"0", 0},           {"0s", 0},   {"36500d", 36500LL * 86400}};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int64_t got = -1;
		cr_assert(kw_duration_parse(ok[i].text, &got), "\"%s\" refused", ok[i].text);
		cr_assert_eq(got, ok[i].want, "\"%s\" -> %lld", ok[i].text, (long long)got);
	}
}

Test(tokens, duration_parse_refuses_malformed_and_overflow)
{
	const char *bad[] = {"",
	                     "-1",
	                     "1x",
	                     "1hh",
	                     "h",
	                     "+5",
	                     " 5",
	                     "5 ",
	                     "5s ",
	                     "1.5h",
	                     "1H",
	                     "d30",
	                     "99999999999999999999",
	                     "9223372036854775807",
	                     "9223372036854775807d",
	                     "3153600001",
	                     "36501d",
	                     "876001h",
	                     "52560001m"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t got = 12345;
		cr_assert_not(kw_duration_parse(bad[i], &got), "\"%s\" accepted as %lld", bad[i],
		              (long long)got);
		cr_assert_eq(got, 12345, "\"%s\" wrote the out-param on failure", bad[i]);
	}
	int64_t got;
	cr_assert_not(kw_duration_parse(NULL, &got));
}

/* --- roles -------------------------------------------------------------- */

Test(tokens, roles_parse_default)
{
	kw_roles r;
	cr_assert_eq(kw_roles_parse(DEFAULT_ROLES, &r), KW_OK);
	cr_assert_eq(r.n, 4);
	const char *names[] = {"track1", "track2", "track3", "track4"};
	int64_t ttls[] = {12 * 3600, 8 * 3600, 4 * 3600, 3600};
	for (size_t i = 0; i < 4; i++) {
		cr_assert_str_eq(r.roles[i].name, names[i]);
		cr_assert_eq(r.roles[i].ttl_s, ttls[i], "%s", names[i]);
		cr_assert_str_eq(r.roles[i].permissions, "[\"vault:read\",\"vault:write\"]");
		json_t *p = json_loads(r.roles[i].permissions, 0, NULL);
		cr_assert(json_is_array(p) && json_array_size(p) == 2);
		json_decref(p);
	}
}

Test(tokens, roles_parse_shapes)
{
	kw_roles r;
	/* No permissions, tabs, blank entries, the TTL bounds themselves. */
	cr_assert_eq(kw_roles_parse(" a 1m ,, \tb\t24h x.y_z-1:2 ,", &r), KW_OK);
	cr_assert_eq(r.n, 2);
	cr_assert_str_eq(r.roles[0].name, "a");
	cr_assert_eq(r.roles[0].ttl_s, 60);
	cr_assert_str_eq(r.roles[0].permissions, "[]");
	cr_assert_str_eq(r.roles[1].name, "b");
	cr_assert_eq(r.roles[1].ttl_s, 86400);
	cr_assert_str_eq(r.roles[1].permissions, "[\"x.y_z-1:2\"]");

	/* KW_ROLES_MAX roles fit; one more does not. */
	char text[4096];
	size_t off = 0;
	for (int i = 0; i <= KW_ROLES_MAX; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%sr%d 1h p", i ? ", " : "", i);
	cr_assert_eq(kw_roles_parse(text, &r), KW_ERR_CONFIG, "%d roles accepted", KW_ROLES_MAX + 1);
	*strrchr(text, ',') = '\0';
	cr_assert_eq(kw_roles_parse(text, &r), KW_OK);
	cr_assert_eq(r.n, KW_ROLES_MAX);

	/* A role name of exactly KW_ROLE_MAX characters fits. */
	char longname[KW_ROLE_MAX + 2];
	memset(longname, 'n', KW_ROLE_MAX);
	longname[KW_ROLE_MAX] = '\0';
	snprintf(text, sizeof(text), "%s 1h", longname);
	cr_assert_eq(kw_roles_parse(text, &r), KW_OK);
	cr_assert_str_eq(r.roles[0].name, longname);
}

Test(tokens, roles_parse_refuses)
{
	char toolong[KW_ROLE_MAX + 8], manyperms[2048];
	memset(toolong, 'n', KW_ROLE_MAX + 1);
	snprintf(toolong + KW_ROLE_MAX + 1, 7, " 1h");
	/* 30 permissions of 20 characters: a JSON array over KW_PERMISSIONS_MAX. */
	size_t off = (size_t)snprintf(manyperms, sizeof(manyperms), "big 1h");
	for (int i = 0; i < 30; i++)
		off += (size_t)snprintf(manyperms + off, sizeof(manyperms) - off, " perm%016d", i);
	const char *bad[] = {
	    "",
	    " , ,",
	    "track1",
	    "track1 12h, track1 1h",
	    "a 1h, b 2h, a 3h",
	    "a 59s",
	    "a 0",
	    "a 24h1",
	    "a 86401",
	    "a 2d",
	    "a 1x",
	    "a -1h",
	    "a h",
	    "bad/name 1h",
	    "bad\"name 1h",
	    "caf\xc3\xa9 1h",
	    "a 1h vault/read",
	    "a 1h vault:read vault\"write",
	    "a 1h ok, b 1h p{q}",
	    "a 1h, 1h",
	    toolong,
	    manyperms,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kw_roles r;
		r.n = 777;
		cr_assert_eq(kw_roles_parse(bad[i], &r), KW_ERR_CONFIG, "\"%s\" accepted", bad[i]);
		cr_assert_eq(r.n, 777, "\"%s\" wrote the out-param on failure", bad[i]);
	}
	kw_roles r;
	cr_assert_eq(kw_roles_parse(NULL, &r), KW_ERR_CONFIG);
}

Test(tokens, roles_find)
{
	kw_roles r;
	cr_assert_eq(kw_roles_parse(DEFAULT_ROLES, &r), KW_OK);
	const kw_role *t3 = kw_roles_find(&r, "track3");
	cr_assert_not_null(t3);
	cr_assert_eq(t3, &r.roles[2]);
	cr_assert_eq(t3->ttl_s, 4 * 3600);
	cr_assert_null(kw_roles_find(&r, "track5"));
	cr_assert_null(kw_roles_find(&r, "TRACK1"));
	cr_assert_null(kw_roles_find(&r, "track"));
	cr_assert_null(kw_roles_find(&r, ""));
	kw_roles empty = {.n = 0};
	cr_assert_null(kw_roles_find(&empty, "track1"));
}

/* --- access-token claims ------------------------------------------------ */

static json_t *good_payload(void)
{
	json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s,s], s:I, s:I, s:I, s:s, s:s}", "iss", "keyward",
	                      "aud", "keyward", "sub", "user-1", "tid", TID, "role", "track1", "permissions",
	                      "vault:read", "vault:write", "iat", (json_int_t)1700000000, "nbf",
	                      (json_int_t)1700000000, "exp", (json_int_t)1700043200, "jti", JTI, "sid", SID);
	cr_assert_not_null(p);
	return p;
}

static kw_err read_claims(json_t *p)
{
	kw_access_claims c;
	kw_err err = kw_access_claims_read(p, "keyward", "keyward", &c);
	json_decref(p);
	return err;
}

Test(tokens, claims_read_audience_in_a_list)
{
	json_t *p = good_payload();
	json_object_set_new(p, "aud", json_pack("[s,s]", "other", "keyward"));
	cr_assert_eq(read_claims(p), KW_OK);
}

Test(tokens, claims_read_good_payload)
{
	json_t *p = good_payload();
	/* Unknown members are ignored. */
	json_object_set_new(p, "extra", json_string("ignored"));
	kw_access_claims c;
	memset(&c, 0xAA, sizeof(c));
	cr_assert_eq(kw_access_claims_read(p, "keyward", "keyward", &c), KW_OK);
	json_decref(p);
	cr_assert_str_eq(c.sub, "user-1");
	cr_assert_str_eq(c.tid, TID);
	cr_assert_str_eq(c.role, "track1");
	cr_assert_str_eq(c.permissions, "[\"vault:read\",\"vault:write\"]");
	cr_assert_str_eq(c.jti, JTI);
	cr_assert_str_eq(c.sid, SID);
	cr_assert_eq(c.iat, 1700000000);
	cr_assert_eq(c.nbf, 1700000000);
	cr_assert_eq(c.exp, 1700043200);

	/* Empty permissions and a 256-byte sub are fine. */
	p = good_payload();
	char sub[KW_SUBJECT_MAX + 1];
	memset(sub, 's', KW_SUBJECT_MAX);
	sub[KW_SUBJECT_MAX] = '\0';
	json_object_set_new(p, "sub", json_string(sub));
	json_object_set_new(p, "permissions", json_array());
	cr_assert_eq(kw_access_claims_read(p, "keyward", "keyward", &c), KW_OK);
	cr_assert_str_eq(c.sub, sub);
	cr_assert_str_eq(c.permissions, "[]");
	json_decref(p);
}

Test(tokens, claims_read_missing_or_mistyped)
{
	const char *names[] = {"iss", "aud", "sub", "tid", "role", "permissions",
	                       "iat", "nbf", "exp", "jti", "sid"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		json_t *p = good_payload();
		cr_assert_eq(json_object_del(p, names[i]), 0);
		cr_assert_eq(read_claims(p), KW_ERR_INVALID, "missing %s accepted", names[i]);

		/* Each claim with the other type: strings as numbers, numbers as
		 * strings, the array as a string. */
		p = good_payload();
		json_t *v = json_object_get(p, names[i]);
		json_t *swapped = json_is_string(v) ? json_integer(7) : json_string("1700000000");
		json_object_set_new(p, names[i], swapped);
		cr_assert_eq(read_claims(p), KW_ERR_INVALID, "mistyped %s accepted", names[i]);

		p = good_payload();
		json_object_set_new(p, names[i], json_null());
		cr_assert_eq(read_claims(p), KW_ERR_INVALID, "null %s accepted", names[i]);
	}
	const char *times[] = {"iat", "nbf", "exp"};
	for (size_t i = 0; i < 3; i++) {
		json_t *p = good_payload();
		json_object_set_new(p, times[i], json_real(1700000000.5));
		cr_assert_eq(read_claims(p), KW_ERR_INVALID, "real %s accepted", times[i]);
		p = good_payload();
		json_object_set_new(p, times[i], json_integer(-1));
		cr_assert_eq(read_claims(p), KW_ERR_INVALID, "negative %s accepted", times[i]);
	}
	json_t *arr = json_array();
	kw_access_claims c;
	cr_assert_eq(kw_access_claims_read(arr, "keyward", "keyward", &c), KW_ERR_INVALID);
	json_decref(arr);
	cr_assert_eq(kw_access_claims_read(NULL, "keyward", "keyward", &c), KW_ERR_INVALID);
}

static void expect_bad(const char *name, json_t *value, const char *why)
{
	json_t *p = good_payload();
	json_object_set_new(p, name, value);
	cr_assert_eq(read_claims(p), KW_ERR_INVALID, "%s accepted", why);
}

Test(tokens, claims_read_refuses_bad_values)
{
	json_t *p = good_payload();
	kw_access_claims c;
	cr_assert_eq(kw_access_claims_read(p, "other-issuer", "keyward", &c), KW_ERR_INVALID,
	             "wrong iss accepted");
	cr_assert_eq(kw_access_claims_read(p, "keyward2", "keyward", &c), KW_ERR_INVALID,
	             "iss prefix accepted");
	cr_assert_eq(kw_access_claims_read(p, "", "keyward", &c), KW_ERR_INVALID);
	json_decref(p);
	expect_bad("iss", json_string("keywarD"), "iss of another case");
	expect_bad("iss", json_string(""), "empty iss");
	expect_bad("aud", json_string("another-service"), "a token for another audience");
	expect_bad("aud", json_pack("[s,s]", "a", "b"), "an audience list without ours");
	expect_bad("aud", json_integer(1), "aud not a string");

	expect_bad("tid", json_string("not-a-uuid"), "non-uuid tid");
	expect_bad("tid", json_string(TID "0"), "37-char tid");
	expect_bad("tid", json_string("0f8e2a4c5b6d4e7f8a9b0c1d2e3f4a5b"), "tid without dashes");
	expect_bad("tid", json_string("0f8e2a4c-5b6d-4e7f-8a9b-0c1d2e3f4a5g"), "tid with a g");
	expect_bad("tid", json_stringn("0f8e2a4c-5b6d-4e7f-8a9b-0c1d2e3f4a5\0", 36), "tid with a NUL");
	expect_bad("sid", json_string("6a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3"), "35-char sid");
	expect_bad("sid", json_string("6a1b2c3d+4e5f-4a6b-9c7d-8e9f0a1b2c3d"), "non-uuid sid");
	expect_bad("sid", json_string(""), "empty sid");

	expect_bad("jti", json_string("00112233445566778899AABBCCDDEEFF"), "upper-case jti");
	expect_bad("jti", json_string("00112233445566778899aabbccddeef"), "31-char jti");
	expect_bad("jti", json_string("00112233445566778899aabbccddeeff0"), "33-char jti");
	expect_bad("jti", json_string("00112233445566778899aabbccddeefg"), "jti with a g");
	expect_bad("jti", json_string("0x112233445566778899aabbccddeeff"), "jti with an x");
	expect_bad("jti", json_stringn("00112233445566778899aabbccddee\0f", 32), "jti with a NUL");

	char sub[KW_SUBJECT_MAX + 2];
	memset(sub, 's', KW_SUBJECT_MAX + 1);
	sub[KW_SUBJECT_MAX + 1] = '\0';
	expect_bad("sub", json_string(sub), "257-byte sub");
	expect_bad("sub", json_string(""), "empty sub");
	expect_bad("sub", json_stringn("a\0b", 3), "sub with a NUL");
	expect_bad("role", json_string(""), "empty role");

	expect_bad("permissions", json_pack("[s,i]", "vault:read", 1), "a number in permissions");
	expect_bad("permissions", json_pack("[s,[s]]", "vault:read", "x"), "nested permissions");
	expect_bad("permissions", json_pack("[n]"), "null in permissions");
	expect_bad("permissions", json_pack("{s:s}", "vault", "read"), "permissions as an object");
	expect_bad("permissions", json_string("vault:read"), "permissions as a string");
	/* An array longer than KW_PERMISSIONS_MAX as compact JSON. */
	json_t *big = json_array();
	for (int i = 0; i < 64; i++)
		json_array_append_new(big, json_string("permission-name"));
	expect_bad("permissions", big, "oversize permissions");
}

/* --- verified-token cache ------------------------------------------------ */

/* A distinct, well-spread 32-byte key per i (splitmix64; no allocation,
 * no assertion, usable from any thread). */
static void hash_of(uint64_t i, unsigned char hash[32])
{
	uint64_t x = i;
	for (size_t k = 0; k < 4; k++) {
		uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		z ^= z >> 31;
		memcpy(hash + 8 * k, &z, sizeof(z));
	}
}

static void claims_of(uint64_t i, int64_t exp, kw_access_claims *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->sub, sizeof(c->sub), "sub-%llu", (unsigned long long)i);
	snprintf(c->tid, sizeof(c->tid), TID);
	snprintf(c->role, sizeof(c->role), "track1");
	snprintf(c->permissions, sizeof(c->permissions), "[]");
	snprintf(c->jti, sizeof(c->jti), "%032llx", (unsigned long long)i);
	snprintf(c->sid, sizeof(c->sid), SID);
	c->iat = c->nbf = exp - 3600;
	c->exp = exp;
}

Test(tokens, tokcache_get_after_put)
{
	kw_tokcache *c = kw_tokcache_new(128);
	cr_assert_not_null(c);
	unsigned char h1[32], h2[32];
	hash_of(1, h1);
	hash_of(2, h2);
	kw_access_claims in, out;
	claims_of(1, 2000, &in);
	memset(&out, 0, sizeof(out));
	cr_assert_not(kw_tokcache_get(c, h1, 1000, 0, &out), "hit in an empty cache");
	kw_tokcache_put(c, h1, 0, &in);
	cr_assert(kw_tokcache_get(c, h1, 1000, 0, &out));
	cr_assert_eq(memcmp(&in, &out, sizeof(in)), 0);
	cr_assert_not(kw_tokcache_get(c, h2, 1000, 0, &out), "hit for another hash");
	/* A hash that differs in its last byte only (same set). */
	h1[31] ^= 1;
	cr_assert_not(kw_tokcache_get(c, h1, 1000, 0, &out), "hit for a near hash");
	h1[31] ^= 1;
	/* Another generation of the key set: not trusted. */
	cr_assert_not(kw_tokcache_get(c, h1, 1000, 1, &out), "hit across key-set generations");
	kw_tokcache_free(c);
}

Test(tokens, tokcache_drops_at_exp)
{
	kw_tokcache *c = kw_tokcache_new(16);
	cr_assert_not_null(c);
	unsigned char h[32];
	hash_of(42, h);
	kw_access_claims in, out;
	claims_of(42, 5000, &in);
	kw_tokcache_put(c, h, 7, &in);
	cr_assert(kw_tokcache_get(c, h, 4999, 7, &out), "gone before exp");
	cr_assert_not(kw_tokcache_get(c, h, 5000, 7, &out), "alive at exp");
	/* Dropped, not merely hidden: an earlier clock does not bring it back. */
	cr_assert_not(kw_tokcache_get(c, h, 4000, 7, &out), "not dropped at exp");
	kw_tokcache_put(c, h, 7, &in);
	cr_assert_not(kw_tokcache_get(c, h, 6000, 7, &out), "alive after exp");
	kw_tokcache_free(c);
	kw_tokcache_free(NULL);
}

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

Test(tokens, tokcache_is_bounded)
{
	enum { CAP = 256, N = 10 * CAP };
	kw_tokcache *c = kw_tokcache_new(CAP);
	cr_assert_not_null(c);
	kw_access_claims in, out;
	unsigned char h[32];
	/* No assertion inside the measured loop: Criterion allocates per
	 * assertion. */
	uint64_t lost = UINT64_MAX;
	size_t before = heap_in_use();
	for (uint64_t i = 0; i < N; i++) {
		hash_of(i, h);
		claims_of(i, 10000 + (int64_t)i, &in);
		kw_tokcache_put(c, h, 0, &in);
		/* The most recent entry is always found, whatever it evicted. */
		if (lost == UINT64_MAX &&
		    (!kw_tokcache_get(c, h, 1000, 0, &out) || strcmp(out.sub, in.sub) != 0))
			lost = i;
	}
	size_t after = heap_in_use();
	cr_assert_eq(lost, UINT64_MAX, "entry %llu lost right after put", (unsigned long long)lost);
	/* N entries would be N * sizeof(kw_access_claims) (~2.5 MB) if kept. */
	cr_assert(after <= before + 64 * 1024, "heap grew by %zu bytes", after - before);
	size_t kept = 0;
	for (uint64_t i = 0; i < N; i++) {
		hash_of(i, h);
		if (kw_tokcache_get(c, h, 1000, 0, &out)) {
			kept++;
			char want[32];
			snprintf(want, sizeof(want), "sub-%llu", (unsigned long long)i);
			cr_assert_str_eq(out.sub, want, "entry %llu came back with another's claims",
			                 (unsigned long long)i);
		}
	}
	cr_assert(kept > 0 && kept <= 2 * CAP, "%zu of %d entries kept with capacity %d", kept, N, CAP);
	kw_tokcache_free(c);
}

typedef struct cache_worker {
	kw_tokcache *c;
	uint64_t base;
	atomic_int *bad;
	int hits, puts;
} cache_worker;

enum { WORKER_OPS = 20000 };

static void *cache_thread(void *arg)
{
	cache_worker *w = arg;
	for (uint64_t i = 0; i < WORKER_OPS; i++) {
		uint64_t id = w->base + i;
		unsigned char h[32];
		hash_of(id, h);
		kw_access_claims in, out;
		memset(&in, 0, sizeof(in));
		snprintf(in.sub, sizeof(in.sub), "sub-%llu", (unsigned long long)id);
		snprintf(in.jti, sizeof(in.jti), "%032llx", (unsigned long long)id);
		in.exp = 100000 + (int64_t)i;
		kw_tokcache_put(w->c, h, 0, &in);
		w->puts++;
		if (kw_tokcache_get(w->c, h, 1000, 0, &out)) {
			w->hits++;
			/* A torn or mixed-up entry shows as claims of another id. */
			if (strcmp(out.sub, in.sub) != 0 || strcmp(out.jti, in.jti) != 0 || out.exp != in.exp)
				atomic_fetch_add(w->bad, 1);
		}
		/* And read back an older one of our own, if still there. */
		if (i >= 8) {
			uint64_t old = id - 8;
			hash_of(old, h);
			char want[32];
			snprintf(want, sizeof(want), "sub-%llu", (unsigned long long)old);
			if (kw_tokcache_get(w->c, h, 1000, 0, &out) && strcmp(out.sub, want) != 0)
				atomic_fetch_add(w->bad, 1);
		}
	}
	return NULL;
}

Test(tokens, tokcache_concurrent)
{
	kw_tokcache *c = kw_tokcache_new(4096);
	cr_assert_not_null(c);
	atomic_int bad = 0;
	cache_worker w[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (cache_worker){.c = c, .base = (uint64_t)i << 40, .bad = &bad};
		cr_assert_eq(pthread_create(&t[i], NULL, cache_thread, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_join(t[i], NULL), 0);
	cr_assert_eq(atomic_load(&bad), 0, "%d mixed-up entries", atomic_load(&bad));
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(w[i].puts, WORKER_OPS);
		/* Another thread can evict an entry between put and get, rarely. */
		cr_assert(w[i].hits > WORKER_OPS * 9 / 10, "thread %d: %d hits of %d", i, w[i].hits,
		          WORKER_OPS);
	}
	kw_tokcache_free(c);
}

/* --- refresh tokens and ids ---------------------------------------------- */

/* base64url without padding, through OpenSSL's standard encoder. */
static void b64url(const unsigned char *in, size_t len, char *out, size_t cap, bool keep_padding)
{
	cr_assert(cap >= 4 * ((len + 2) / 3) + 1);
	int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	cr_assert(n >= 0);
	for (int i = 0; i < n; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
		else if (out[i] == '=' && !keep_padding)
			out[i] = '\0';
	}
}

Test(tokens, refresh_parse_gives_tenant)
{
	const unsigned char tenant[16] = {0x0f, 0x8e, 0x2a, 0x4c, 0x5b, 0x6d, 0x4e, 0x7f,
	                                  0x8a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b};
	unsigned char raw[48];
	memcpy(raw, tenant, 16);
	for (int round = 0; round < 64; round++) {
		cr_assert_eq(RAND_bytes(raw + 16, 32), 1);
		char text[80];
		b64url(raw, sizeof(raw), text, sizeof(text), false);
		cr_assert_eq(strlen(text), KW_REFRESH_TEXT_LEN);
		char tid[37];
		memset(tid, 'x', sizeof(tid));
		cr_assert_eq(kw_refresh_parse(text, strlen(text), tid), KW_OK, "%s", text);
		cr_assert_str_eq(tid, TID);
	}
	/* Every byte value survives (including ones whose base64 is - and _). */
	memset(raw, 0xff, 16);
	memset(raw + 16, 0xfb, 32);
	char text[80], tid[37];
	b64url(raw, sizeof(raw), text, sizeof(text), false);
	cr_assert(strchr(text, '_') != NULL && strchr(text, '-') != NULL, "%s", text);
	cr_assert_eq(kw_refresh_parse(text, strlen(text), tid), KW_OK);
	cr_assert_str_eq(tid, "ffffffff-ffff-ffff-ffff-ffffffffffff");
	memset(raw, 0, 16);
	b64url(raw, sizeof(raw), text, sizeof(text), false);
	cr_assert_eq(kw_refresh_parse(text, strlen(text), tid), KW_OK);
	cr_assert_str_eq(tid, "00000000-0000-0000-0000-000000000000");
}

Test(tokens, refresh_parse_refuses)
{
	unsigned char raw[64];
	cr_assert_eq(RAND_bytes(raw, sizeof(raw)), 1);
	char good[80], text[128], tid[37];
	b64url(raw, 48, good, sizeof(good), false);
	cr_assert_eq(kw_refresh_parse(good, KW_REFRESH_TEXT_LEN, tid), KW_OK);

	/* Wrong lengths: short, long, and the right string with a wrong len. */
	cr_assert_eq(kw_refresh_parse(good, KW_REFRESH_TEXT_LEN - 1, tid), KW_ERR_INVALID);
	cr_assert_eq(kw_refresh_parse(good, 0, tid), KW_ERR_INVALID);
	snprintf(text, sizeof(text), "%sAAAA", good);
	cr_assert_eq(kw_refresh_parse(text, strlen(text), tid), KW_ERR_INVALID);
	snprintf(text, sizeof(text), "%sA", good);
	cr_assert_eq(kw_refresh_parse(text, strlen(text), tid), KW_ERR_INVALID);
	b64url(raw, 45, text, sizeof(text), false); /* 60 characters */
	cr_assert_eq(kw_refresh_parse(text, strlen(text), tid), KW_ERR_INVALID);
	b64url(raw, 51, text, sizeof(text), false); /* 68 characters */
	cr_assert_eq(kw_refresh_parse(text, strlen(text), tid), KW_ERR_INVALID);
	cr_assert_eq(kw_refresh_parse(NULL, KW_REFRESH_TEXT_LEN, tid), KW_ERR_INVALID);

	/* 64 characters with padding: 46 or 47 bytes. */
	b64url(raw, 46, text, sizeof(text), true);
	cr_assert(strlen(text) == 64 && text[63] == '=' && text[62] == '=', "%s", text);
	cr_assert_eq(kw_refresh_parse(text, 64, tid), KW_ERR_INVALID, "padded %s", text);
	b64url(raw, 47, text, sizeof(text), true);
	cr_assert(strlen(text) == 64 && text[63] == '=', "%s", text);
	cr_assert_eq(kw_refresh_parse(text, 64, tid), KW_ERR_INVALID, "padded %s", text);
	memcpy(text, good, sizeof(good));
	text[63] = '=';
	cr_assert_eq(kw_refresh_parse(text, 64, tid), KW_ERR_INVALID);

	/* Outside the base64url alphabet, at the start, middle and end. */
	const char bad_chars[] = {'+', '/', '!', '.', ' ', '\n', '~', '\0', '\x80', '\xff'};
	const size_t at[] = {0, 17, 31, 63};
	for (size_t i = 0; i < sizeof(bad_chars); i++)
		for (size_t j = 0; j < sizeof(at) / sizeof(at[0]); j++) {
			memcpy(text, good, sizeof(good));
			text[at[j]] = bad_chars[i];
			cr_assert_eq(kw_refresh_parse(text, 64, tid), KW_ERR_INVALID,
			             "0x%02x at %zu accepted", (unsigned char)bad_chars[i], at[j]);
		}
}

static bool matches(const char *re_text, const char *s)
{
	regex_t re;
	cr_assert_eq(regcomp(&re, re_text, REG_EXTENDED | REG_NOSUB), 0);
	bool ok = regexec(&re, s, 0, NULL, 0) == 0;
	regfree(&re);
	return ok;
}

Test(tokens, random_ids)
{
	char a[37], b[37], ha[33], hb[33];
	for (int i = 0; i < 256; i++) {
		memset(a, 'x', sizeof(a));
		cr_assert_eq(kw_random_uuid(a), KW_OK);
		cr_assert(matches("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", a),
		          "not a v4 uuid: %s", a);
		memset(ha, 'x', sizeof(ha));
		cr_assert_eq(kw_random_hex128(ha), KW_OK);
		cr_assert(matches("^[0-9a-f]{32}$", ha), "not 32 lower hex: %s", ha);
	}
	cr_assert_eq(kw_random_uuid(a), KW_OK);
	cr_assert_eq(kw_random_uuid(b), KW_OK);
	cr_assert_str_neq(a, b);
	cr_assert_eq(kw_random_hex128(ha), KW_OK);
	cr_assert_eq(kw_random_hex128(hb), KW_OK);
	cr_assert_str_neq(ha, hb);
}
