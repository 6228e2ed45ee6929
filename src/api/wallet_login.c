/* wallet_login.c — sign-in with an Ethereum wallet (EIP-191 personal_sign).
 *
 * POST /api/v1/auth/wallet/nonce {tenant, address} stores a single-use
 * nonce (5 minutes) and answers the exact message to sign. POST
 * /api/v1/auth/wallet {tenant, address, nonce, signature} consumes the
 * nonce — in the same transaction whether or not the signature is good —
 * rebuilds the message from the stored row, recovers the signer and, when
 * it is the address, starts a session for subject = the checksummed
 * address with role auth.wallet_role. Every refusal is a 401 with its own
 * code and an audit row; the nonce and the signature are never logged. */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "keyward/api/guard.h"
#include "keyward/app/app.h"
#include "keyward/auth/wallet.h"
#include "keyward/core/log.h"
#include "keyward/core/text.h"
#include "keyward/db/sessions.h"
#include "keyward/http/ratelimit.h"

#define KW_NONCE_HEX         32
#define KW_NONCES_PER_MINUTE 10 /* per tenant and address, per instance */

/* The text the wallet signs; rebuilt byte for byte at verification. */
static int wallet_message(char *out, size_t cap, const char *address, const char *tenant, const char *nonce,
                          int64_t expires_at)
{
	char exp[32];
	kw_time_rfc3339(expires_at, exp);
	return snprintf(out, cap,
	                "Sign in to keyward\n\nAddress: %s\nTenant: %s\nNonce: %s\nExpires: %s\n\n"
	                "Signing this message does not move funds or grant access to your wallet.",
	                address, tenant, nonce, exp);
}

static kw_outcome wallet_refuse(int status, const char *code, const char *msg, const char *tenant,
                                const char *address)
{
	char actor[64];
	snprintf(actor, sizeof(actor), "wallet:%.42s", address ? address : "-");
	return kw_out_deny(status, code, msg, tenant, address ? actor : NULL, "auth.wallet");
}

/* tenant (a UUID, lower-cased into out) and address of a body; false =
 * *refusal says why not. */
static bool read_tenant_address(json_t *body, char tenant[37], char address[KW_WALLET_ADDR_TEXT + 1],
                                kw_outcome *refusal)
{
	json_t *t = json_object_get(body, "tenant"), *a = json_object_get(body, "address");
	const char *ts = json_string_value(t);
	if (body == NULL || ts == NULL || !json_is_string(a) || !kw_is_uuid(ts)) {
		*refusal =
		    kw_out_error(400, "invalid_request",
		                 "the body must carry \"tenant\" (a tenant id) and \"address\" (a string)");
		return false;
	}
	for (size_t i = 0; i <= 36; i++)
		tenant[i] = (char)tolower((unsigned char)ts[i]);
	unsigned char raw[KW_WALLET_ADDR_LEN];
	kw_err err = kw_wallet_address_parse(json_string_value(a), json_string_length(a), raw);
	if (err == KW_ERR_VERIFY) {
		*refusal = wallet_refuse(401, "address_checksum_mismatch",
		                         "the address's mixed-case EIP-55 checksum is wrong", tenant, NULL);
		return false;
	}
	if (err != KW_OK) {
		*refusal = wallet_refuse(401, "invalid_address",
		                         "the address must be 0x followed by 40 hex digits", tenant, NULL);
		return false;
	}
	kw_wallet_address_format(raw, address);
	return true;
}

kw_outcome kw_api_wallet_nonce(kw_call *call, const kw_caller *who)
{
	(void)who; /* public: the pipeline spent the address's budget */
	json_t *body = kw_api_body_object(call);
	char tenant[37], address[KW_WALLET_ADDR_TEXT + 1];
	kw_outcome refusal;
	bool ok = read_tenant_address(body, tenant, address, &refusal);
	json_decref(body);
	if (!ok)
		return refusal;
	/* A new nonce replaces the outstanding one: without a budget per
	 * address, anyone could keep a wallet from ever signing in. */
	char key[128];
	snprintf(key, sizeof(key), "nonce:%s:%s", tenant, address);
	kw_rl_result rl;
	kw_ratelimit_take(call->app->rl, key, KW_NONCES_PER_MINUTE, kw_ratelimit_now(), &rl);
	if (!rl.allowed) {
		char ra[16];
		snprintf(ra, sizeof(ra), "%d", rl.retry_after);
		return kw_out_header(wallet_refuse(429, "rate_limited",
		                                   "too many nonces for this address; retry later", tenant,
		                                   address),
		                     "Retry-After", ra);
	}
	unsigned char rnd[16];
	char nonce[KW_NONCE_HEX + 1];
	kw_err err = kw_hsm_random(call->res->hsm, rnd, sizeof(rnd));
	for (size_t i = 0; err == KW_OK && i < sizeof(rnd); i++)
		snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);
	bool exists = false;
	int64_t expires_at = 0;
	if (err == KW_OK)
		err = kw_db_begin(call->res->db, tenant, NULL);
	if (err == KW_OK) {
		err = kw_tenant_exists(call->res->db, tenant, &exists);
		if (err == KW_OK && !exists)
			err = KW_ERR_NOT_FOUND;
		if (err == KW_OK)
			err = kw_nonce_put(call->res->db, tenant, address, nonce,
			                   call->app->cfg->wallet_nonce_ttl_s, &expires_at);
		char actor[64];
		snprintf(actor, sizeof(actor), "wallet:%s", address);
		kw_api_audit_in_tx(call, tenant, actor, "auth.wallet.nonce", address, NULL, &err);
		err = kw_api_finish_tx(call, err);
	}
	if (err == KW_ERR_NOT_FOUND)
		return wallet_refuse(404, "tenant_not_found", "no such tenant", NULL, address);
	if (err != KW_OK)
		return kw_out_failure(err);
	char msg[512], exp[32];
	wallet_message(msg, sizeof(msg), address, tenant, nonce, expires_at);
	kw_time_rfc3339(expires_at, exp);
	return kw_out_json(200, json_pack("{s:s, s:s, s:s, s:s}", "nonce", nonce, "message", msg,
	                                  "expires_at", exp, "address", address));
}

static bool nonce_shape_ok(const char *s, size_t n)
{
	if (s == NULL || n != KW_NONCE_HEX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	return true;
}

kw_outcome kw_api_wallet_login(kw_call *call, const kw_caller *who)
{
	(void)who; /* the credential is the body's signature */
	kw_app *app = call->app;
	json_t *body = kw_api_body_object(call);
	char tenant[37], address[KW_WALLET_ADDR_TEXT + 1];
	kw_outcome refusal;
	if (!read_tenant_address(body, tenant, address, &refusal)) {
		json_decref(body);
		return refusal;
	}
	json_t *n = json_object_get(body, "nonce"), *s = json_object_get(body, "signature");
	if (!json_is_string(n) || !json_is_string(s)) {
		json_decref(body);
		return kw_out_error(400, "invalid_request",
		                    "the body must carry \"nonce\" and \"signature\" (strings)");
	}
	unsigned char sig[KW_WALLET_SIG_LEN];
	if (kw_wallet_signature_parse(json_string_value(s), json_string_length(s), sig) != KW_OK) {
		json_decref(body);
		return wallet_refuse(
		    401, "invalid_signature",
		    "the signature must be 65 bytes of hex (r, s, v with v 27/28 or 0/1, low s)", tenant,
		    address);
	}
	char nonce[KW_NONCE_HEX + 1];
	bool nonce_ok = nonce_shape_ok(json_string_value(n), json_string_length(n));
	if (nonce_ok)
		memcpy(nonce, json_string_value(n), KW_NONCE_HEX + 1);
	json_decref(body);
	if (!nonce_ok)
		return wallet_refuse(401, "nonce_invalid", "no such nonce for this address", tenant, address);

	char actor[64];
	snprintf(actor, sizeof(actor), "wallet:%s", address);
	kw_nonce_state st = KW_NONCE_UNKNOWN;
	int64_t expires_at = 0;
	kw_err err = kw_db_begin(call->res->db, tenant, NULL);
	if (err != KW_OK)
		return kw_out_failure(err);
	err = kw_nonce_take(call->res->db, tenant, address, nonce, &st, &expires_at);
	const char *code = NULL, *msg = NULL;
	if (err == KW_OK && st == KW_NONCE_UNKNOWN) {
		code = "nonce_invalid";
		msg = "no such nonce for this address";
	} else if (err == KW_OK && st == KW_NONCE_REUSED) {
		code = "nonce_reused";
		msg = "this nonce has already been used";
	} else if (err == KW_OK && st == KW_NONCE_EXPIRED) {
		code = "nonce_expired";
		msg = "this nonce has expired; ask for a new one";
	} else if (err == KW_OK) {
		char text[512];
		unsigned char signer[KW_WALLET_ADDR_LEN], want[KW_WALLET_ADDR_LEN];
		int len = wallet_message(text, sizeof(text), address, tenant, nonce, expires_at);
		kw_err verr = kw_wallet_recover(text, (size_t)len, sig, signer);
		if (verr != KW_OK || kw_wallet_address_parse(address, strlen(address), want) != KW_OK ||
		    memcmp(signer, want, sizeof(want)) != 0) {
			code = "signature_mismatch";
			msg = "the signature is not this address's signature of the message";
		}
	}
	if (err != KW_OK) {
		(void)kw_api_finish_tx(call, err);
		return kw_out_failure(err);
	}
	if (code != NULL) {
		/* The consumption (if any) commits with the refusal's audit row. */
		char status[64];
		snprintf(status, sizeof(status), "401 %s", code);
		kw_api_audit_status_in_tx(call, tenant, actor, "auth.wallet", address, status, NULL, &err);
		err = kw_api_finish_tx(call, err);
		if (err != KW_OK)
			return kw_out_failure(err);
		kw_outcome o = kw_out_error(401, code, msg);
		o.failed_auth = true; /* its audit row is committed above */
		return o;
	}
	return kw_api_issue_session(call, tenant, address, app->cfg->wallet_role, "wallet", actor, NULL,
	                            true);
}
