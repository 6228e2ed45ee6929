/* tokens.c — roles, the JWT key set, access-token claims, the verified-
 * token cache and the refresh-token format (see tokens.h).
 *
 * Nothing here touches the database. Refresh tokens and their HMACs are
 * wiped by the callers that hold them. */
#include "keyward/auth/tokens.h"
#include "keyward/core/text.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyward/core/log.h"

/* --- roles ------------------------------------------------------------ */

static bool name_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && strchr("_-.:", s[i]) == NULL)
			return false;
	return true;
}

kw_err kw_roles_parse(const char *text, kw_roles *out)
{
	kw_roles r = {.n = 0};
	char *copy = strdup(text ? text : "");
	if (copy == NULL)
		return KW_ERR_NOMEM;
	kw_err err = KW_OK;
	char *save = NULL;
	for (char *ent = strtok_r(copy, ",", &save); ent != NULL; ent = strtok_r(NULL, ",", &save)) {
		char *wsave = NULL;
		char *name = strtok_r(ent, " \t", &wsave), *ttl = strtok_r(NULL, " \t", &wsave);
		if (name == NULL)
			continue;
		kw_role *role = &r.roles[r.n];
		if (r.n == KW_ROLES_MAX || !name_ok(name, KW_ROLE_MAX) || kw_roles_find(&r, name) != NULL ||
		    ttl == NULL || !kw_duration_parse(ttl, &role->ttl_s) || role->ttl_s < 60 ||
		    role->ttl_s > 86400) {
			err = KW_ERR_CONFIG;
			break;
		}
		snprintf(role->name, sizeof(role->name), "%s", name);
		json_t *perms = json_array();
		for (char *p = strtok_r(NULL, " \t", &wsave); p != NULL; p = strtok_r(NULL, " \t", &wsave)) {
			if (!name_ok(p, 64)) {
				err = KW_ERR_CONFIG;
				break;
			}
			json_array_append_new(perms, json_string(p));
		}
		char *pj = perms ? json_dumps(perms, JSON_COMPACT) : NULL;
		json_decref(perms);
		if (err == KW_OK && (pj == NULL || strlen(pj) >= sizeof(role->permissions)))
			err = KW_ERR_CONFIG;
		if (err == KW_OK)
			snprintf(role->permissions, sizeof(role->permissions), "%s", pj);
		free(pj);
		if (err != KW_OK)
			break;
		r.n++;
	}
	free(copy);
	if (err == KW_OK && r.n == 0)
		err = KW_ERR_CONFIG;
	if (err == KW_OK)
		*out = r;
	return err;
}

const kw_role *kw_roles_find(const kw_roles *r, const char *name)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->roles[i].name, name) == 0)
			return &r->roles[i];
	return NULL;
}

/* --- the key set ------------------------------------------------------ */

#define KW_JWT_MAX_KEYS 16

struct kw_jwt_keyset {
	pthread_rwlock_t lock;
	kw_jwt_key keys[KW_JWT_MAX_KEYS]; /* highest version first */
	size_t n;
	struct timespec refreshed;
	pthread_mutex_t refresh_lock;
	_Atomic uint64_t generation;
};

static kw_err keyset_read(kw_hsm *hsm, kw_jwt_key *keys, size_t *n)
{
	const kw_hsm_key *active;
	kw_err err = kw_hsm_key_active(hsm, KW_KEY_JWT, &active);
	if (err != KW_OK)
		return err;
	size_t count = 0;
	for (uint32_t v = kw_hsm_key_version(active); v >= 1 && count < KW_JWT_MAX_KEYS; v--) {
		const kw_hsm_key *k;
		if (kw_hsm_key_get(hsm, KW_KEY_JWT, v, &k) != KW_OK)
			continue; /* retired */
		kw_jwt_key key;
		if ((err = kw_jwt_key_from_hsm(hsm, k, &key)) != KW_OK ||
		    (err = kw_jwt_key_prepare(&key)) != KW_OK)
			break;
		keys[count++] = key;
	}
	if (err != KW_OK) {
		for (size_t i = 0; i < count; i++)
			kw_jwt_key_release(&keys[i]);
		return err;
	}
	*n = count;
	return KW_OK;
}

kw_err kw_jwt_keyset_load(kw_hsm *hsm, kw_jwt_keyset **out)
{
	kw_jwt_keyset *ks = calloc(1, sizeof(*ks));
	if (ks == NULL)
		return KW_ERR_NOMEM;
	pthread_rwlock_init(&ks->lock, NULL);
	pthread_mutex_init(&ks->refresh_lock, NULL);
	kw_err err = keyset_read(hsm, ks->keys, &ks->n);
	if (err != KW_OK) {
		kw_jwt_keyset_free(ks);
		return err;
	}
	clock_gettime(CLOCK_MONOTONIC, &ks->refreshed);
	*out = ks;
	return KW_OK;
}

void kw_jwt_keyset_free(kw_jwt_keyset *ks)
{
	if (ks == NULL)
		return;
	for (size_t i = 0; i < ks->n; i++)
		kw_jwt_key_release(&ks->keys[i]);
	pthread_rwlock_destroy(&ks->lock);
	pthread_mutex_destroy(&ks->refresh_lock);
	free(ks);
}

kw_err kw_jwt_keyset_refresh(kw_jwt_keyset *ks, kw_hsm *hsm, int min_interval_ms)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&ks->refresh_lock);
	double since =
	    (double)(now.tv_sec - ks->refreshed.tv_sec) + (double)(now.tv_nsec - ks->refreshed.tv_nsec) / 1e9;
	if (since * 1000.0 < (double)min_interval_ms) {
		pthread_mutex_unlock(&ks->refresh_lock);
		return KW_OK;
	}
	ks->refreshed = now;
	kw_jwt_key fresh[KW_JWT_MAX_KEYS];
	size_t n = 0;
	kw_err err = kw_hsm_keys_refresh(hsm);
	if (err == KW_OK)
		err = keyset_read(hsm, fresh, &n);
	if (err == KW_OK) {
		pthread_rwlock_wrlock(&ks->lock);
		bool removed = false;
		for (size_t i = 0; i < ks->n; i++) {
			bool kept = false;
			for (size_t j = 0; j < n; j++)
				kept |= strcmp(ks->keys[i].kid, fresh[j].kid) == 0;
			removed |= !kept;
		}
		if (removed)
			atomic_fetch_add(&ks->generation, 1);
		for (size_t i = 0; i < ks->n; i++)
			kw_jwt_key_release(&ks->keys[i]);
		memcpy(ks->keys, fresh, n * sizeof(fresh[0]));
		ks->n = n;
		pthread_rwlock_unlock(&ks->lock);
	}
	pthread_mutex_unlock(&ks->refresh_lock);
	return err;
}

uint64_t kw_jwt_keyset_generation(kw_jwt_keyset *ks)
{
	return atomic_load(&ks->generation);
}

char *kw_jwt_keyset_jwks(kw_jwt_keyset *ks)
{
	pthread_rwlock_rdlock(&ks->lock);
	char *s = kw_jwks_json(ks->keys, ks->n);
	pthread_rwlock_unlock(&ks->lock);
	return s;
}

kw_err kw_jwt_keyset_active(kw_jwt_keyset *ks, char kid[KW_JWK_KID_LEN + 1], uint32_t *version)
{
	kw_err err = KW_ERR_NOT_FOUND;
	pthread_rwlock_rdlock(&ks->lock);
	if (ks->n > 0) {
		memcpy(kid, ks->keys[0].kid, KW_JWK_KID_LEN + 1);
		*version = ks->keys[0].version;
		err = KW_OK;
	}
	pthread_rwlock_unlock(&ks->lock);
	return err;
}

kw_err kw_jwt_keyset_verify(kw_jwt_keyset *ks, const char *token, size_t len, json_t **claims)
{
	pthread_rwlock_rdlock(&ks->lock);
	kw_err err = kw_jwt_verify(token, len, ks->keys, ks->n, claims);
	pthread_rwlock_unlock(&ks->lock);
	return err;
}

/* --- claims ----------------------------------------------------------- */

static bool get_str(json_t *o, const char *name, char *out, size_t cap, size_t min)
{
	json_t *v = json_object_get(o, name);
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (s == NULL || n < min || n >= cap || strlen(s) != n)
		return false;
	memcpy(out, s, n + 1);
	return true;
}

static bool get_time(json_t *o, const char *name, int64_t *out)
{
	json_t *v = json_object_get(o, name);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (int64_t)json_integer_value(v);
	return true;
}

bool kw_access_permits(const kw_access_claims *c, const char *permission)
{
	json_t *perms = json_loads(c->permissions, JSON_REJECT_DUPLICATES, NULL);
	bool ok = false;
	size_t i;
	json_t *p;
	json_array_foreach(perms, i, p)
	{
		if (json_is_string(p) && strcmp(json_string_value(p), permission) == 0) {
			ok = true;
			break;
		}
	}
	json_decref(perms);
	return ok;
}

/* RFC 7519 4.1.3: aud is one string, or an array of strings; audience
 * must be it, or among them. */
static bool aud_ok(const json_t *payload, const char *audience)
{
	const json_t *aud = json_object_get(payload, "aud");
	if (json_is_string(aud))
		return strcmp(json_string_value(aud), audience) == 0;
	if (!json_is_array(aud))
		return false;
	size_t i;
	const json_t *a;
	json_array_foreach(aud, i, a) if (json_is_string(a) &&
	                                  strcmp(json_string_value(a), audience) == 0) return true;
	return false;
}

kw_err kw_access_claims_read(json_t *payload, const char *issuer, const char *audience, kw_access_claims *out)
{
	kw_access_claims c;
	char iss[256];
	memset(&c, 0, sizeof(c));
	json_t *perms = json_object_get(payload, "permissions");
	if (!json_is_object(payload) || !get_str(payload, "iss", iss, sizeof(iss), 1) ||
	    strcmp(iss, issuer) != 0 || !aud_ok(payload, audience) ||
	    !get_str(payload, "sub", c.sub, sizeof(c.sub), 1) ||
	    !get_str(payload, "tid", c.tid, sizeof(c.tid), 36) || !kw_is_uuid(c.tid) ||
	    !get_str(payload, "role", c.role, sizeof(c.role), 1) ||
	    !get_str(payload, "jti", c.jti, sizeof(c.jti), 32) || !kw_is_lower_hex(c.jti, 32) ||
	    !get_str(payload, "sid", c.sid, sizeof(c.sid), 36) || !kw_is_uuid(c.sid) ||
	    !get_time(payload, "iat", &c.iat) || !get_time(payload, "nbf", &c.nbf) ||
	    !get_time(payload, "exp", &c.exp) || !json_is_array(perms))
		return KW_ERR_INVALID;
	size_t i;
	json_t *p;
	json_array_foreach(perms, i, p) if (!json_is_string(p)) return KW_ERR_INVALID;
	char *pj = json_dumps(perms, JSON_COMPACT);
	if (pj == NULL || strlen(pj) >= sizeof(c.permissions)) {
		free(pj);
		return KW_ERR_INVALID;
	}
	memcpy(c.permissions, pj, strlen(pj) + 1);
	free(pj);
	*out = c;
	return KW_OK;
}

kw_err kw_access_token_sign(kw_hsm_session *s, kw_hsm *hsm, kw_jwt_keyset *ks, const char *issuer,
                            const char *audience, const kw_access_claims *c, char **token)
{
	char kid[KW_JWK_KID_LEN + 1];
	uint32_t version;
	const kw_hsm_key *k;
	kw_err err = kw_jwt_keyset_active(ks, kid, &version);
	if (err == KW_OK)
		err = kw_hsm_key_get(hsm, KW_KEY_JWT, version, &k);
	if (err != KW_OK)
		return err;
	/* Serialised by hand around two strings jansson escapes: tid, sid and
	 * jti are checked UUIDs / hex, role and permissions come from the
	 * checked configuration, the times are integers. Saves building and
	 * freeing a JSON tree on every login. */
	json_t *js = json_string(c->sub), *ji = json_string(issuer), *ja = json_string(audience);
	char *sub = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL,
	     *iss = ji ? json_dumps(ji, JSON_ENCODE_ANY) : NULL,
	     *aud = ja ? json_dumps(ja, JSON_ENCODE_ANY) : NULL;
	json_decref(js);
	json_decref(ji);
	json_decref(ja);
	char *payload = NULL;
	int n = -1;
	if (sub != NULL && iss != NULL && aud != NULL && kw_is_uuid(c->tid) && kw_is_uuid(c->sid) &&
	    kw_is_lower_hex(c->jti, 32))
		n = asprintf(
		    &payload,
		    "{\"iss\":%s,\"aud\":%s,\"sub\":%s,\"tid\":\"%s\",\"role\":\"%s\",\"permissions\":%s,"
		    "\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld,\"jti\":\"%s\",\"sid\":\"%s\"}",
		    iss, aud, sub, c->tid, c->role, c->permissions[0] ? c->permissions : "[]",
		    (long long)c->iat, (long long)c->nbf, (long long)c->exp, c->jti, c->sid);
	free(sub);
	free(iss);
	free(aud);
	if (n < 0)
		return KW_ERR_NOMEM;
	err = kw_jwt_sign_text(s, k, kid, payload, (size_t)n, token);
	free(payload);
	return err;
}

/* --- verified-token cache ---------------------------------------------- */

#define KW_TOKCACHE_WAYS 4

typedef struct kw_tokentry {
	unsigned char hash[32];
	bool used;
	uint64_t generation;
	kw_access_claims claims;
} kw_tokentry;

typedef struct kw_tokshard {
	pthread_mutex_t lock;
} kw_tokshard;

#define KW_TOKCACHE_SHARDS 64

struct kw_tokcache {
	kw_tokentry *sets; /* nsets * KW_TOKCACHE_WAYS */
	size_t nsets;
	kw_tokshard shards[KW_TOKCACHE_SHARDS];
};

kw_tokcache *kw_tokcache_new(size_t capacity)
{
	kw_tokcache *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->nsets = capacity / KW_TOKCACHE_WAYS + 1;
	c->sets = calloc(c->nsets * KW_TOKCACHE_WAYS, sizeof(kw_tokentry));
	if (c->sets == NULL) {
		free(c);
		return NULL;
	}
	for (size_t i = 0; i < KW_TOKCACHE_SHARDS; i++)
		pthread_mutex_init(&c->shards[i].lock, NULL);
	return c;
}

void kw_tokcache_free(kw_tokcache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < KW_TOKCACHE_SHARDS; i++)
		pthread_mutex_destroy(&c->shards[i].lock);
	free(c->sets);
	free(c);
}

static size_t set_of(const kw_tokcache *c, const unsigned char hash[32])
{
	uint64_t h;
	memcpy(&h, hash, sizeof(h));
	return (size_t)(h % c->nsets);
}

bool kw_tokcache_get(kw_tokcache *c, const unsigned char hash[32], int64_t now, uint64_t generation,
                     kw_access_claims *out)
{
	size_t set = set_of(c, hash);
	kw_tokshard *sh = &c->shards[set % KW_TOKCACHE_SHARDS];
	kw_tokentry *e = &c->sets[set * KW_TOKCACHE_WAYS];
	bool hit = false;
	pthread_mutex_lock(&sh->lock);
	for (int w = 0; w < KW_TOKCACHE_WAYS; w++) {
		if (!e[w].used || CRYPTO_memcmp(e[w].hash, hash, 32) != 0)
			continue;
		if (e[w].claims.exp <= now || e[w].generation != generation) {
			e[w].used = false; /* dropped at its exp, or its key was retired */
			break;
		}
		*out = e[w].claims;
		hit = true;
		break;
	}
	pthread_mutex_unlock(&sh->lock);
	return hit;
}

void kw_tokcache_put(kw_tokcache *c, const unsigned char hash[32], uint64_t generation,
                     const kw_access_claims *claims)
{
	size_t set = set_of(c, hash);
	kw_tokshard *sh = &c->shards[set % KW_TOKCACHE_SHARDS];
	kw_tokentry *e = &c->sets[set * KW_TOKCACHE_WAYS];
	pthread_mutex_lock(&sh->lock);
	/* A free way, else the one that expires first. */
	int victim = 0;
	for (int w = 0; w < KW_TOKCACHE_WAYS; w++) {
		if (!e[w].used) {
			victim = w;
			break;
		}
		if (e[w].claims.exp < e[victim].claims.exp)
			victim = w;
	}
	memcpy(e[victim].hash, hash, 32);
	e[victim].claims = *claims;
	e[victim].generation = generation;
	e[victim].used = true;
	pthread_mutex_unlock(&sh->lock);
}

/* --- refresh tokens and ids --------------------------------------------- */

kw_err kw_refresh_generate(kw_hsm_session *s, const char *tenant_id, char text[KW_REFRESH_TEXT_LEN + 1])
{
	unsigned char raw[16 + KW_REFRESH_RAND_LEN];
	if (!kw_uuid_parse(tenant_id, raw))
		return KW_ERR_INVALID;
	kw_err err = kw_hsm_random(s, raw + 16, KW_REFRESH_RAND_LEN);
	if (err == KW_OK)
		kw_b64url_encode(raw, sizeof(raw), text);
	OPENSSL_cleanse(raw, sizeof(raw));
	return err;
}

kw_err kw_refresh_parse(const char *text, size_t len, char tenant_id[37])
{
	unsigned char raw[16 + KW_REFRESH_RAND_LEN + 1];
	size_t n = 0;
	if (text == NULL || len != KW_REFRESH_TEXT_LEN ||
	    kw_b64url_decode(text, len, raw, sizeof(raw), &n) != KW_OK || n != 16 + KW_REFRESH_RAND_LEN)
		return KW_ERR_INVALID;
	kw_uuid_format(raw, tenant_id);
	OPENSSL_cleanse(raw, sizeof(raw));
	return KW_OK;
}

kw_err kw_random_ids(kw_hsm_session *s, char jti[33], char sid[37])
{
	unsigned char b[32];
	kw_err err = kw_hsm_random(s, b, sid ? 32 : 16);
	if (err != KW_OK)
		return err;
	kw_hex_encode(b, 16, jti);
	if (sid) {
		b[16 + 6] = (unsigned char)((b[16 + 6] & 0x0f) | 0x40);
		b[16 + 8] = (unsigned char)((b[16 + 8] & 0x3f) | 0x80);
		kw_uuid_format(b + 16, sid);
	}
	OPENSSL_cleanse(b, sizeof(b));
	return KW_OK;
}
