/* libFuzzer target: durations, role lists, refresh tokens and access-token
 * claims.
 *
 * The input is tried as a duration and a role list (NUL-terminated
 * copies), as a refresh token, and, when it is JSON, as a claims payload.
 * Whatever is accepted must keep the promises of the headers: durations
 * within 100 years, roles within their bounds with a JSON array of
 * permissions, UUIDs where UUIDs are promised. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/auth/tokens.h"
#include "keyward/core/config.h"

static bool lower_hex(const char *s, size_t n)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	return true;
}

static bool json_string_array(const char *text)
{
	json_t *a = json_loads(text, 0, NULL);
	bool ok = json_is_array(a);
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v) ok = ok && json_is_string(v);
	json_decref(a);
	return ok;
}

static void check_roles(const char *text)
{
	kw_roles r;
	if (kw_roles_parse(text, &r) != KW_OK)
		return;
	if (r.n == 0 || r.n > KW_ROLES_MAX)
		abort();
	for (size_t i = 0; i < r.n; i++) {
		const kw_role *role = &r.roles[i];
		if (role->name[0] == '\0' || strlen(role->name) > KW_ROLE_MAX || role->ttl_s < 60 ||
		    role->ttl_s > 86400 || kw_roles_find(&r, role->name) != role ||
		    !json_string_array(role->permissions))
			abort();
	}
}

static void check_claims(const uint8_t *data, size_t size)
{
	json_t *payload = json_loadb((const char *)data, size, 0, NULL);
	if (payload == NULL)
		return;
	kw_access_claims c;
	if (kw_access_claims_read(payload, "keyward", "keyward", &c) == KW_OK) {
		size_t sub = strlen(c.sub);
		if (sub == 0 || sub > KW_SUBJECT_MAX || c.role[0] == '\0' || !kw_is_uuid(c.tid) ||
		    !kw_is_uuid(c.sid) || !lower_hex(c.jti, 32) || c.iat < 0 || c.nbf < 0 || c.exp < 0 ||
		    !json_string_array(c.permissions))
			abort();
	}
	json_decref(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	int64_t d = -1;
	if (kw_duration_parse(text, &d) && (d < 0 || d > 100LL * 365 * 86400))
		abort();
	check_roles(text);

	char tid[37];
	if (kw_refresh_parse((const char *)data, size, tid) == KW_OK &&
	    (size != KW_REFRESH_TEXT_LEN || !kw_is_uuid(tid)))
		abort();

	check_claims(data, size);
	free(text);
	return 0;
}
