/* scopes.c — see keyward/core/scopes.h. */
#include "keyward/core/scopes.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const struct {
	uint32_t bit;
	const char *name;
} scopes[] = {
    {KW_SCOPE_ADMIN, "admin"},
    {KW_SCOPE_AUTH_ISSUE, "auth:issue"},
    {KW_SCOPE_TRANSIT_ENCRYPT, "transit:encrypt"},
    {KW_SCOPE_TRANSIT_DECRYPT, "transit:decrypt"},
    {KW_SCOPE_SECRETS_READ, "secrets:read"},
    {KW_SCOPE_SECRETS_WRITE, "secrets:write"},
};

uint32_t kw_scope_from_name(const char *name)
{
	if (name == NULL)
		return 0;
	for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++)
		if (strcmp(scopes[i].name, name) == 0)
			return scopes[i].bit;
	return 0;
}

const char *kw_scope_name(uint32_t bit)
{
	for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++)
		if (scopes[i].bit == bit)
			return scopes[i].name;
	return NULL;
}

/* "admin,auth:issue": names from the fixed table, so no escaping needed.
 * False for no scope or an unknown bit. */
bool kw_scopes_text(uint32_t bits, char *out, size_t cap)
{
	size_t used = 0;
	uint32_t known = 0;

	out[0] = '\0';
	for (uint32_t bit = 1; bit != 0; bit <<= 1) {
		const char *name = kw_scope_name(bit);
		if (name == NULL)
			continue;
		known |= bit;
		if ((bits & bit) == 0)
			continue;
		int n = snprintf(out + used, cap - used, "%s%s", used > 0 ? "," : "", name);
		if (n < 0 || (size_t)n >= cap - used)
			return false;
		used += (size_t)n;
	}
	return bits != 0 && (bits & ~known) == 0;
}

/* Names the database returned; unknown ones (from a newer build) grant
 * nothing. */
uint32_t kw_scopes_from_text(const char *text)
{
	uint32_t bits = 0;
	char name[64];

	while (*text != '\0') {
		size_t n = strcspn(text, ",");
		if (n < sizeof(name)) {
			memcpy(name, text, n);
			name[n] = '\0';
			bits |= kw_scope_from_name(name);
		}
		text += n;
		if (*text == ',')
			text++;
	}
	return bits;
}
