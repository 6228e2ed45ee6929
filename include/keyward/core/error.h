/* error.h — the one error type every keyward module returns.
 *
 * Runtime failures are reported as kw_err values; programmer misuse aborts
 * (kw_misuse). Nothing in this header knows PKCS#11 or libpq: those layers
 * translate their own codes at their boundary. */
#ifndef KEYWARD_ERROR_H
#define KEYWARD_ERROR_H

#define KW_MUST_CHECK __attribute__((warn_unused_result))

typedef enum kw_err {
	KW_OK = 0,
	KW_ERR_INVALID,         /* bad argument or malformed input */
	KW_ERR_NOMEM,           /* allocation or mlock failed */
	KW_ERR_NOT_FOUND,       /* key, row, file or token absent */
	KW_ERR_EXISTS,          /* would overwrite something that exists */
	KW_ERR_HSM,             /* the token refused or failed an operation */
	KW_ERR_HSM_UNAVAILABLE, /* token, session or device gone */
	KW_ERR_PIN,             /* PIN wrong, locked, or too few tries left */
	KW_ERR_VERIFY,          /* MAC, tag or signature mismatch */
	KW_ERR_DB,              /* the database refused a statement */
	KW_ERR_DB_UNAVAILABLE,  /* no connection to the database */
	KW_ERR_CONFIG,          /* configuration missing or wrong */
	KW_ERR_IO,              /* file or socket error */
	KW_ERR_BUSY,            /* a bounded queue or pool is full */
	KW_ERR_CONFLICT,        /* concurrent change or checksum mismatch */
	KW_ERR_INTERNAL,        /* should not happen; a bug */
} kw_err;

/* Static, never NULL: "ok", "invalid", "hsm_unavailable", ... */
const char *kw_err_str(kw_err err);

/* Prints msg and aborts. For misuse of an API, never for runtime failure. */
__attribute__((noreturn)) void kw_misuse(const char *msg);

#endif
