/* scopes.c — see keyward/core/scopes.h. */
#include "keyward/core/scopes.h"

#include <stddef.h>
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
