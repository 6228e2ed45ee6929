/* auth_tokens.c — access and refresh tokens (DESIGN §5.4): JWKS, login,
 * refresh with reuse detection, logout, revoke, revoke-all, sessions,
 * introspection, whoami.
 *
 * The tenant comes from the credential: the API key (login, introspect),
 * the access token (logout, revoke-all, sessions, whoami) or the refresh
 * token itself (refresh, revoke). No token, refresh token or HMAC is ever
 * written to a log line or an audit row; audit rows name families (sid)
 * and subjects. Every change commits together with its audit row. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handlers.h"
#include "keyward/api/guard.h"
#include "keyward/app/app.h"
#include "keyward/auth/apikey.h"
#include "keyward/auth/revocation.h"
#include "keyward/auth/tokens.h"
#include "keyward/core/log.h"
#include "keyward/db/sessions.h"
#include "keyward/http/ratelimit.h"

/* --- helpers ------------------------------------------------------------ */

static const char *user_agent(kw_call *call)
{
	return kw_request_header(&call->req, "User-Agent", NULL);
}

static char *ctx_json(const char *k1, const char *v1, const char *k2, const char *v2)
{
	json_t *o = json_object();
	if (k1 && v1)
		json_object_set_new(o, k1, json_string(v1));
	if (k2 && v2)
		json_object_set_new(o, k2, json_string(v2));
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

/* HMAC of a refresh token under the pepper of the given version: keyed by
 * the subkey HKDF-Expand(pepper, KW_REFRESH_SUBKEY), computed in process
 * (kw_hsm_subkey_hmac), so a refresh costs no token call for it. */
#define KW_REFRESH_SUBKEY "keyward:v1:refresh-token"

static kw_err refresh_hmac(kw_call *call, uint32_t version, const char *token, unsigned char mac[KW_HMAC_LEN])
{
	const kw_hsm_key *pepper;
	kw_err err = kw_hsm_key_get(call->app->hsm, KW_KEY_PEPPER, version, &pepper);
	if (err == KW_OK)
		err = kw_hsm_subkey_hmac(call->res->hsm, pepper, KW_REFRESH_SUBKEY,
		                         (const unsigned char *)token, strlen(token), mac);
	return err;
}

static uint32_t active_pepper(kw_call *call)
{
	const kw_hsm_key *k;
	return kw_hsm_key_active(call->app->hsm, KW_KEY_PEPPER, &k) == KW_OK ? kw_hsm_key_version(k) : 0;
}

/* A fresh refresh token and its HMAC under the active pepper. */
static kw_err new_refresh(kw_call *call, const char *tenant, char text[KW_REFRESH_TEXT_LEN + 1],
                          unsigned char mac[KW_HMAC_LEN], uint32_t *pepper_id)
{
	*pepper_id = active_pepper(call);
	kw_err err = *pepper_id ? kw_refresh_generate(call->res->hsm, tenant, text) : KW_ERR_HSM;
	if (err == KW_OK)
		err = refresh_hmac(call, *pepper_id, text, mac);
	return err;
}

/* Signs the access token for a family. */
static kw_err new_access(kw_call *call, const char *tenant, const char *subject, const kw_role *role,
                         const char *sid, kw_access_claims *c, char **token)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->sub, sizeof(c->sub), "%s", subject);
	snprintf(c->tid, sizeof(c->tid), "%s", tenant);
	snprintf(c->role, sizeof(c->role), "%s", role->name);
	snprintf(c->permissions, sizeof(c->permissions), "%s", role->permissions);
	snprintf(c->sid, sizeof(c->sid), "%s", sid);
	kw_err err = kw_random_ids(call->res->hsm, c->jti, NULL);
	c->iat = c->nbf = (int64_t)time(NULL);
	c->exp = c->iat + role->ttl_s;
	if (err == KW_OK)
		err =
		    kw_access_token_sign(call->res->hsm, call->app->hsm, call->app->jwks,
		                         call->app->cfg->jwt_issuer, call->app->cfg->jwt_audience, c, token);
	return err;
}

/* The login/refresh answer. Wipes the tokens' copies it makes. */
/* The login answer as JSON text (malloc'd), or NULL. */
static char *tokens_body(const kw_access_claims *c, const char *access, const char *refresh,
                         int64_t refresh_exp)
{
	char exp[32], rexp[32];
	kw_time_rfc3339(c->exp, exp);
	kw_time_rfc3339(refresh_exp, rexp);
	/* Every member is known safe inside quotes: tokens are base64url (and
	 * dots), times are formatted here, role and permissions come from the
	 * checked configuration. */
	char *text = NULL;
	if (asprintf(
	        &text,
	        "{\"access_token\":\"%s\",\"token_type\":\"Bearer\",\"expires_at\":\"%s\",\"refresh_token\":"
	        "\"%s\",\"refresh_expires_at\":\"%s\",\"role\":\"%s\",\"permissions\":%s}",
	        access, exp, refresh, rexp, c->role, c->permissions[0] ? c->permissions : "[]") < 0)
		text = NULL;
	return text;
}

static kw_outcome tokens_answer(const kw_access_claims *c, const char *access, const char *refresh,
                                int64_t refresh_exp)
{
	char *text = tokens_body(c, access, refresh, refresh_exp);
	return kw_out_body(200, NULL, text, text ? strlen(text) : 0);
}

/* "subject" and "role" strings of a login body; false = 400 written. */
static bool subject_ok(const char *s, size_t n)
{
	if (s == NULL || n == 0 || n > KW_SUBJECT_MAX || strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* --- login -------------------------------------------------------------- */

/* A login whose rows are in the group-commit writer's hands: it answers
 * the call on the writer's thread once they are durable. */
typedef struct login_job {
	kw_call *call;
	kw_access_claims c;
	char *access;
	char refresh[KW_REFRESH_TEXT_LEN + 1];
	unsigned char mac[KW_HMAC_LEN];
	int64_t sl_exp;
	char sid[37], tenant[37], subject[KW_SUBJECT_MAX + 1], role[KW_ROLE_MAX + 1], actor[256], minter[37];
	char *ctx;
	kw_family_new f;
	kw_family_stmt fs;
	kw_audit_event ev;
} login_job;

static void login_job_free(login_job *j)
{
	if (j->access) {
		OPENSSL_cleanse(j->access, strlen(j->access));
		free(j->access);
	}
	free(j->ctx);
	OPENSSL_cleanse(j, sizeof(*j));
	free(j);
}

static void login_job_release(void *hold)
{
	login_job_free(hold);
}

kw_outcome kw_api_issue_session(kw_call *call, const char *tenant_id, const char *subject,
                                const char *role_name, const char *method, const char *actor,
                                const char *minted_by, bool in_tx)
{
	kw_app *app = call->app;
	const kw_role *role = kw_roles_find(app->roles, role_name);
	login_job *j = calloc(1, sizeof(*j));
	kw_outcome o;
	uint32_t pepper_id = 0;
	int64_t abs_exp = 0;
	kw_err err = j == NULL ? KW_ERR_NOMEM : role ? KW_OK : KW_ERR_CONFIG;
	if (err == KW_OK) {
		j->call = call;
		snprintf(j->tenant, sizeof(j->tenant), "%s", tenant_id);
		snprintf(j->subject, sizeof(j->subject), "%s", subject);
		snprintf(j->role, sizeof(j->role), "%s", role_name);
		snprintf(j->actor, sizeof(j->actor), "%s", actor);
		snprintf(j->minter, sizeof(j->minter), "%s", minted_by ? minted_by : "");
		err = kw_random_ids(call->res->hsm, j->c.jti, j->sid); /* jti is redrawn below */
	}
	if (err == KW_OK)
		err = new_refresh(call, tenant_id, j->refresh, j->mac, &pepper_id);
	if (err == KW_OK)
		err = new_access(call, tenant_id, subject, role, j->sid, &j->c, &j->access);
	if (err == KW_OK && (j->ctx = ctx_json("subject", subject, "method", method)) == NULL)
		err = KW_ERR_NOMEM;
	if (err == KW_OK) {
		j->f = (kw_family_new){.id = j->sid,
		                       .tenant_id = j->tenant,
		                       .subject = j->subject,
		                       .role = j->role,
		                       .absolute_ttl_s = app->cfg->refresh_absolute_ttl_s,
		                       .sliding_ttl_s = app->cfg->refresh_sliding_ttl_s,
		                       .ip = call->req.client_ip,
		                       .user_agent = user_agent(call),
		                       .token_hmac = j->mac,
		                       .minted_by = j->minter[0] ? j->minter : NULL,
		                       .pepper_id = pepper_id};
		j->ev = kw_api_event(call, j->tenant, j->actor, "auth.login", j->sid, "ok", j->ctx);
	}
	if (in_tx) {
		/* The caller's transaction (it consumed a nonce) carries it all. */
		if (err == KW_OK)
			err = kw_family_create(call->res->db, &j->f, &abs_exp, &j->sl_exp);
		if (err == KW_OK)
			kw_api_audit_in_tx(call, j->tenant, j->actor, "auth.login", j->sid, j->ctx, &err);
		err = kw_api_finish_tx(call, err);
	} else if (err == KW_OK) {
		/* The session's rows and the audit row go through the group-commit
		 * writer: one transaction, shared with other logins; the answer
		 * waits until they are durable, and this worker moves on. */
		int64_t now = (int64_t)time(NULL);
		abs_exp = now + app->cfg->refresh_absolute_ttl_s;
		j->sl_exp = now + app->cfg->refresh_sliding_ttl_s < abs_exp
		                ? now + app->cfg->refresh_sliding_ttl_s
		                : abs_exp;
		kw_family_stmt_build(&j->f, abs_exp, j->sl_exp, &j->fs);
		char *body = tokens_body(&j->c, j->access, j->refresh, j->sl_exp);
		return kw_out_after_audit(200, body, body ? strlen(body) : 0, &j->ev, &j->fs.stmt, 1,
		                          login_job_release, j);
	}
	if (err == KW_ERR_CONFIG)
		o = kw_out_deny(400, "unknown_role", "no such role", tenant_id, actor, "auth.login");
	else if (err != KW_OK)
		o = kw_out_failure(err);
	else
		o = tokens_answer(&j->c, j->access, j->refresh, j->sl_exp);
	if (j)
		login_job_free(j);
	return o;
}

kw_outcome kw_api_auth_login(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	json_t *body = kw_api_body_object(call);
	json_t *sub = json_object_get(body, "subject"), *role = json_object_get(body, "role");
	if (body == NULL || !subject_ok(json_string_value(sub), json_string_length(sub)) ||
	    !subject_ok(json_string_value(role), json_string_length(role)) ||
	    json_string_length(role) > KW_ROLE_MAX) {
		json_decref(body);
		return kw_out_error(400, "invalid_request",
		                    "the body must be {\"subject\": 1-256 bytes, \"role\": a role name}");
	}
	kw_outcome o =
	    kw_roles_find(call->app->roles, json_string_value(role)) == NULL
	        ? kw_out_deny(400, "unknown_role", "no such role", p.tenant_id, p.actor, "auth.login")
	        : kw_api_issue_session(call, p.tenant_id, json_string_value(sub), json_string_value(role),
	                               "api_key", p.actor, p.key_id, false);
	json_decref(body);
	return o;
}

/* --- refresh ------------------------------------------------------------ */

/* The refresh token of a body {refresh_token}; NULL (and *body NULL) if
 * there is none. The returned string is owned by *body. */
static const char *body_refresh_token(kw_call *call, json_t **body)
{
	*body = kw_api_body_object(call);
	json_t *rt = json_object_get(*body, "refresh_token");
	if (*body == NULL || !json_is_string(rt) || json_string_length(rt) > 4096) {
		json_decref(*body);
		*body = NULL;
		return NULL;
	}
	return json_string_value(rt);
}

#define BAD_REFRESH_BODY kw_out_error(400, "invalid_request", "the body must be {\"refresh_token\": string}")

/* A refresh token presented in the body: the token (owned by body), the
 * tenant it names and whether it parses at all. */
typedef struct presented {
	json_t *body;
	const char *token;
	char tenant[37];
	kw_err parsed;
} presented;

/* False = the body carries no refresh token (a 400). */
static bool present(kw_call *call, presented *p)
{
	memset(p, 0, sizeof(*p));
	p->token = body_refresh_token(call, &p->body);
	if (p->token == NULL)
		return false;
	p->parsed = kw_refresh_parse(p->token, strlen(p->token), p->tenant);
	return true;
}

static void wipe_body_token(json_t *body)
{
	json_t *rt = json_object_get(body, "refresh_token");
	if (json_is_string(rt))
		OPENSSL_cleanse((void *)json_string_value(rt), json_string_length(rt));
	json_decref(body);
}

/* Finds and locks the row of a presented refresh token, trying every
 * pepper version from the active one down. Opens the tenant's
 * transaction; on any error it is rolled back. */
static kw_err lock_presented(kw_call *call, const char *tenant, const char *token, bool lock,
                             kw_refresh_row *row)
{
	kw_err err = kw_db_begin(call->res->db, tenant, NULL);
	if (err != KW_OK)
		return err;
	err = KW_ERR_NOT_FOUND;
	for (uint32_t v = active_pepper(call); v >= 1 && err == KW_ERR_NOT_FOUND; v--) {
		unsigned char mac[KW_HMAC_LEN];
		err = refresh_hmac(call, v, token, mac);
		if (err == KW_ERR_NOT_FOUND)
			continue; /* a retired pepper */
		if (err == KW_OK)
			err = lock ? kw_refresh_lock(call->res->db, mac, row)
			           : kw_refresh_find(call->res->db, mac, row);
		OPENSSL_cleanse(mac, sizeof(mac));
	}
	if (err != KW_OK)
		kw_db_rollback(call->res->db);
	return err;
}

/* "user:<subject>", whole: a subject is at most KW_SUBJECT_MAX bytes of
 * valid UTF-8 (it came from JSON), so it is never cut inside a character. */
#define ACTOR_MAX (5 + KW_SUBJECT_MAX + 1)
static void actor_of(const char *subject, char *out, size_t cap)
{
	snprintf(out, cap, "user:%s", subject);
}

/* The credential is the body's refresh token. */
kw_outcome kw_api_auth_refresh(kw_call *call, const kw_caller *who)
{
	kw_app *app = call->app;
	presented pt;
	if (!present(call, &pt))
		return BAD_REFRESH_BODY;
	if (pt.parsed != KW_OK) {
		wipe_body_token(pt.body);
		return kw_out_deny(401, "invalid_refresh_token", "the refresh token is not valid", NULL, NULL,
		                   "auth.refresh");
	}
	kw_outcome o;
	/* The child's secrets are made before any row is locked. */
	char child[KW_REFRESH_TEXT_LEN + 1] = "";
	unsigned char child_mac[KW_HMAC_LEN];
	uint32_t pepper_id = 0;
	kw_refresh_row row;
	kw_err err = new_refresh(call, pt.tenant, child, child_mac, &pepper_id);
	if (err == KW_OK)
		err = lock_presented(call, pt.tenant, pt.token, true, &row);
	wipe_body_token(pt.body);
	if (err == KW_ERR_NOT_FOUND || err == KW_ERR_INVALID) {
		o = kw_out_deny(401, "invalid_refresh_token", "the refresh token is not valid", NULL, NULL,
		                "auth.refresh");
		goto done;
	}
	if (err != KW_OK) {
		o = kw_out_failure(err);
		goto done;
	}
	char actor[ACTOR_MAX];
	actor_of(row.subject, actor, sizeof(actor));
	const char *code = NULL, *msg = NULL;
	if (row.family_revoked) {
		bool reuse = strcmp(row.revoke_reason, "reuse") == 0;
		code = reuse ? "token_family_compromised" : "refresh_token_revoked";
		msg = reuse ? "this refresh token's session was revoked after a reuse"
		            : "the session has been revoked";
	} else if (row.now >= row.absolute_exp || (!row.used && row.now >= row.sliding_exp)) {
		/* A used token that comes back is a reuse even past its own
		 * sliding expiry: only the family's end makes it harmless. */
		code = "refresh_token_expired";
		msg = "the refresh token has expired";
	}
	if (code != NULL) {
		kw_db_rollback(call->res->db);
		o = kw_out_deny(401, code, msg, pt.tenant, actor, "auth.refresh");
		goto done;
	}
	if (row.used) {
		bool grace = app->cfg->refresh_grace_s > 0 &&
		             row.used_ago_s <= (double)app->cfg->refresh_grace_s && !row.has_used_child;
		if (!grace) {
			/* A rotated token came back: someone holds a copy. */
			bool newly = false;
			int64_t rexp = 0;
			err = kw_family_revoke(call->res->db, row.family_id, "reuse", app->access_ttl_max_s,
			                       &newly, &rexp);
			char *ctx = ctx_json("family", row.family_id, "subject", row.subject);
			kw_api_audit_status_in_tx(call, pt.tenant, actor, "auth.refresh.reuse", row.family_id,
			                          "401 token_family_compromised", ctx, &err);
			free(ctx);
			err = kw_api_finish_tx(call, err);
			if (err != KW_OK) {
				o = kw_out_failure(err);
				goto done;
			}
			kw_revcache_add(app->revs, NULL, row.family_id, rexp);
			kw_warn("refresh token reuse: family %s revoked (request %s)", row.family_id,
			        call->req.request_id);
			o = kw_out_error(401, "token_family_compromised",
			                 "this refresh token was already used; the session has been revoked");
			o.failed_auth = true; /* its audit row is committed above */
			goto done;
		}
	}
	/* Per subject: 5 a minute by default, counted in the database, so the
	 * limit holds across every instance (this request makes round trips
	 * anyway). */
	{
		int recent = 0, oldest = 0;
		err = kw_refresh_recent(call->res->db, pt.tenant, row.subject, &recent, &oldest);
		if (err != KW_OK) {
			kw_db_rollback(call->res->db);
			o = kw_out_failure(err);
			goto done;
		}
		if (recent >= app->cfg->refresh_per_minute) {
			kw_db_rollback(call->res->db);
			char v[32];
			snprintf(v, sizeof(v), "%d", oldest >= 60 ? 1 : 60 - oldest);
			o = kw_out_header(kw_out_deny(429, "rate_limited",
			                              "too many refreshes for this subject; retry later",
			                              pt.tenant, actor, "auth.refresh"),
			                  "Retry-After", v);
			goto done;
		}
	}
	const kw_role *role = kw_roles_find(app->roles, row.role);
	if (role == NULL) {
		kw_db_rollback(call->res->db);
		o = kw_out_deny(401, "invalid_refresh_token", "the session's role no longer exists",
		                pt.tenant, actor, "auth.refresh");
		goto done;
	}
	int64_t sl_exp = 0;
	kw_access_claims c = {0};
	char *access = NULL;
	err = kw_refresh_rotate(call->res->db, pt.tenant, &row, child_mac, pepper_id,
	                        app->cfg->refresh_sliding_ttl_s, &sl_exp);
	if (err == KW_OK)
		err = new_access(call, pt.tenant, row.subject, role, row.family_id, &c, &access);
	char *ctx = ctx_json("family", row.family_id, row.used ? "grace" : NULL, "reuse within grace");
	kw_api_audit_in_tx(call, pt.tenant, actor, "auth.refresh", row.family_id, ctx, &err);
	free(ctx);
	err = kw_api_finish_tx(call, err);
	o = err != KW_OK ? kw_out_failure(err) : tokens_answer(&c, access, child, sl_exp);
	if (access)
		OPENSSL_cleanse(access, strlen(access));
	free(access);
done:
	OPENSSL_cleanse(child, sizeof(child));
	OPENSSL_cleanse(child_mac, sizeof(child_mac));
	return o;
}

/* --- logout, revoke, revoke-all ---------------------------------------- */

#define OK_BODY "{\"status\":\"ok\"}"

/* The end of a revocation of family whose work so far ended in err: its
 * audit row in the same transaction, the commit, then the family joins
 * this instance's revocation list (rexp > 0: until then). */
static kw_err end_revocation(kw_call *call, const char *tenant, const char *actor, const char *action,
                             const char *family, int64_t rexp, kw_err err)
{
	char *ctx = ctx_json("family", family, NULL, NULL);
	kw_api_audit_in_tx(call, tenant, actor, action, family, ctx, &err);
	free(ctx);
	err = kw_api_finish_tx(call, err);
	if (err == KW_OK && rexp > 0)
		kw_revcache_add(call->app->revs, NULL, family, rexp);
	return err;
}

kw_outcome kw_api_auth_logout(kw_call *call, const kw_caller *who)
{
	const kw_access_claims c = who->claims;
	kw_app *app = call->app;
	char actor[ACTOR_MAX];
	actor_of(c.sub, actor, sizeof(actor));
	bool newly = false;
	int64_t rexp = 0;
	kw_err err = kw_db_begin(call->res->db, c.tid, NULL);
	if (err != KW_OK)
		return kw_out_failure(err);
	err = kw_jti_revoke(call->res->db, c.tid, c.sub, c.jti, c.exp + app->cfg->jwt_leeway_s, "logout");
	if (err == KW_OK)
		err = kw_family_revoke(call->res->db, c.sid, "logout", app->access_ttl_max_s, &newly, &rexp);
	err = end_revocation(call, c.tid, actor, "auth.logout", c.sid, rexp, err);
	if (err != KW_OK)
		return kw_out_failure(err);
	kw_revcache_add(app->revs, c.jti, NULL, c.exp + app->cfg->jwt_leeway_s);
	return kw_out_literal(200, OK_BODY);
}

/* Possession of the refresh token is the credential (RFC 7009). */
kw_outcome kw_api_auth_revoke(kw_call *call, const kw_caller *who)
{
	kw_app *app = call->app;
	presented pt;
	if (!present(call, &pt))
		return BAD_REFRESH_BODY;
	kw_err err = pt.parsed;
	/* RFC 7009: an unknown token is not an error. */
	kw_refresh_row row;
	if (err == KW_OK)
		err = lock_presented(call, pt.tenant, pt.token, false, &row);
	wipe_body_token(pt.body);
	if (err == KW_ERR_NOT_FOUND || err == KW_ERR_INVALID)
		return kw_out_refused(kw_out_literal(200, OK_BODY), 200, "unknown_token", NULL, NULL,
		                      "auth.revoke");
	if (err != KW_OK)
		return kw_out_failure(err);
	char actor[ACTOR_MAX];
	actor_of(row.subject, actor, sizeof(actor));
	bool newly = false;
	int64_t rexp = 0;
	err = kw_family_revoke(call->res->db, row.family_id, "revoked", app->access_ttl_max_s, &newly, &rexp);
	err = end_revocation(call, pt.tenant, actor, "auth.revoke", row.family_id, rexp, err);
	return err != KW_OK ? kw_out_failure(err) : kw_out_literal(200, OK_BODY);
}

kw_outcome kw_api_auth_revoke_all(kw_call *call, const kw_caller *who)
{
	const kw_access_claims c = who->claims;
	kw_app *app = call->app;
	char actor[ACTOR_MAX];
	actor_of(c.sub, actor, sizeof(actor));
	char(*sids)[37] = NULL;
	size_t n = 0;
	int64_t rexp = 0;
	kw_err err = kw_db_begin(call->res->db, c.tid, NULL);
	if (err == KW_OK) {
		err = kw_family_revoke_subject(call->res->db, c.tid, c.sub, "revoke_all",
		                               app->access_ttl_max_s, &sids, &n, &rexp);
		char count[24];
		snprintf(count, sizeof(count), "%zu", n);
		char *ctx = ctx_json("subject", c.sub, "families", count);
		kw_api_audit_in_tx(call, c.tid, actor, "auth.revoke_all", NULL, ctx, &err);
		free(ctx);
		err = kw_api_finish_tx(call, err);
	}
	if (err != KW_OK) {
		free(sids);
		return kw_out_failure(err);
	}
	for (size_t i = 0; i < n; i++)
		kw_revcache_add(app->revs, NULL, sids[i], rexp);
	free(sids);
	return kw_out_json(200, json_pack("{s:s, s:I}", "status", "ok", "revoked", (json_int_t)n));
}

/* An administrator ends every session of a subject of its tenant (a
 * compromised account, a departed user), audited with the count. */
kw_outcome kw_api_auth_sessions_revoke(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	kw_app *app = call->app;
	json_t *body = kw_api_body_object(call);
	json_t *sub = json_object_get(body, "subject");
	if (body == NULL || !subject_ok(json_string_value(sub), json_string_length(sub))) {
		json_decref(body);
		return kw_out_error(400, "invalid_request", "the body must be {\"subject\": 1-256 bytes}");
	}
	char(*sids)[37] = NULL;
	size_t n = 0;
	int64_t rexp = 0;
	kw_err err = kw_db_begin(call->res->db, p.tenant_id, NULL);
	if (err == KW_OK) {
		err = kw_family_revoke_subject(call->res->db, p.tenant_id, json_string_value(sub), "admin",
		                               app->access_ttl_max_s, &sids, &n, &rexp);
		char count[24];
		snprintf(count, sizeof(count), "%zu", n);
		char *ctx = ctx_json("subject", json_string_value(sub), "families", count);
		kw_api_audit_in_tx(call, p.tenant_id, p.actor, "auth.sessions.revoke", NULL, ctx, &err);
		free(ctx);
		err = kw_api_finish_tx(call, err);
	}
	json_decref(body);
	for (size_t i = 0; err == KW_OK && i < n; i++)
		kw_revcache_add(app->revs, NULL, sids[i], rexp);
	free(sids);
	if (err != KW_OK)
		return kw_out_failure(err);
	return kw_out_json(200, json_pack("{s:s, s:I}", "status", "ok", "revoked", (json_int_t)n));
}

/* --- sessions, whoami, introspection, JWKS ------------------------------ */

typedef struct session_list {
	const char *subject;
	kw_session_row *rows;
	size_t n;
} session_list;

static kw_err list_sessions(kw_db *db, void *arg)
{
	session_list *l = arg;
	return kw_sessions_list(db, l->subject, &l->rows, &l->n);
}

kw_outcome kw_api_auth_sessions(kw_call *call, const kw_caller *who)
{
	const kw_access_claims c = who->claims;
	session_list l = {.subject = c.sub};
	kw_err err = kw_api_in_tx(call, c.tid, list_sessions, &l);
	if (err != KW_OK)
		return kw_out_failure(err);
	kw_session_row *rows = l.rows;
	size_t n = l.n;
	json_t *items = json_array();
	for (size_t i = 0; i < n; i++) {
		kw_session_row *r = &rows[i];
		json_t *o =
		    json_pack("{s:s, s:s, s:s, s:s}", "id", r->id, "created_at", r->created_at,
		              "last_used_at", r->last_used_at, "absolute_expires_at", r->absolute_expires_at);
		json_object_set_new(o, "ip", r->ip[0] ? json_string(r->ip) : json_null());
		json_object_set_new(o, "user_agent",
		                    r->user_agent[0] ? json_string(r->user_agent) : json_null());
		json_object_set_new(o, "current", json_boolean(strcmp(r->id, c.sid) == 0));
		json_array_append_new(items, o);
	}
	free(rows);
	return kw_out_json(200, json_pack("{s:o}", "items", items));
}

static json_t *claims_json(const kw_access_claims *c)
{
	json_t *perms = json_loads(c->permissions, 0, NULL);
	return json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:I, s:I, s:I}", "sub", c->sub, "tid", c->tid,
	                 "role", c->role, "permissions", perms ? perms : json_array(), "jti", c->jti, "sid",
	                 c->sid, "iat", (json_int_t)c->iat, "nbf", (json_int_t)c->nbf, "exp",
	                 (json_int_t)c->exp);
}

/* Runs on the I/O thread (a refused token is audited on a worker). */
kw_outcome kw_api_auth_whoami(kw_call *call, const kw_caller *who)
{
	(void)call;
	return kw_out_json(200, claims_json(&who->claims));
}

#define INACTIVE kw_out_literal(200, "{\"active\":false}")

static kw_outcome introspect_access(kw_call *call, const kw_principal *p, const char *token)
{
	kw_app *app = call->app;
	json_t *payload = NULL;
	kw_access_claims c;
	memset(&c, 0, sizeof(c));
	kw_err err = kw_jwt_keyset_verify(app->jwks, token, strlen(token), &payload);
	if (err == KW_OK)
		err = kw_access_claims_read(payload, app->cfg->jwt_issuer, app->cfg->jwt_audience, &c);
	json_decref(payload);
	int64_t now = (int64_t)time(NULL);
	if (err != KW_OK || strcmp(c.tid, p->tenant_id) != 0 || c.exp + app->cfg->jwt_leeway_s <= now ||
	    c.nbf - app->cfg->jwt_leeway_s > now)
		return INACTIVE;
	err = kw_revcache_check(app->revs, c.jti, c.sid, now);
	if (err == KW_ERR_VERIFY)
		return INACTIVE;
	if (err != KW_OK)
		return kw_out_error(503, "revocation_unavailable",
		                    "token revocation cannot be checked right now; retry shortly");
	json_t *o = claims_json(&c);
	json_object_set_new(o, "active", json_true());
	json_object_set_new(o, "token_type", json_string("access_token"));
	json_object_set_new(o, "iss", json_string(app->cfg->jwt_issuer));
	json_object_set_new(o, "username", json_string(c.sub));
	return kw_out_json(200, o);
}

static kw_outcome introspect_refresh(kw_call *call, const kw_principal *p, const char *token)
{
	char tenant[37];
	kw_refresh_row row;
	if (kw_refresh_parse(token, strlen(token), tenant) != KW_OK || strcmp(tenant, p->tenant_id) != 0)
		return INACTIVE;
	kw_err err = lock_presented(call, tenant, token, false, &row);
	if (err == KW_OK)
		err = kw_db_commit(call->res->db);
	if (err == KW_ERR_NOT_FOUND || err == KW_ERR_INVALID)
		return INACTIVE;
	if (err != KW_OK)
		return kw_out_failure(err);
	if (row.used || row.family_revoked || row.now >= row.sliding_exp || row.now >= row.absolute_exp)
		return INACTIVE;
	int64_t exp = row.sliding_exp < row.absolute_exp ? row.sliding_exp : row.absolute_exp;
	return kw_out_json(200, json_pack("{s:b, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "active", 1,
	                                  "token_type", "refresh_token", "sub", row.subject, "tid", tenant,
	                                  "sid", row.family_id, "role", row.role, "iat",
	                                  (json_int_t)row.issued_at, "exp", (json_int_t)exp));
}

kw_outcome kw_api_auth_introspect(kw_call *call, const kw_caller *who)
{
	const kw_principal p = who->key;
	json_t *body = kw_api_body_object(call);
	json_t *t = json_object_get(body, "token");
	if (body == NULL || !json_is_string(t) || json_string_length(t) == 0 ||
	    json_string_length(t) > KW_JWT_MAX_LEN || strlen(json_string_value(t)) != json_string_length(t)) {
		json_decref(body);
		return kw_out_error(400, "invalid_request", "the body must be {\"token\": string}");
	}
	const char *token = json_string_value(t);
	kw_outcome o = strchr(token, '.') != NULL ? introspect_access(call, &p, token)
	                                          : introspect_refresh(call, &p, token);
	OPENSSL_cleanse((void *)token, strlen(token));
	json_decref(body);
	return o;
}

kw_outcome kw_api_jwks(kw_call *call, const kw_caller *who)
{
	(void)who;
	char *jwks = kw_jwt_keyset_jwks(call->app->jwks);
	if (jwks == NULL)
		return kw_out_error(500, "internal", "out of memory");
	char cc[64];
	snprintf(cc, sizeof(cc), "public, max-age=%lld", (long long)call->app->cfg->jwks_max_age_s);
	return kw_out_header(kw_out_body(200, NULL, jwks, strlen(jwks)), "Cache-Control", cc);
}
