/* guard.c — API-key and access-token checks, budgets and refusals.
 *
 * Order of checks, cheapest first: the client IP's budget; the IP's budget
 * of failed authentications (so key guessing is throttled); exactly one
 * Authorization header of bounded size; the key's format and checksum (a
 * typo never reaches the database); the cache of recently verified keys;
 * then the database row and HMAC(pepper) computed in the token, compared
 * in constant time; revocation; the key's own budget; the scopes. */
#include "keyward/api/guard.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "handlers.h"
#include "keyward/app/app.h"
#include "keyward/auth/apikey.h"
#include "keyward/auth/revocation.h"
#include "keyward/auth/signature.h"
#include "keyward/auth/tokens.h"
#include "keyward/core/log.h"
#include "keyward/core/secret.h"
#include "keyward/core/text.h"
#include "keyward/db/changes.h"
#include "keyward/db/repo_signing.h"
#include "keyward/http/clientip.h"
#include "keyward/http/ratelimit.h"
#include "keyward/vault/signing.h"

#define KW_AUTH_HEADER_MAX 16384
#define KW_TOUCH_INTERVAL  60.0

static atomic_ullong st_lookups, st_hits, st_401, st_403, st_429;

void kw_auth_stats_get(kw_auth_stats *out)
{
	out->key_lookups = atomic_load(&st_lookups);
	out->cache_hits = atomic_load(&st_hits);
	out->refused_401 = atomic_load(&st_401);
	out->refused_403 = atomic_load(&st_403);
	out->refused_429 = atomic_load(&st_429);
}

void kw_respond_failure(kw_call *call, kw_err err)
{
	kw_outcome o = kw_out_failure(err);
	kw_respond_error(call, o.status, o.code, o.message);
	if (o.status == 503)
		kw_respond_header(call, "Retry-After", "1");
}

void kw_audit_refusal(kw_call *call, const char *tenant_id, const char *actor, const char *action, int status,
                      const char *code)
{
	if (call->app->audit == NULL)
		return;
	char st[64], path[4 * 256 + 1];
	snprintf(st, sizeof(st), "%d %s", status, code);
	/* The path as valid UTF-8 (JSON needs it), at most 256 characters. */
	kw_utf8_clean(call->req.path, strlen(call->req.path), 256, path, sizeof(path), NULL);
	json_t *o = json_pack("{s:s, s:s}", "method", call->req.method, "path", path);
	char *ctx = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	kw_audit_event ev = kw_api_event(call, tenant_id, actor ? actor : "anonymous", action, NULL, st, ctx);
	/* Posted: the refusal's answer does not wait for the row. */
	kw_err err = kw_audit_writer_post(call->app->audit, &ev);
	if (err != KW_OK)
		kw_warn("audit: refusal of request %s not recorded: %s", call->req.request_id,
		        kw_err_str(err));
	free(ctx);
}

static void set_rl_headers(kw_call *call, const kw_rl_result *r)
{
	char v[32];
	snprintf(v, sizeof(v), "%d", r->limit);
	kw_respond_header(call, "RateLimit-Limit", v);
	snprintf(v, sizeof(v), "%d", r->remaining);
	kw_respond_header(call, "RateLimit-Remaining", v);
	snprintf(v, sizeof(v), "%d", r->reset_s);
	kw_respond_header(call, "RateLimit-Reset", v);
}

static void refuse_429(kw_call *call, const kw_rl_result *r, const char *tenant, const char *actor,
                       const char *why)
{
	atomic_fetch_add(&st_429, 1);
	kw_respond_error(call, 429, "rate_limited", why);
	char v[32];
	snprintf(v, sizeof(v), "%d", r->retry_after);
	kw_respond_header(call, "Retry-After", v);
	set_rl_headers(call, r);
	kw_audit_refusal(call, tenant, actor, "auth.rate_limited", 429, "rate_limited");
}

/* The address's budget, spent at most once per request: a request that
 * moves from its I/O thread to a worker (call->defer) keeps what it spent
 * there (call->app_flags). */
#define SPENT_IP KW_FLAG_SPENT_IP

static bool take_ip_budget(kw_call *call, kw_rl_result *r)
{
	if (call->app_flags & SPENT_IP)
		return true;
	char key[96], who[80];
	kw_client_bucket(call->req.client_ip, call->app->cfg->rl_ipv6_prefix, who, sizeof(who));
	snprintf(key, sizeof(key), "ip:%s", who);
	kw_ratelimit_take(call->app->rl, key, call->app->cfg->rl_ip_per_minute, kw_ratelimit_now(), r);
	if (r->allowed)
		call->app_flags |= SPENT_IP;
	return r->allowed;
}

bool kw_auth_ip_budget(kw_call *call)
{
	kw_rl_result r;
	if (take_ip_budget(call, &r))
		return true;
	refuse_429(call, &r, NULL, NULL, "too many requests from this address");
	return false;
}

/* The address's budget of failed authentications: peeked before a
 * credential is checked (so guessing is throttled), spent by each failure. */
static void fail_budget(kw_call *call, bool spend, double now, kw_rl_result *r)
{
	char key[96], who[80];
	kw_client_bucket(call->req.client_ip, call->app->cfg->rl_ipv6_prefix, who, sizeof(who));
	snprintf(key, sizeof(key), "fail:%s", who);
	if (spend)
		kw_ratelimit_take(call->app->rl, key, call->app->cfg->rl_auth_fail_per_minute, now, r);
	else
		kw_ratelimit_peek(call->app->rl, key, call->app->cfg->rl_auth_fail_per_minute, now, r);
}

void kw_auth_failed(kw_call *call)
{
	kw_rl_result r;
	fail_budget(call, true, kw_ratelimit_now(), &r);
}

/* A failed authentication: spend one of the IP's failure tokens, answer
 * 401 invalid_credentials, audit. */
static bool refuse_401(kw_call *call, const char *tenant, const char *actor)
{
	kw_auth_failed(call);
	atomic_fetch_add(&st_401, 1);
	kw_respond_error(call, 401, "invalid_credentials", "missing or invalid credentials");
	kw_respond_header(call, "WWW-Authenticate", "Bearer");
	kw_audit_refusal(call, tenant, actor, "auth.denied", 401, "invalid_credentials");
	return false;
}

bool kw_auth_fail_budget(kw_call *call)
{
	kw_rl_result r;
	fail_budget(call, false, kw_ratelimit_now(), &r);
	if (r.allowed)
		return true;
	refuse_429(call, &r, NULL, NULL, "too many failed authentications from this address");
	return false;
}

/* "Bearer <token>" with exactly one Authorization header; token into
 * tok and len (pointing into the request). */
static bool bearer(const kw_request *req, const char **tok, size_t *len)
{
	int count = 0;
	const char *h = kw_request_header(req, "Authorization", &count);
	if (h == NULL || count != 1)
		return false;
	size_t n = strlen(h);
	if (n > KW_AUTH_HEADER_MAX || n < 8 || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	const char *t = h + 7;
	while (*t == ' ')
		t++;
	size_t tl = strlen(t);
	while (tl > 0 && t[tl - 1] == ' ')
		tl--;
	if (tl == 0)
		return false;
	*tok = t;
	*len = tl;
	return true;
}

/* Loads and verifies the key from the database and the token. */
static kw_err verify_key(kw_call *call, const char *key, size_t len, const char *prefix, kw_principal *p,
                         int *rate_limit)
{
	kw_worker_res *res = call->res;
	if (res->db == NULL || kw_db_ensure(res->db) != KW_OK)
		return KW_ERR_DB_UNAVAILABLE;
	if (res->hsm == NULL)
		return KW_ERR_HSM_UNAVAILABLE;
	atomic_fetch_add(&st_lookups, 1);
	char tenant[37];
	kw_apikey_row row;
	kw_err err = kw_apikey_tenant_of(res->db, prefix, tenant);
	if (err != KW_OK)
		return err;
	if ((err = kw_db_begin(res->db, tenant, NULL)) != KW_OK)
		return err;
	err = kw_apikey_get_by_prefix(res->db, prefix, &row);
	if (err == KW_OK)
		err = kw_db_commit(res->db);
	else
		kw_db_rollback(res->db);
	if (err != KW_OK)
		return err;
	const kw_hsm_key *pepper;
	unsigned char mac[KW_HMAC_LEN];
	if ((err = kw_hsm_key_get(call->app->hsm, KW_KEY_PEPPER, row.pepper_version, &pepper)) != KW_OK ||
	    (err = kw_apikey_hmac(res->hsm, pepper, key, len, mac)) != KW_OK)
		return err;
	bool same = CRYPTO_memcmp(mac, row.key_hmac, KW_HMAC_LEN) == 0;
	OPENSSL_cleanse(mac, sizeof(mac));
	if (!same || row.revoked_at[0] != '\0')
		return KW_ERR_VERIFY;
	memset(p, 0, sizeof(*p));
	snprintf(p->tenant_id, sizeof(p->tenant_id), "%s", row.tenant_id);
	snprintf(p->key_id, sizeof(p->key_id), "%s", row.id);
	snprintf(p->prefix, sizeof(p->prefix), "%s", row.prefix);
	snprintf(p->actor, sizeof(p->actor), "api_key:%s", row.prefix);
	p->scopes = row.scopes;
	*rate_limit = row.rate_limit_per_minute;
	return KW_OK;
}

static bool defer_to_worker(kw_call *call);

bool kw_auth_api_key(kw_call *call, uint32_t need, kw_principal *out, int *rate_limit_out)
{
	kw_app *app = call->app;
	bool io = call->res == NULL;
	kw_rl_result ir;
	if (!take_ip_budget(call, &ir)) {
		if (io)
			return defer_to_worker(call);
		refuse_429(call, &ir, NULL, NULL, "too many requests from this address");
		return false;
	}
	double now = kw_ratelimit_now();
	kw_rl_result fr;
	fail_budget(call, false, now, &fr);
	if (!fr.allowed) {
		if (io)
			return defer_to_worker(call);
		refuse_429(call, &fr, NULL, NULL, "too many failed authentications from this address");
		return false;
	}
	const char *key;
	size_t len;
	char prefix[KW_APIKEY_PREFIX_LEN + 1];
	if (!bearer(&call->req, &key, &len) || kw_apikey_parse(key, len, prefix) != KW_OK)
		return io ? defer_to_worker(call) : refuse_401(call, NULL, NULL);

	unsigned char hash[32];
	EVP_Digest(key, len, hash, NULL, EVP_sha256(), NULL);
	kw_principal p;
	int rate_limit = 0;
	double touched_at = 0;
	if (kw_keycache_get(app->keycache, hash, now, app->cfg->key_cache_ttl_ms / 1000.0, &p, &rate_limit,
	                    &touched_at)) {
		atomic_fetch_add(&st_hits, 1);
	} else if (io) {
		return defer_to_worker(call); /* the database and the token are the workers' */
	} else {
		kw_err err = verify_key(call, key, len, prefix, &p, &rate_limit);
		if (err == KW_ERR_NOT_FOUND || err == KW_ERR_VERIFY)
			return refuse_401(call, NULL, NULL);
		if (err != KW_OK) {
			kw_respond_failure(call, err);
			return false;
		}
		kw_keycache_put(app->keycache, hash, now, touched_at, &p, rate_limit);
	}
	/* On an I/O thread: only the path that needs nothing else runs there
	 * (scopes held, no last_used_at write due); the key's own budget is
	 * spent by kw_auth_api_key_spend once the route has its answer. */
	bool touch = now - touched_at >= KW_TOUCH_INTERVAL;
	if (io && ((p.scopes & need) != need || touch))
		return defer_to_worker(call);
	*rate_limit_out = rate_limit;
	if (!io && !kw_auth_api_key_spend(call, &p, rate_limit))
		return false;
	if ((p.scopes & need) != need) {
		atomic_fetch_add(&st_403, 1);
		kw_respond_error(call, 403, "insufficient_scope",
		                 "the API key lacks a scope this route needs");
		kw_audit_refusal(call, p.tenant_id, p.actor, "auth.denied", 403, "insufficient_scope");
		return false;
	}
	/* last_used_at: at most one write a minute per key and instance. */
	if (touch && call->res->db != NULL) {
		kw_db *db = call->res->db;
		if (kw_db_begin(db, p.tenant_id, NULL) == KW_OK) {
			if (kw_apikey_touch(db, p.key_id) == KW_OK && kw_db_commit(db) == KW_OK)
				kw_keycache_touched(app->keycache, hash, now);
			else if (kw_db_in_tx(db))
				kw_db_rollback(db);
		}
	}
	*out = p;
	return true;
}

bool kw_auth_api_key_spend(kw_call *call, const kw_principal *p, int rate_limit)
{
	kw_app *app = call->app;
	if (call->app_flags & KW_FLAG_SPENT_KEY)
		return true; /* spent on this call's first run (a coalesced wait that timed out) */
	char kkey[64];
	snprintf(kkey, sizeof(kkey), "key:%s", p->prefix);
	kw_rl_result kr;
	kw_ratelimit_take(app->rl, kkey, rate_limit > 0 ? rate_limit : app->cfg->rl_key_per_minute,
	                  kw_ratelimit_now(), &kr);
	if (!kr.allowed) {
		if (call->res == NULL)
			return defer_to_worker(call); /* refused there, with its audit row */
		refuse_429(call, &kr, p->tenant_id, p->actor, "this API key's rate limit is exhausted");
		return false;
	}
	set_rl_headers(call, &kr);
	call->app_flags |= KW_FLAG_SPENT_KEY;
	return true;
}

/* --- signed requests (DESIGN 5.6) ---------------------------------------- */

static const char *const sig_headers[3] = {"X-Timestamp", "X-Nonce", "X-Signature"};

bool kw_auth_has_signature(const kw_request *req)
{
	for (int i = 0; i < 3; i++)
		if (kw_request_header(req, sig_headers[i], NULL) != NULL)
			return true;
	return false;
}

static bool refuse_sig(kw_call *call, const char *code, const char *msg, const char *tenant,
                       const char *actor)
{
	kw_auth_failed(call);
	atomic_fetch_add(&st_401, 1);
	kw_respond_error(call, 401, code, msg);
	kw_audit_refusal(call, tenant, actor, "auth.signature_refused", 401, code);
	return false;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The key kid and its secret (into secret, locked): from the cache while
 * the change feed is fresh, else the database and the token. */
static kw_err signing_key(kw_call *call, const char *kid, kw_sigkey *key, unsigned char *secret)
{
	kw_app *app = call->app;
	bool cache = kw_changes_fresh(app->changes);
	if (cache && kw_sigcache_get(app->sigkeys, kid, key, secret))
		return KW_OK;
	uint64_t gen = kw_sigcache_generation(app->sigkeys);
	kw_signing_row row;
	kw_err err = kw_signing_lookup(call->res->db, kid, &row);
	if (err == KW_OK)
		err = kw_signing_unwrap(app->hsm, call->res->hsm, &row, secret);
	if (err == KW_ERR_VERIFY || err == KW_ERR_INVALID) {
		kw_err_log("signing: the secret of key %s does not unwrap where it is (request %s)", kid,
		           call->req.request_id);
		err = KW_ERR_NOT_FOUND;
	}
	if (err == KW_OK) {
		*key = (kw_sigkey){.scopes = row.scopes, .expires_at = row.expires_unix};
		memcpy(key->tenant_id, row.tenant_id, 37);
		memcpy(key->kid, row.id, 37);
		if (row.revoked)
			key->expires_at = 1; /* long past */
		if (cache)
			kw_sigcache_put(app->sigkeys, gen, key, secret);
	}
	OPENSSL_cleanse(&row, sizeof(row));
	return err;
}

bool kw_auth_signature(kw_call *call, uint32_t need, kw_principal *out, int *rate_limit_out)
{
	if (call->res == NULL)
		return defer_to_worker(call); /* the nonce is written on a worker */
	kw_rl_result ir;
	if (!take_ip_budget(call, &ir)) {
		refuse_429(call, &ir, NULL, NULL, "too many requests from this address");
		return false;
	}
	double now = kw_ratelimit_now();
	kw_rl_result fr;
	fail_budget(call, false, now, &fr);
	if (!fr.allowed) {
		refuse_429(call, &fr, NULL, NULL, "too many failed authentications from this address");
		return false;
	}
	/* Exactly one of each header, none empty, and no other credential. */
	const char *v[3];
	for (int i = 0; i < 3; i++) {
		int count = 0;
		v[i] = kw_request_header(&call->req, sig_headers[i], &count);
		if (v[i] == NULL || v[i][0] == '\0' || count != 1)
			return refuse_sig(
			    call, "invalid_signature",
			    "a signed request carries exactly one non-empty X-Timestamp, X-Nonce and "
			    "X-Signature",
			    NULL, NULL);
	}
	if (kw_request_header(&call->req, "Authorization", NULL) != NULL)
		return refuse_sig(call, "invalid_signature",
		                  "a signed request carries no Authorization header", NULL, NULL);
	kw_sig_headers h;
	if (kw_sig_parse(v[0], v[1], v[2], &h) != KW_OK)
		return refuse_sig(call, "invalid_signature", "malformed signature headers", NULL, NULL);
	int64_t skew = wall_ms() - h.ts_ms;
	if (skew > KW_SIG_WINDOW_MS || skew < -KW_SIG_WINDOW_MS)
		return refuse_sig(call, "timestamp_out_of_window",
		                  "X-Timestamp is more than 5 minutes from the server's clock", NULL, NULL);
	kw_sigkey key;
	kw_secret *secret = kw_secret_new(KW_SIG_SECRET_LEN);
	if (secret == NULL) {
		kw_respond_failure(call, KW_ERR_NOMEM);
		return false;
	}
	kw_err err = signing_key(call, h.kid, &key, kw_secret_data(secret));
	unsigned char mac[KW_SIG_MAC_LEN];
	bool ok = false;
	if (err == KW_OK)
		err =
		    kw_sig_mac(kw_secret_data(secret), KW_SIG_SECRET_LEN, call->req.method, call->req.target,
		               h.ts_text, h.nonce, call->req.body, call->req.body_len, mac);
	kw_secret_free(secret);
	if (err == KW_OK)
		ok = CRYPTO_memcmp(mac, h.mac, sizeof(mac)) == 0 &&
		     (key.expires_at == 0 || key.expires_at > (int64_t)time(NULL));
	OPENSSL_cleanse(mac, sizeof(mac));
	char actor[48];
	snprintf(actor, sizeof(actor), "sigkey:%s", h.kid);
	if (err == KW_ERR_NOT_FOUND || (err == KW_OK && !ok))
		return refuse_sig(call, "invalid_signature", "the signature does not verify",
		                  err == KW_OK ? key.tenant_id : NULL, err == KW_OK ? actor : NULL);
	if (err != KW_OK) {
		kw_respond_failure(call, err);
		return false;
	}
	/* Only a signature that verifies spends its nonce. */
	err = kw_signing_spend_nonce(call->res->db, h.kid, h.nonce,
	                             h.ts_ms / 1000 + KW_SIG_WINDOW_MS / 1000 + 1);
	if (err == KW_ERR_EXISTS)
		return refuse_sig(call, "nonce_reused", "this nonce was used before with this key",
		                  key.tenant_id, actor);
	if (err != KW_OK) {
		kw_respond_error(call, 503, "nonce_store_unavailable",
		                 "the nonce store cannot be written; the request was not accepted");
		kw_respond_header(call, "Retry-After", "1");
		return false;
	}
	kw_principal p;
	memset(&p, 0, sizeof(p));
	memcpy(p.tenant_id, key.tenant_id, 37);
	memcpy(p.key_id, key.kid, 37);
	snprintf(p.prefix, sizeof(p.prefix), "s%.14s", key.kid); /* the budget's bucket name */
	snprintf(p.actor, sizeof(p.actor), "%s", actor);
	p.scopes = key.scopes;
	if (!kw_auth_api_key_spend(call, &p, 0))
		return false;
	if ((p.scopes & need) != need) {
		atomic_fetch_add(&st_403, 1);
		kw_respond_error(call, 403, "insufficient_scope",
		                 "the signing key lacks a scope this route needs");
		kw_audit_refusal(call, p.tenant_id, p.actor, "auth.denied", 403, "insufficient_scope");
		return false;
	}
	*rate_limit_out = 0;
	*out = p;
	return true;
}

/* --- access tokens ------------------------------------------------------ */

static bool defer_to_worker(kw_call *call)
{
	call->defer = call->def->fn;
	return false;
}

static bool refuse_token(kw_call *call, const char *code, const char *msg, const char *tenant)
{
	kw_auth_failed(call);
	atomic_fetch_add(&st_401, 1);
	kw_respond_error(call, 401, code, msg);
	kw_respond_header(call, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
	kw_audit_refusal(call, tenant, NULL, "auth.token_refused", 401, code);
	return false;
}

bool kw_auth_access_token(kw_call *call, bool allow_revoked, kw_access_claims *out)
{
	kw_app *app = call->app;
	bool io = call->res == NULL;
	kw_rl_result r;
	double mono = kw_ratelimit_now();
	if (!take_ip_budget(call, &r)) {
		if (io)
			return defer_to_worker(call);
		refuse_429(call, &r, NULL, NULL, "too many requests from this address");
		return false;
	}
	fail_budget(call, false, mono, &r);
	if (!r.allowed) {
		if (io)
			return defer_to_worker(call);
		refuse_429(call, &r, NULL, NULL, "too many failed authentications from this address");
		return false;
	}

	const char *tok;
	size_t len;
	if (!bearer(&call->req, &tok, &len) || len > KW_JWT_MAX_LEN)
		return io ? defer_to_worker(call)
		          : refuse_token(call, "invalid_token", "missing or malformed access token", NULL);
	unsigned char hash[32];
	EVP_Digest(tok, len, hash, NULL, EVP_sha256(), NULL);
	int64_t now = (int64_t)time(NULL);
	kw_access_claims c;
	/* Read before verifying: a retirement racing with us re-verifies. */
	uint64_t gen = kw_jwt_keyset_generation(app->jwks);
	if (!kw_tokcache_get(app->tokcache, hash, now - app->cfg->jwt_leeway_s, gen, &c)) {
		json_t *payload = NULL;
		kw_err err = kw_jwt_keyset_verify(app->jwks, tok, len, &payload);
		if (err == KW_ERR_VERIFY && !io) {
			/* Perhaps signed by a key rotated in after we loaded ours. */
			if (kw_jwt_keyset_refresh(app->jwks, app->hsm, 5000) == KW_OK)
				err = kw_jwt_keyset_verify(app->jwks, tok, len, &payload);
		}
		if (err == KW_OK)
			err =
			    kw_access_claims_read(payload, app->cfg->jwt_issuer, app->cfg->jwt_audience, &c);
		json_decref(payload);
		if (err != KW_OK)
			return io ? defer_to_worker(call)
			          : refuse_token(call, "invalid_token", "the access token is not valid",
			                         NULL);
		kw_tokcache_put(app->tokcache, hash, gen, &c);
	}
	if (c.exp + app->cfg->jwt_leeway_s <= now)
		return io ? defer_to_worker(call)
		          : refuse_token(call, "token_expired", "the access token has expired", c.tid);
	if (c.nbf - app->cfg->jwt_leeway_s > now)
		return io ? defer_to_worker(call)
		          : refuse_token(call, "token_not_yet_valid", "the access token is not valid yet",
		                         c.tid);
	kw_err rerr = kw_revcache_check(app->revs, c.jti, c.sid, now);
	if (rerr == KW_ERR_VERIFY && !allow_revoked)
		return io ? defer_to_worker(call)
		          : refuse_token(call, "token_revoked", "the access token has been revoked", c.tid);
	if (rerr != KW_OK && rerr != KW_ERR_VERIFY) {
		if (io)
			return defer_to_worker(call);
		kw_respond_error(call, 503, "revocation_unavailable",
		                 "token revocation cannot be checked right now; retry shortly");
		kw_respond_header(call, "Retry-After", "1");
		return false;
	}
	*out = c;
	return true;
}
