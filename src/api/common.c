/* common.c — small pieces every route group uses: resources, transactions
 * with their audit row, JSON bodies and answers. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "keyward/api/guard.h"
#include "keyward/app/app.h"

kw_audit_event kw_api_event(const kw_call *call, const char *tenant_id, const char *actor, const char *action,
                            const char *target, const char *status, const char *context)
{
	return (kw_audit_event){.tenant_id = tenant_id,
	                        .actor = actor,
	                        .action = action,
	                        .target = target,
	                        .status = status,
	                        .ip = call->req.client_ip,
	                        .user_agent = kw_request_header(&call->req, "User-Agent", NULL),
	                        .request_id = call->req.request_id,
	                        .context = context};
}

void kw_api_audit_in_tx(kw_call *call, const char *tenant_id, const char *actor, const char *action,
                        const char *target, const char *context, kw_err *err)
{
	kw_api_audit_status_in_tx(call, tenant_id, actor, action, target, "ok", context, err);
}

void kw_api_audit_status_in_tx(kw_call *call, const char *tenant_id, const char *actor, const char *action,
                               const char *target, const char *status, const char *context, kw_err *err)
{
	if (*err != KW_OK)
		return;
	kw_audit_event ev = kw_api_event(call, tenant_id, actor, action, target, status, context);
	if (call->res->audit == NULL)
		*err = KW_ERR_DB_UNAVAILABLE;
	else
		*err = kw_audit_append(call->res->audit, call->res->hsm, call->res->db, &ev);
}

kw_err kw_api_finish_tx(kw_call *call, kw_err err)
{
	return kw_audit_end_tx(call->res->audit, call->res->db, err);
}

kw_err kw_api_in_tx(kw_call *call, const char *tenant_id, kw_err (*work)(kw_db *db, void *arg), void *arg)
{
	kw_err err = kw_db_begin(call->res->db, tenant_id, NULL);
	if (err == KW_OK)
		err = kw_api_finish_tx(call, work(call->res->db, arg));
	return err;
}

json_t *kw_api_body_object(kw_call *call)
{
	if (call->req.body_len == 0)
		return json_object();
	json_t *body =
	    json_loadb((const char *)call->req.body, call->req.body_len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(body)) {
		json_decref(body);
		return NULL;
	}
	return body;
}

const char *kw_api_name_scopes(json_t *body, char name[129], uint32_t *scopes)
{
	json_t *jn = json_object_get(body, "name"), *js = json_object_get(body, "scopes");
	const char *n = json_string_value(jn);
	size_t nlen = json_string_length(jn);
	if (n == NULL || nlen == 0 || nlen > 128 || strlen(n) != nlen)
		return "name must be a string of 1 to 128 bytes";
	for (size_t i = 0; i < nlen; i++)
		if ((unsigned char)n[i] < 0x20 || n[i] == 0x7f)
			return "name must not contain control characters";
	if (!json_is_array(js) || json_array_size(js) == 0 || json_array_size(js) > 16)
		return "scopes must be an array of 1 to 16 known scope names";
	uint32_t bits = 0;
	for (size_t i = 0; i < json_array_size(js); i++) {
		json_t *v = json_array_get(js, i);
		uint32_t b = json_is_string(v) ? kw_scope_from_name(json_string_value(v)) : 0;
		if (b == 0)
			return "unknown scope; known: admin, auth:issue, transit:encrypt, transit:decrypt, "
			       "secrets:read, "
			       "secrets:write";
		bits |= b;
	}
	memcpy(name, n, nlen + 1);
	*scopes = bits;
	return NULL;
}
