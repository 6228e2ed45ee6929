/* outcome.c — the values handlers return (kw_outcome, handlers.h).
 *
 * Building an outcome does nothing to the call: no reply, no audit row, no
 * budget. The pipeline (kw_api_settle in pipeline.c) carries it out. An
 * outcome that cannot be built (out of memory) becomes a 500. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"

static kw_outcome oom(void)
{
	return kw_out_error(500, "internal", "out of memory");
}

kw_outcome kw_out_body(int status, const char *content_type, char *body, size_t len)
{
	if (body == NULL)
		return oom();
	return (kw_outcome){
	    .kind = KW_OUT_ANSWER, .status = status, .body = body, .len = len, .content_type = content_type};
}

kw_outcome kw_out_json(int status, json_t *o)
{
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return kw_out_body(status, NULL, text, text ? strlen(text) : 0);
}

kw_outcome kw_out_literal(int status, const char *text)
{
	char *copy = strdup(text);
	return kw_out_body(status, NULL, copy, strlen(text));
}

kw_outcome kw_out_error(int status, const char *code, const char *message)
{
	return (kw_outcome){.kind = KW_OUT_ERROR, .status = status, .code = code, .message = message};
}

kw_outcome kw_out_defer(void)
{
	return (kw_outcome){.kind = KW_OUT_DEFER};
}

kw_outcome kw_out_failure(kw_err err)
{
	if (err == KW_ERR_DB_UNAVAILABLE)
		return kw_out_error(503, "db_unavailable", "the database is unavailable");
	if (err == KW_ERR_HSM_UNAVAILABLE)
		return kw_out_error(503, "hsm_unavailable", "the key store is unavailable");
	return kw_out_error(500, "internal", "internal error");
}

kw_outcome kw_out_refused(kw_outcome o, int status, const char *code, const char *tenant_id,
                          const char *actor, const char *action)
{
	o.refusal.action = action;
	o.refusal.status = status;
	o.refusal.code = code;
	snprintf(o.refusal.tenant_id, sizeof(o.refusal.tenant_id), "%s", tenant_id ? tenant_id : "");
	snprintf(o.refusal.actor, sizeof(o.refusal.actor), "%s", actor ? actor : "");
	return o;
}

kw_outcome kw_out_deny(int status, const char *code, const char *message, const char *tenant_id,
                       const char *actor, const char *action)
{
	kw_outcome o =
	    kw_out_refused(kw_out_error(status, code, message), status, code, tenant_id, actor, action);
	o.failed_auth = status == 401;
	return o;
}

kw_outcome kw_out_header(kw_outcome o, const char *name, const char *value)
{
	o.header = name;
	snprintf(o.header_value, sizeof(o.header_value), "%s", value);
	return o;
}

kw_outcome kw_out_after_audit(int status, char *body, size_t len, const kw_audit_event *ev,
                              const kw_db_stmt *pre, size_t npre, void (*release)(void *hold), void *hold)
{
	if (body == NULL) {
		if (release != NULL)
			release(hold);
		return oom();
	}
	return (kw_outcome){.kind = KW_OUT_AFTER_AUDIT,
	                    .status = status,
	                    .body = body,
	                    .len = len,
	                    .ev = *ev,
	                    .pre = pre,
	                    .npre = npre,
	                    .release = release,
	                    .hold = hold};
}
