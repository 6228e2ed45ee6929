/* hsm_internal.h — what the files of src/hsm/ share, and nothing outside.
 *
 * This is the only header that includes the PKCS#11 definitions: no CK_*
 * type may leave src/hsm/. The pieces are:
 *   call.c    one checked wrapper per C_* function, the CKR_* name table
 *             and the single CK_RV -> kw_err translation table;
 *   module.c  p11-kit loading, RFC 7512 token lookup, login, kw_hsm;
 *   session.c sessions, the session cap, and the revive-and-retry-once path;
 *   keys.c    labels, the key table, generate/find/list/destroy/token_init;
 *   ops.c     random, AES-GCM, HMAC, HKDF-Expand, ECDSA, public keys, stats.
 *
 * Locking: the key table is guarded by hsm->keys_lock (a rwlock); handles
 * are copied out under the read lock. hsm->refresh_lock serialises the
 * scan-and-merge of a refresh; hsm->login_lock serialises C_Login;
 * hsm->admin_lock guards the kw_hsm's own session. Order when nested:
 * admin_lock -> refresh_lock -> login_lock -> keys_lock. */
#ifndef KEYWARD_HSM_INTERNAL_H
#define KEYWARD_HSM_INTERNAL_H

#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/secret.h"
#include "keyward/hsm/hsm.h"

/* A key table entry. Token keys are allocated once and never freed while
 * the kw_hsm lives (pointers handed out stay valid); a key that vanished
 * from the token is marked gone. Session keys (test imports) belong to
 * their session and are freed when it closes. family and version never
 * change; the other fields are written under hsm->keys_lock. */
struct kw_hsm_key {
	kw_key_family family;
	uint32_t version;
	bool session_key;
	bool gone;
	/* hsm->keys_epoch of the refresh that last saw this key appear or its
	 * token object change: copies made before it are of something else. */
	uint_fast64_t changed_epoch;
	CK_OBJECT_HANDLE handle;     /* secret key, or the JWT private key */
	CK_OBJECT_HANDLE pub_handle; /* JWT public key, CK_INVALID_HANDLE otherwise */
	bool have_pub;
	unsigned char pub[KW_EC_POINT_LEN]; /* cached public point (JWT) */
	struct kw_hsm_key *next_session_key;
};

/* A session-object copy of a token key, made by one session for its own
 * use (see kw_hsm_key_use). `from` is the token object it copies, `epoch`
 * the hsm->keys_epoch and `login` the hsm->login_gen when it was made; `h`
 * is CK_INVALID_HANDLE when the token refused the copy (then the session
 * uses the token object). */
struct kw_hsm_copy {
	const struct kw_hsm_key *k;
	CK_OBJECT_HANDLE from;
	CK_OBJECT_HANDLE h;
	uint_fast64_t epoch, login;
};
#define KW_HSM_COPIES 8

struct kw_hsm_session {
	kw_hsm *hsm;
	CK_SESSION_HANDLE h;
	bool open;    /* h is a session we opened and have not seen die */
	bool counted; /* counts against the cap (not the admin session) */
	struct kw_hsm_key *session_keys;
	/* Copies of token keys in this session; checked against the table
	 * whenever hsm->keys_epoch moves on. */
	struct kw_hsm_copy copies[KW_HSM_COPIES];
	size_t ncopies;
	uint_fast64_t copies_epoch, copies_login;
	/* Bytes from C_GenerateRandom not handed out yet (mlocked; each
	 * handed-out byte is wiped here). */
	kw_secret *rand_pool;
	size_t rand_used;
};

/* An in-process HMAC key derived in the token (see kw_hsm_subkey). */
struct kw_hsm_subkey {
	kw_key_family family;
	uint32_t version;
	char purpose[64];
	kw_secret *key; /* 32 bytes, mlocked and undumpable: the only copy kept */
	struct kw_hsm_subkey *next;
};

struct kw_hsm {
	CK_FUNCTION_LIST *f;
	bool initialized;
	CK_SLOT_ID slot;
	unsigned cap;
	atomic_uint nsessions;

	/* The PIN is kept (mlocked, undumpable) only to log in again after
	 * the token forgot us; it is freed as soon as a login is refused. */
	kw_secret *pin;
	pthread_mutex_t login_lock;

	/* The kw_hsm's own session: holds the login for the whole lifetime
	 * (closing an application's last session logs it out) and serves
	 * kw_hsm_keys_refresh. */
	kw_hsm_session admin;
	pthread_mutex_t admin_lock;

	pthread_mutex_t subkeys_lock;
	struct kw_hsm_subkey *subkeys;

	pthread_rwlock_t keys_lock;
	pthread_mutex_t refresh_lock;
	/* kw_hsm_key_get_fresh: when the key list was last re-read for a
	 * version nobody here had seen. */
	pthread_mutex_t miss_lock;
	struct timespec miss_refreshed;
	struct kw_hsm_key **keys;
	size_t nkeys, keys_cap;
	/* Objects with a key family's label that are not what keyward creates
	 * (kw_hsm_refused_keys), as of the last read of the token's keys. */
	size_t nrefused;
	char refused_first[192];
	/* Moves on whenever the table changes (a refresh): sessions then
	 * drop copies of keys that went or whose token object changed. */
	atomic_uint_fast64_t keys_epoch;
	/* Moves on at every C_Login: a logout ends every private session
	 * object of the application, so copies made before it are dead
	 * handles, which some tokens hand out again; never name them. */
	atomic_uint_fast64_t login_gen;
	bool session_copies; /* !kw_hsm_options.token_objects_only */

	atomic_uint_fast64_t st_count[KW_HSM_OP_COUNT];
	atomic_uint_fast64_t st_errors[KW_HSM_OP_COUNT];
	atomic_uint_fast64_t st_usec[KW_HSM_OP_COUNT];
	atomic_uint_fast64_t st_revived;
};

/* ---- call.c ---------------------------------------------------------- */

/* "CKR_PIN_INCORRECT"; "CKR_VENDOR_DEFINED" or "CKR_UNKNOWN" for codes
 * not in the table. Static, never NULL. */
const char *kw_hsm_rv_name(CK_RV rv);
/* The one translation from CK_RV to kw_err. */
kw_err kw_hsm_rv_err(CK_RV rv);
/* True for codes after which the session must be reopened (and the user
 * logged in again) before a retry. */
bool kw_hsm_rv_session_dead(CK_RV rv);
/* True for codes after which key handles must be looked up again. */
bool kw_hsm_rv_stale_handles(CK_RV rv);

/* The checked wrappers: each calls the module, logs a failure with the
 * function and the CKR_* name (expected outcomes such as a bad tag or
 * "already logged in" at debug, the rest at warn), and returns the CK_RV. */
CK_RV kw_p11_initialize(kw_hsm *hsm);
CK_RV kw_p11_finalize(kw_hsm *hsm);
CK_RV kw_p11_GetSlotList(kw_hsm *hsm, CK_SLOT_ID *slots, CK_ULONG *n);
CK_RV kw_p11_GetTokenInfo(kw_hsm *hsm, CK_SLOT_ID slot, CK_TOKEN_INFO *ti);
CK_RV kw_p11_OpenSession(kw_hsm *hsm, CK_SLOT_ID slot, CK_SESSION_HANDLE *h);
CK_RV kw_p11_CloseSession(kw_hsm *hsm, CK_SESSION_HANDLE h);
CK_RV kw_p11_GetSessionInfo(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_SESSION_INFO *si);
CK_RV kw_p11_Login(kw_hsm *hsm, CK_SESSION_HANDLE h, const unsigned char *pin, size_t len);
CK_RV kw_p11_Logout(kw_hsm *hsm, CK_SESSION_HANDLE h);
CK_RV kw_p11_FindObjectsInit(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG n);
CK_RV kw_p11_FindObjects(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE *objs, CK_ULONG max,
                         CK_ULONG *found);
CK_RV kw_p11_FindObjectsFinal(kw_hsm *hsm, CK_SESSION_HANDLE h);
CK_RV kw_p11_GetAttributeValue(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *tmpl,
                               CK_ULONG n);
CK_RV kw_p11_GenerateKey(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                         CK_OBJECT_HANDLE *key);
CK_RV kw_p11_GenerateKeyPair(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_ATTRIBUTE *pub,
                             CK_ULONG npub, CK_ATTRIBUTE *priv, CK_ULONG npriv, CK_OBJECT_HANDLE *hpub,
                             CK_OBJECT_HANDLE *hpriv);
CK_RV kw_p11_CreateObject(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                          CK_OBJECT_HANDLE *obj);
CK_RV kw_p11_DestroyObject(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj);
CK_RV kw_p11_CopyObject(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE *tmpl,
                        CK_ULONG n, CK_OBJECT_HANDLE *copy);
CK_RV kw_p11_GenerateRandom(kw_hsm *hsm, CK_SESSION_HANDLE h, unsigned char *buf, CK_ULONG len);
CK_RV kw_p11_EncryptInit(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE key);
CK_RV kw_p11_Encrypt(kw_hsm *hsm, CK_SESSION_HANDLE h, const unsigned char *in, CK_ULONG inlen,
                     unsigned char *out, CK_ULONG *outlen);
CK_RV kw_p11_DecryptInit(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE key);
CK_RV kw_p11_Decrypt(kw_hsm *hsm, CK_SESSION_HANDLE h, const unsigned char *in, CK_ULONG inlen,
                     unsigned char *out, CK_ULONG *outlen);
CK_RV kw_p11_SignInit(kw_hsm *hsm, CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE key);
CK_RV kw_p11_Sign(kw_hsm *hsm, CK_SESSION_HANDLE h, const unsigned char *in, CK_ULONG inlen,
                  unsigned char *out, CK_ULONG *outlen);

/* ---- module.c -------------------------------------------------------- */

/* Makes sure the application is logged in as the user, through session
 * h: checks the PIN flags first, never retries a refused PIN.
 * *did_login is set when C_Login actually ran. Takes hsm->login_lock. */
CK_RV kw_hsm_login_ensure(kw_hsm *hsm, CK_SESSION_HANDLE h, bool *did_login);

/* ---- session.c ------------------------------------------------------- */

/* One attempt of an operation on s->h; returns the first failing CK_RV. */
typedef CK_RV (*kw_hsm_attempt_fn)(kw_hsm_session *s, void *arg);
/* Runs fn; if it failed because the session died, the user was logged
 * out or key handles went stale, repairs that (reopen, log in, refresh
 * keys) and runs fn once more. Counts the operation in the stats and
 * returns the translated result. */
kw_err kw_hsm_run(kw_hsm_session *s, kw_hsm_op op, kw_hsm_attempt_fn fn, void *arg);
/* Opens s->h on the token (no login: the application is logged in once). */
CK_RV kw_hsm_session_open_handle(kw_hsm *hsm, kw_hsm_session *s);
/* The object an operation on s must name for key k: the session's copy of
 * the token object (made now if there is none yet and the hsm makes
 * copies), or the token object. CKR_KEY_HANDLE_INVALID if k is gone. */
CK_RV kw_hsm_key_use(kw_hsm_session *s, const kw_hsm_key *k, CK_OBJECT_HANDLE *out);

/* ---- keys.c ---------------------------------------------------------- */

/* Parses "keyward/<family>/<n>" (n: 1..2^32-1, decimal, no leading zero). */
bool kw_hsm_label_parse(const char *label, size_t len, kw_key_family *f, uint32_t *version);
/* Writes "keyward/<family>/<n>" (or, with prefix false, "<family>/<n>",
 * the CKA_ID) into buf; returns its length, 0 if it does not fit. */
size_t kw_hsm_label_format(char *buf, size_t cap, bool prefix, kw_key_family f, uint32_t version);
/* Accepts CKA_EC_POINT raw (04||x||y) or DER-wrapped (04 41 04||x||y). */
bool kw_hsm_ec_point_parse(const unsigned char *in, size_t len, unsigned char out[KW_EC_POINT_LEN]);
/* Re-reads every keyward key object through session s (logging in first
 * if the token forgot us) and merges it into the table. */
CK_RV kw_hsm_refresh_on(kw_hsm_session *s);
/* Copies the handles of k under the read lock; CKR_KEY_HANDLE_INVALID if
 * the key is gone. pub may be NULL. */
CK_RV kw_hsm_key_handles(kw_hsm *hsm, const kw_hsm_key *k, CK_OBJECT_HANDLE *priv, CK_OBJECT_HANDLE *pub);
/* As kw_hsm_key_handles for the private half, with k->changed_epoch. */
CK_RV kw_hsm_key_handle_since(kw_hsm *hsm, const kw_hsm_key *k, CK_OBJECT_HANDLE *priv,
                              uint_fast64_t *changed);
/* Destroys s's copies of keys that went or changed (any session, at the
 * start of each operation, once per refresh). */
void kw_hsm_copies_sweep(kw_hsm_session *s);
/* Forgets every copy of s; destroys those still alive (same login, and
 * the session was not reopened). */
void kw_hsm_copies_forget(kw_hsm_session *s, bool reopened);
/* Frees the table (kw_hsm_close). */
void kw_hsm_keys_free(kw_hsm *hsm);

/* ---- ops.c ----------------------------------------------------------- */

void kw_hsm_stats_add(kw_hsm *hsm, kw_hsm_op op, bool ok, uint64_t usec);

#endif
