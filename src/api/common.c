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
