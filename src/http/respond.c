/* respond.c — building responses, matching routes, request ids.
 *
 * Pure functions on kw_call: nothing here touches libevent, so handlers on
 * workers and on I/O threads use the same helpers. Error bodies carry only
 * a code, a fixed human message and the request id: never input echoed
 * back, never a secret. */
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keyward/http/http.h"

bool kw_request_id_valid(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++) {
		char c = s[n];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		          c == '.' || c == '_' || c == '-';
		if (!ok || n >= 128)
			return false;
	}
	return n >= 1;
}

/* Request ids need to be unique, not secret: 8 random bytes per thread,
 * then a per-thread counter, so the hot path makes no RNG call. */
void kw_request_id_new(char *out)
{
	static const char hex[] = "0123456789abcdef";
	static _Thread_local unsigned char seed[8];
	static _Thread_local uint64_t counter;
	if (counter == 0 && RAND_bytes(seed, sizeof(seed)) != 1)
		kw_misuse("RAND_bytes failed");
	counter++;
	unsigned char b[16];
	memcpy(b, seed, 8);
	for (int i = 0; i < 8; i++)
		b[8 + i] = (unsigned char)(counter >> (56 - 8 * i));
	for (size_t i = 0; i < sizeof(b); i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[32] = '\0';
}

int kw_request_query(const kw_request *req, const char *name, char *buf, size_t cap)
{
	struct evkeyvalq q;
	q.tqh_first = NULL;
	q.tqh_last = &q.tqh_first;
	if (req->query == NULL)
		return 0;
	/* libevent splits and percent-decodes. */
	if (evhttp_parse_query_str(req->query, &q) != 0)
		return -1;
	int found = 0;
	for (struct evkeyval *kv = q.tqh_first; kv != NULL; kv = kv->next.tqe_next) {
		if (strcmp(kv->key, name) != 0)
			continue;
		if (++found > 1 || strlen(kv->value) >= cap) {
			found = -1;
			break;
		}
		memcpy(buf, kv->value, strlen(kv->value) + 1);
	}
	evhttp_clear_headers(&q);
	return found;
}

const char *kw_request_header(const kw_request *req, const char *name, int *count)
{
	const char *found = NULL;
	int n = 0;
	for (size_t i = 0; i < req->nheaders; i++) {
		if (strcasecmp(req->headers[i].name, name) == 0) {
			if (found == NULL)
				found = req->headers[i].value;
			n++;
		}
	}
	if (count)
		*count = n;
	return found;
}

static void set_body(kw_call *call, int status, const char *ctype, char *body, size_t len)
{
	if (call->resp.body)
		OPENSSL_cleanse(call->resp.body, call->resp.body_len);
	free(call->resp.body);
	call->resp.status = status;
	call->resp.content_type = ctype;
	call->resp.body = body;
	call->resp.body_len = len;
}

void kw_respond_text(kw_call *call, int status, const char *content_type, char *body, size_t len)
{
	set_body(call, status, content_type, body, len);
}

void kw_respond_json(kw_call *call, int status, const char *json_text)
{
	char *copy = strdup(json_text);
	if (copy == NULL) {
		set_body(call, 500, "application/json", NULL, 0);
		return;
	}
	set_body(call, status, "application/json", copy, strlen(copy));
}

void kw_respond_error(kw_call *call, int status, const char *code, const char *message)
{
	json_t *o = json_pack("{s:s, s:s, s:s}", "error", code, "message", message, "request_id",
	                      call->req.request_id);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	set_body(call, status, "application/json", text, text ? strlen(text) : 0);
}

void kw_respond_header(kw_call *call, const char *name, const char *value)
{
	if (call->resp.nheaders >= KW_RESP_MAX_HEADERS)
		kw_misuse("kw_respond_header: too many headers");
	kw_header *h = &call->resp.headers[call->resp.nheaders];
	h->name = strdup(name);
	h->value = strdup(value);
	if (h->name == NULL || h->value == NULL) {
		free(h->name);
		free(h->value);
		return;
	}
	call->resp.nheaders++;
}

/* Matches one pattern; a "{x}" segment takes one non-empty path segment. */
static bool pattern_match(const char *pat, const char *path, char *param, size_t cap)
{
	while (*pat && *path) {
		if (*pat == '{') {
			const char *pe = strchr(pat, '}');
			const char *se = strchr(path, '/');
			size_t n = se ? (size_t)(se - path) : strlen(path);
			if (pe == NULL || n == 0 || n >= cap)
				return false;
			memcpy(param, path, n);
			param[n] = '\0';
			pat = pe + 1;
			path += n;
			continue;
		}
		if (*pat != *path)
			return false;
		pat++;
		path++;
	}
	return *pat == '\0' && *path == '\0';
}

int kw_route_match(const kw_route *routes, size_t n, const char *method, const char *path, char *param,
                   size_t cap, bool *path_allowed)
{
	*path_allowed = false;
	for (size_t i = 0; i < n; i++) {
		char tmp[128];
		if (!pattern_match(routes[i].pattern, path, tmp, sizeof(tmp)))
			continue;
		if (strcmp(routes[i].method, method) != 0) {
			*path_allowed = true;
			continue;
		}
		snprintf(param, cap, "%s", strchr(routes[i].pattern, '{') ? tmp : "");
		return (int)i;
	}
	return -1;
}
