/* call.c — the single checked wrapper around every PKCS#11 call, and the
 * one table that names CKR_* codes and translates them to kw_err.
 *
 * Every C_* call of keyward goes through a kw_p11_* function here, so a
 * failing call is always logged with the function and the CKR_* name, and
 * nothing else in src/hsm/ calls the function list directly. Arguments are
 * never logged: they may be PINs, keys or plaintext. */
#include <p11-kit/p11-kit.h>

#include "hsm_internal.h"
#include "keyward/core/log.h"

typedef struct rv_entry {
	CK_RV rv;
	const char *name;
	kw_err err;
	bool quiet; /* an expected outcome: logged at debug, not warn */
} rv_entry;

/* clang-format off */
#define RV(code, e, q) {.rv = (code), .name = #code, .err = (e), .quiet = (q)}
/* clang-format on */

static const rv_entry rv_table[] = {
    RV(CKR_OK, KW_OK, true),
    RV(CKR_CANCEL, KW_ERR_HSM, false),
    RV(CKR_HOST_MEMORY, KW_ERR_NOMEM, false),
    RV(CKR_SLOT_ID_INVALID, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_GENERAL_ERROR, KW_ERR_HSM, false),
    RV(CKR_FUNCTION_FAILED, KW_ERR_HSM, false),
    RV(CKR_ARGUMENTS_BAD, KW_ERR_INVALID, false),
    RV(CKR_NO_EVENT, KW_ERR_HSM, false),
    RV(CKR_NEED_TO_CREATE_THREADS, KW_ERR_HSM, false),
    RV(CKR_CANT_LOCK, KW_ERR_HSM, false),
    RV(CKR_ATTRIBUTE_READ_ONLY, KW_ERR_INVALID, false),
    RV(CKR_ATTRIBUTE_SENSITIVE, KW_ERR_HSM, false),
    RV(CKR_ATTRIBUTE_TYPE_INVALID, KW_ERR_INVALID, true),
    RV(CKR_ATTRIBUTE_VALUE_INVALID, KW_ERR_INVALID, false),
    RV(CKR_ACTION_PROHIBITED, KW_ERR_HSM, false),
    RV(CKR_DATA_INVALID, KW_ERR_INVALID, false),
    RV(CKR_DATA_LEN_RANGE, KW_ERR_INVALID, false),
    RV(CKR_DEVICE_ERROR, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_DEVICE_MEMORY, KW_ERR_HSM, false),
    RV(CKR_DEVICE_REMOVED, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_ENCRYPTED_DATA_INVALID, KW_ERR_VERIFY, true),
    RV(CKR_ENCRYPTED_DATA_LEN_RANGE, KW_ERR_VERIFY, true),
    RV(CKR_FUNCTION_CANCELED, KW_ERR_HSM, false),
    RV(CKR_FUNCTION_NOT_PARALLEL, KW_ERR_HSM, false),
    RV(CKR_FUNCTION_NOT_SUPPORTED, KW_ERR_HSM, false),
    RV(CKR_KEY_HANDLE_INVALID, KW_ERR_NOT_FOUND, false),
    RV(CKR_KEY_SIZE_RANGE, KW_ERR_INVALID, false),
    RV(CKR_KEY_TYPE_INCONSISTENT, KW_ERR_INVALID, false),
    RV(CKR_KEY_NOT_NEEDED, KW_ERR_INVALID, false),
    RV(CKR_KEY_CHANGED, KW_ERR_HSM, false),
    RV(CKR_KEY_NEEDED, KW_ERR_INVALID, false),
    RV(CKR_KEY_INDIGESTIBLE, KW_ERR_HSM, false),
    RV(CKR_KEY_FUNCTION_NOT_PERMITTED, KW_ERR_INVALID, false),
    RV(CKR_KEY_NOT_WRAPPABLE, KW_ERR_HSM, false),
    RV(CKR_KEY_UNEXTRACTABLE, KW_ERR_HSM, false),
    RV(CKR_MECHANISM_INVALID, KW_ERR_HSM, false),
    RV(CKR_MECHANISM_PARAM_INVALID, KW_ERR_INVALID, false),
    RV(CKR_OBJECT_HANDLE_INVALID, KW_ERR_NOT_FOUND, false),
    RV(CKR_OPERATION_ACTIVE, KW_ERR_HSM, false),
    RV(CKR_OPERATION_NOT_INITIALIZED, KW_ERR_HSM, false),
    RV(CKR_PIN_INCORRECT, KW_ERR_PIN, false),
    RV(CKR_PIN_INVALID, KW_ERR_PIN, false),
    RV(CKR_PIN_LEN_RANGE, KW_ERR_PIN, false),
    RV(CKR_PIN_EXPIRED, KW_ERR_PIN, false),
    RV(CKR_PIN_LOCKED, KW_ERR_PIN, false),
    RV(CKR_SESSION_CLOSED, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_SESSION_COUNT, KW_ERR_BUSY, false),
    RV(CKR_SESSION_HANDLE_INVALID, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_SESSION_PARALLEL_NOT_SUPPORTED, KW_ERR_HSM, false),
    RV(CKR_SESSION_READ_ONLY, KW_ERR_HSM, false),
    RV(CKR_SESSION_EXISTS, KW_ERR_HSM, false),
    RV(CKR_SESSION_READ_ONLY_EXISTS, KW_ERR_HSM, false),
    RV(CKR_SESSION_READ_WRITE_SO_EXISTS, KW_ERR_HSM, false),
    RV(CKR_SIGNATURE_INVALID, KW_ERR_VERIFY, true),
    RV(CKR_SIGNATURE_LEN_RANGE, KW_ERR_VERIFY, true),
    RV(CKR_TEMPLATE_INCOMPLETE, KW_ERR_INVALID, false),
    RV(CKR_TEMPLATE_INCONSISTENT, KW_ERR_INVALID, false),
    RV(CKR_TOKEN_NOT_PRESENT, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_TOKEN_NOT_RECOGNIZED, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_TOKEN_WRITE_PROTECTED, KW_ERR_HSM, false),
    RV(CKR_UNWRAPPING_KEY_HANDLE_INVALID, KW_ERR_NOT_FOUND, false),
    RV(CKR_UNWRAPPING_KEY_SIZE_RANGE, KW_ERR_INVALID, false),
    RV(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, KW_ERR_INVALID, false),
    RV(CKR_USER_ALREADY_LOGGED_IN, KW_OK, true),
    RV(CKR_USER_NOT_LOGGED_IN, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_USER_PIN_NOT_INITIALIZED, KW_ERR_PIN, false),
    RV(CKR_USER_TYPE_INVALID, KW_ERR_HSM, false),
    RV(CKR_USER_ANOTHER_ALREADY_LOGGED_IN, KW_ERR_HSM, false),
    RV(CKR_USER_TOO_MANY_TYPES, KW_ERR_HSM, false),
    RV(CKR_WRAPPED_KEY_INVALID, KW_ERR_VERIFY, false),
    RV(CKR_WRAPPED_KEY_LEN_RANGE, KW_ERR_VERIFY, false),
    RV(CKR_WRAPPING_KEY_HANDLE_INVALID, KW_ERR_NOT_FOUND, false),
    RV(CKR_WRAPPING_KEY_SIZE_RANGE, KW_ERR_INVALID, false),
    RV(CKR_WRAPPING_KEY_TYPE_INCONSISTENT, KW_ERR_INVALID, false),
    RV(CKR_RANDOM_SEED_NOT_SUPPORTED, KW_ERR_HSM, false),
    RV(CKR_RANDOM_NO_RNG, KW_ERR_HSM, false),
    RV(CKR_DOMAIN_PARAMS_INVALID, KW_ERR_INVALID, false),
    RV(CKR_CURVE_NOT_SUPPORTED, KW_ERR_HSM, false),
    RV(CKR_BUFFER_TOO_SMALL, KW_ERR_INVALID, true),
    RV(CKR_SAVED_STATE_INVALID, KW_ERR_HSM, false),
    RV(CKR_INFORMATION_SENSITIVE, KW_ERR_HSM, false),
    RV(CKR_STATE_UNSAVEABLE, KW_ERR_HSM, false),
    RV(CKR_CRYPTOKI_NOT_INITIALIZED, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_CRYPTOKI_ALREADY_INITIALIZED, KW_ERR_HSM, false),
    RV(CKR_MUTEX_BAD, KW_ERR_HSM, false),
    RV(CKR_MUTEX_NOT_LOCKED, KW_ERR_HSM, false),
    RV(CKR_NEW_PIN_MODE, KW_ERR_PIN, false),
    RV(CKR_NEXT_OTP, KW_ERR_HSM, false),
    RV(CKR_EXCEEDED_MAX_ITERATIONS, KW_ERR_HSM, false),
    RV(CKR_FIPS_SELF_TEST_FAILED, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_LIBRARY_LOAD_FAILED, KW_ERR_HSM_UNAVAILABLE, false),
    RV(CKR_PIN_TOO_WEAK, KW_ERR_PIN, false),
    RV(CKR_PUBLIC_KEY_INVALID, KW_ERR_INVALID, false),
    RV(CKR_FUNCTION_REJECTED, KW_ERR_HSM, false),
};

#undef RV

static const rv_entry *rv_lookup(CK_RV rv)
{
	for (size_t i = 0; i < sizeof(rv_table) / sizeof(rv_table[0]); i++) {
		if (rv_table[i].rv == rv)
			return &rv_table[i];
	}
	return NULL;
}

const char *kw_hsm_rv_name(CK_RV rv)
{
	const rv_entry *e = rv_lookup(rv);
	if (e != NULL)
		return e->name;
	return (rv & CKR_VENDOR_DEFINED) ? "CKR_VENDOR_DEFINED" : "CKR_UNKNOWN";
}

kw_err kw_hsm_rv_err(CK_RV rv)
{
	const rv_entry *e = rv_lookup(rv);
	return e != NULL ? e->err : KW_ERR_HSM;
}

bool kw_hsm_rv_session_dead(CK_RV rv)
{
	switch (rv) {
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_DEVICE_ERROR:
		return true;
	default:
		return false;
	}
}

bool kw_hsm_rv_stale_handles(CK_RV rv)
{
	switch (rv) {
	case CKR_KEY_HANDLE_INVALID:
	case CKR_OBJECT_HANDLE_INVALID:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_ERROR:
	case CKR_USER_NOT_LOGGED_IN:
		return true;
	default:
		return false;
	}
}

static CK_RV checked(const char *fn, CK_RV rv)
{
	if (rv == CKR_OK)
		return rv;
	const rv_entry *e = rv_lookup(rv);
	kw_log(e != NULL && e->quiet ? KW_LOG_DEBUG : KW_LOG_WARN, "hsm: %s: %s (0x%lx)", fn,
	       kw_hsm_rv_name(rv), (unsigned long)rv);
	return rv;
}

CK_RV kw_p11_initialize(kw_hsm *hsm)
{
	/* p11-kit calls C_Initialize with CKF_OS_LOCKING_OK, so sessions may
	 * be used from several threads at once. */
	return checked("C_Initialize", p11_kit_module_initialize(hsm->f));
}

CK_RV kw_p11_finalize(kw_hsm *hsm)
{
	return checked("C_Finalize", p11_kit_module_finalize(hsm->f));
}

CK_RV kw_p11_GetSlotList(kw_hsm *hsm, CK_SLOT_ID *slots, CK_ULONG *n)
{
	return checked("C_GetSlotList", hsm->f->C_GetSlotList(CK_TRUE, slots, n));
}

CK_RV kw_p11_GetTokenInfo(kw_hsm *hsm, CK_SLOT_ID slot, CK_TOKEN_INFO *ti)
{
	return checked("C_GetTokenInfo", hsm->f->C_GetTokenInfo(slot, ti));
}

CK_RV kw_p11_OpenSession(kw_hsm *hsm, CK_SLOT_ID slot, CK_SESSION_HANDLE *h)
{
	return checked("C_OpenSession",
	               hsm->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, h));
}

CK_RV kw_p11_CloseSession(kw_hsm *hsm, CK_SESSION_HANDLE h)
{
	return checked("C_CloseSession", hsm->f->C_CloseSession(h));
}

CK_RV kw_p11_GetSessionInfo(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_SESSION_INFO *si)
{
	return checked("C_GetSessionInfo", hsm->f->C_GetSessionInfo(h, si));
}

CK_RV kw_p11_Login(kw_hsm *hsm, CK_SESSION_HANDLE h, const unsigned char *pin, size_t len)
{
	return checked("C_Login", hsm->f->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)pin, (CK_ULONG)len));
}

CK_RV kw_p11_Logout(kw_hsm *hsm, CK_SESSION_HANDLE h)
{
	return checked("C_Logout", hsm->f->C_Logout(h));
}

CK_RV kw_p11_FindObjectsInit(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
	return checked("C_FindObjectsInit", hsm->f->C_FindObjectsInit(h, tmpl, n));
}

CK_RV kw_p11_FindObjects(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE *objs, CK_ULONG max,
                         CK_ULONG *found)
{
	return checked("C_FindObjects", hsm->f->C_FindObjects(h, objs, max, found));
}

CK_RV kw_p11_FindObjectsFinal(kw_hsm *hsm, CK_SESSION_HANDLE h)
{
	return checked("C_FindObjectsFinal", hsm->f->C_FindObjectsFinal(h));
}

CK_RV kw_p11_GetAttributeValue(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *tmpl,
                               CK_ULONG n)
{
	return checked("C_GetAttributeValue", hsm->f->C_GetAttributeValue(h, o, tmpl, n));
}

CK_RV kw_p11_GenerateKey(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                         CK_OBJECT_HANDLE *key)
{
	return checked("C_GenerateKey", hsm->f->C_GenerateKey(h, m, tmpl, n, key));
}

CK_RV kw_p11_GenerateKeyPair(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_ATTRIBUTE *pub,
                             CK_ULONG npub, CK_ATTRIBUTE *priv, CK_ULONG npriv, CK_OBJECT_HANDLE *hpub,
                             CK_OBJECT_HANDLE *hpriv)
{
	return checked("C_GenerateKeyPair",
	               hsm->f->C_GenerateKeyPair(h, m, pub, npub, priv, npriv, hpub, hpriv));
}

CK_RV kw_p11_CreateObject(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                          CK_OBJECT_HANDLE *obj)
{
	return checked("C_CreateObject", hsm->f->C_CreateObject(h, tmpl, n, obj));
}

CK_RV kw_p11_DestroyObject(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj)
{
	return checked("C_DestroyObject", hsm->f->C_DestroyObject(h, obj));
}

CK_RV kw_p11_CopyObject(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE *tmpl,
                        CK_ULONG n, CK_OBJECT_HANDLE *copy)
{
	return checked("C_CopyObject", hsm->f->C_CopyObject(h, obj, tmpl, n, copy));
}

CK_RV kw_p11_GenerateRandom(kw_hsm *hsm, CK_SESSION_HANDLE h, unsigned char *buf, CK_ULONG len)
{
	return checked("C_GenerateRandom", hsm->f->C_GenerateRandom(h, buf, len));
}

CK_RV kw_p11_EncryptInit(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE key)
{
	return checked("C_EncryptInit", hsm->f->C_EncryptInit(h, m, key));
}

CK_RV kw_p11_Encrypt(kw_hsm *hsm, CK_SESSION_HANDLE h, const unsigned char *in, CK_ULONG inlen,
                     unsigned char *out, CK_ULONG *outlen)
{
	return checked("C_Encrypt", hsm->f->C_Encrypt(h, (CK_BYTE_PTR)in, inlen, out, outlen));
}

CK_RV kw_p11_DecryptInit(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE key)
{
	return checked("C_DecryptInit", hsm->f->C_DecryptInit(h, m, key));
}

CK_RV kw_p11_Decrypt(kw_hsm *hsm, CK_SESSION_HANDLE h, const unsigned char *in, CK_ULONG inlen,
                     unsigned char *out, CK_ULONG *outlen)
{
	CK_RV rv = hsm->f->C_Decrypt(h, (CK_BYTE_PTR)in, inlen, out, outlen);
	/* SoftHSM answers a GCM tag mismatch (a tampered or misplaced blob,
	 * an expected outcome) with CKR_GENERAL_ERROR: not worth a warning. */
	if (rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED) {
		kw_debug("hsm: C_Decrypt: %s (0x%lx)", kw_hsm_rv_name(rv), (unsigned long)rv);
		return rv;
	}
	return checked("C_Decrypt", rv);
}

CK_RV kw_p11_SignInit(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE key)
{
	return checked("C_SignInit", hsm->f->C_SignInit(h, m, key));
}

CK_RV kw_p11_Sign(kw_hsm *hsm, CK_SESSION_HANDLE h, const unsigned char *in, CK_ULONG inlen,
                  unsigned char *out, CK_ULONG *outlen)
{
	return checked("C_Sign", hsm->f->C_Sign(h, (CK_BYTE_PTR)in, inlen, out, outlen));
}
