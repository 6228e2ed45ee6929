/* scopes.h — what an API key may do: the scope names of DESIGN §5, as
 * bits. The vocabulary the api_keys table stores, the guard checks and
 * the API answers. */
#ifndef KEYWARD_SCOPES_H
#define KEYWARD_SCOPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Known scopes. */
typedef enum kw_scope {
	KW_SCOPE_ADMIN = 1u << 0,
	KW_SCOPE_AUTH_ISSUE = 1u << 1,
	KW_SCOPE_TRANSIT_ENCRYPT = 1u << 2,
	KW_SCOPE_TRANSIT_DECRYPT = 1u << 3,
	KW_SCOPE_SECRETS_READ = 1u << 4,
	KW_SCOPE_SECRETS_WRITE = 1u << 5,
} kw_scope;
/* "admin" -> KW_SCOPE_ADMIN, ...; 0 for an unknown name. */
uint32_t kw_scope_from_name(const char *name);
/* Name of one scope bit; NULL if not exactly one known bit. */
const char *kw_scope_name(uint32_t bit);

/* "admin,auth:issue": the names of bits, comma-separated (names from the
 * fixed table, so no escaping is needed). False for no scope, an unknown
 * bit, or cap too small. */
bool kw_scopes_text(uint32_t bits, char *out, size_t cap);
/* The bits of such a list; unknown names (from a newer build) grant
 * nothing. */
uint32_t kw_scopes_from_text(const char *text);

#endif
