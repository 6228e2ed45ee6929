/* p11_fault.c — a fault-injecting PKCS#11 module, for tests only.
 *
 * Built as libkwt_p11fault.so (CMake target kwt_p11fault) and never
 * installed or linked into keyward. It loads the real module named by
 * KWT_P11_REAL_MODULE (default: SoftHSMv2) and hands out a copy of its
 * function list in which the operational calls are wrapped. While the file
 * named by KWT_P11_FAULT_FILE exists (checked with access(2) on every
 * call), the token behaves as if it had been pulled out:
 *   - calls that take a session handle fail with CKR_DEVICE_REMOVED;
 *   - C_GetTokenInfo and C_OpenSession fail with CKR_TOKEN_NOT_PRESENT;
 *   - C_GetSlotList(tokenPresent = TRUE) lists no slot, as the spec says
 *     for a slot without a token.
 * While the file named by KWT_P11_COPY_FAULT_FILE exists, C_CopyObject
 * fails with CKR_ACTION_PROHIBITED (a token that does not copy keys).
 * While the file named by KWT_P11_DECRYPT_FAULT_FILE exists, the token is
 * present but every C_Decrypt fails with CKR_GENERAL_ERROR (what SoftHSM
 * also answers for a bad GCM tag). The file named by
 * KWT_P11_DECRYPT_GLITCH_FILE is a single such failure: the C_Decrypt that
 * manages to unlink it fails, and the calls after it succeed.
 * When the files are absent every call is forwarded unchanged. C_Initialize,
 * C_Finalize, C_GetInfo and C_CloseSession always forward (closing lets
 * the real module release the session). The real sessions and the login
 * survive a fault, so removing the file is a token coming back as it was.
 *
 * Only C_GetFunctionList is exported (no C_GetInterface), so p11-kit and
 * other loaders see a PKCS#11 2.40 module. */
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KWT_DEFAULT_REAL_MODULE "/usr/lib/softhsm/libsofthsm2.so"

static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST wrapped;
static CK_RV load_rv = CKR_GENERAL_ERROR;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static int faulted(void)
{
	const char *file = getenv("KWT_P11_FAULT_FILE");
	return file != NULL && file[0] != '\0' && access(file, F_OK) == 0;
}

/* One wrapper per call: the fault answer, or the real module. */
#define WRAP(name, rv_fault, params, args)                                                                   \
	static CK_RV w_##name params                                                                         \
	{                                                                                                    \
		if (faulted())                                                                               \
			return rv_fault;                                                                     \
		return real->name args;                                                                      \
	}

/* clang-format off */
WRAP(C_GetTokenInfo, CKR_TOKEN_NOT_PRESENT, (CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info), (slot, info))
WRAP(C_OpenSession, CKR_TOKEN_NOT_PRESENT,
     (CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR h),
     (slot, flags, app, notify, h))
WRAP(C_GetSessionInfo, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR info), (h, info))
WRAP(C_Login, CKR_DEVICE_REMOVED,
     (CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len), (h, user, pin, len))
WRAP(C_Logout, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h), (h))
WRAP(C_CreateObject, CKR_DEVICE_REMOVED,
     (CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR o), (h, t, n, o))
WRAP(C_DestroyObject, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o), (h, o))
WRAP(C_GetAttributeValue, CKR_DEVICE_REMOVED,
     (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n), (h, o, t, n))
WRAP(C_FindObjectsInit, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n), (h, t, n))
WRAP(C_FindObjects, CKR_DEVICE_REMOVED,
     (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR o, CK_ULONG max, CK_ULONG_PTR n), (h, o, max, n))
WRAP(C_FindObjectsFinal, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h), (h))
WRAP(C_EncryptInit, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), (h, m, k))
WRAP(C_Encrypt, CKR_DEVICE_REMOVED,
     (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen),
     (h, in, inlen, out, outlen))
WRAP(C_DecryptInit, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), (h, m, k))
WRAP(C_SignInit, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), (h, m, k))
WRAP(C_Sign, CKR_DEVICE_REMOVED,
     (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen),
     (h, in, inlen, out, outlen))
WRAP(C_GenerateKey, CKR_DEVICE_REMOVED,
     (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k),
     (h, m, t, n, k))
WRAP(C_GenerateKeyPair, CKR_DEVICE_REMOVED,
     (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt, CK_ULONG pn, CK_ATTRIBUTE_PTR vt,
      CK_ULONG vn, CK_OBJECT_HANDLE_PTR pk, CK_OBJECT_HANDLE_PTR vk),
     (h, m, pt, pn, vt, vn, pk, vk))
WRAP(C_GenerateRandom, CKR_DEVICE_REMOVED, (CK_SESSION_HANDLE h, CK_BYTE_PTR buf, CK_ULONG len), (h, buf, len))
/* clang-format on */

static CK_RV w_C_CopyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                            CK_OBJECT_HANDLE_PTR copy)
{
	if (faulted())
		return CKR_DEVICE_REMOVED;
	const char *file = getenv("KWT_P11_COPY_FAULT_FILE");
	if (file != NULL && file[0] != '\0' && access(file, F_OK) == 0)
		return CKR_ACTION_PROHIBITED;
	return real->C_CopyObject(h, o, t, n, copy);
}

/* A token that is present but whose decryptions fail the way SoftHSM
 * reports a bad GCM tag: CKR_GENERAL_ERROR. */
static CK_RV w_C_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
                         CK_ULONG_PTR outlen)
{
	if (faulted())
		return CKR_DEVICE_REMOVED;
	const char *file = getenv("KWT_P11_DECRYPT_FAULT_FILE");
	const char *glitch = getenv("KWT_P11_DECRYPT_GLITCH_FILE");
	if ((file != NULL && file[0] != '\0' && access(file, F_OK) == 0) ||
	    (glitch != NULL && glitch[0] != '\0' && unlink(glitch) == 0)) {
		/* End the real operation, as a failed decrypt does, into scratch
		 * the caller never sees. */
		CK_ULONG n = inlen;
		CK_BYTE_PTR scratch = calloc(1, inlen + 1);
		if (scratch != NULL) {
			(void)real->C_Decrypt(h, in, inlen, scratch, &n);
			explicit_bzero(scratch, inlen + 1);
			free(scratch);
		}
		(void)out;
		(void)outlen;
		return CKR_GENERAL_ERROR;
	}
	return real->C_Decrypt(h, in, inlen, out, outlen);
}

/* A slot whose token is gone is not listed when only slots with a token
 * are asked for. */
static CK_RV w_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR slots, CK_ULONG_PTR n)
{
	if (present && faulted()) {
		if (n == NULL)
			return CKR_ARGUMENTS_BAD;
		*n = 0;
		return CKR_OK;
	}
	return real->C_GetSlotList(present, slots, n);
}

static void load_real(void)
{
	const char *path = getenv("KWT_P11_REAL_MODULE");
	if (path == NULL || path[0] == '\0')
		path = KWT_DEFAULT_REAL_MODULE;
	/* Never closed: the wrapped list points into it for the process's life. */
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		fprintf(stderr, "p11_fault: cannot load %s: %s\n", path, dlerror());
		return;
	}
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	if (get == NULL) {
		fprintf(stderr, "p11_fault: %s has no C_GetFunctionList\n", path);
		return;
	}
	load_rv = get(&real);
	if (load_rv != CKR_OK)
		return;
	wrapped = *real;
	wrapped.C_GetFunctionList = C_GetFunctionList;
	wrapped.C_GetSlotList = w_C_GetSlotList;
	wrapped.C_GetTokenInfo = w_C_GetTokenInfo;
	wrapped.C_OpenSession = w_C_OpenSession;
	wrapped.C_GetSessionInfo = w_C_GetSessionInfo;
	wrapped.C_Login = w_C_Login;
	wrapped.C_Logout = w_C_Logout;
	wrapped.C_CreateObject = w_C_CreateObject;
	wrapped.C_DestroyObject = w_C_DestroyObject;
	wrapped.C_CopyObject = w_C_CopyObject;
	wrapped.C_GetAttributeValue = w_C_GetAttributeValue;
	wrapped.C_FindObjectsInit = w_C_FindObjectsInit;
	wrapped.C_FindObjects = w_C_FindObjects;
	wrapped.C_FindObjectsFinal = w_C_FindObjectsFinal;
	wrapped.C_EncryptInit = w_C_EncryptInit;
	wrapped.C_Encrypt = w_C_Encrypt;
	wrapped.C_DecryptInit = w_C_DecryptInit;
	wrapped.C_Decrypt = w_C_Decrypt;
	wrapped.C_SignInit = w_C_SignInit;
	wrapped.C_Sign = w_C_Sign;
	wrapped.C_GenerateKey = w_C_GenerateKey;
	wrapped.C_GenerateKeyPair = w_C_GenerateKeyPair;
	wrapped.C_GenerateRandom = w_C_GenerateRandom;
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	if (list == NULL)
		return CKR_ARGUMENTS_BAD;
	pthread_once(&load_once, load_real);
	if (load_rv != CKR_OK)
		return load_rv;
	*list = &wrapped;
	return CKR_OK;
}
