/* error.c — names for kw_err, and the misuse trap. */
#include "keyward/core/error.h"

#include <stdio.h>
#include <stdlib.h>

const char *kw_err_str(kw_err err)
{
	switch (err) {
	case KW_OK:
		return "ok";
	case KW_ERR_INVALID:
		return "invalid";
	case KW_ERR_NOMEM:
		return "out_of_memory";
	case KW_ERR_NOT_FOUND:
		return "not_found";
	case KW_ERR_EXISTS:
		return "exists";
	case KW_ERR_HSM:
		return "hsm_error";
	case KW_ERR_HSM_UNAVAILABLE:
		return "hsm_unavailable";
	case KW_ERR_PIN:
		return "pin_refused";
	case KW_ERR_VERIFY:
		return "verify_failed";
	case KW_ERR_DB:
		return "db_error";
	case KW_ERR_DB_UNAVAILABLE:
		return "db_unavailable";
	case KW_ERR_CONFIG:
		return "config_error";
	case KW_ERR_IO:
		return "io_error";
	case KW_ERR_BUSY:
		return "busy";
	case KW_ERR_CONFLICT:
		return "conflict";
	case KW_ERR_INTERNAL:
		return "internal";
	}
	return "unknown";
}

void kw_misuse(const char *msg)
{
	fprintf(stderr, "keyward: API misuse: %s\n", msg);
	abort();
}
