/* hsm.h — the only door to the PKCS#11 token.
 *
 * The module is loaded through p11-kit, the token chosen by an RFC 7512
 * URI, and the user logged in once with a PIN from a file. Every long-lived
 * key is a token object that is sensitive and never extractable; this API
 * has no call that returns key material, only results of operations.
 *
 * No CK_* type appears here. Sessions are not thread-safe: each thread (a
 * worker) owns one kw_hsm_session; kw_hsm itself is thread-safe. An
 * operation whose session died (closed, device removed, logged out) is
 * retried once on a freshly opened and logged-in session. */
#ifndef KEYWARD_HSM_H
#define KEYWARD_HSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward/core/error.h"

typedef struct kw_hsm kw_hsm;
typedef struct kw_hsm_session kw_hsm_session;

typedef enum kw_key_family {
	KW_KEY_KEK = 0, /* AES-256, wrap/unwrap via AES-GCM */
	KW_KEY_DERIVE,  /* 32-byte generic secret, HKDF root (HMAC-SHA256) */
	KW_KEY_PEPPER,  /* 32-byte generic secret, HMAC of tokens and API keys */
	KW_KEY_JWT,     /* EC P-256 key pair, ES256 */
	KW_KEY_AUDIT,   /* 32-byte generic secret, audit MAC chain */
	KW_KEY_FAMILY_COUNT,
} kw_key_family;

/* "kek", "derive", "pepper", "jwt", "audit". */
const char *kw_key_family_name(kw_key_family f);

/* A key the process may use: found once, kept by handle. Owned by kw_hsm
 * (or, for test keys, by the session that imported it). Never freed by the
 * caller. */
typedef struct kw_hsm_key kw_hsm_key;

#define KW_GCM_IV_LEN    12
#define KW_GCM_TAG_LEN   16
#define KW_HMAC_LEN      32
#define KW_ECDSA_SIG_LEN 64 /* raw r || s, as JWS wants */
#define KW_EC_POINT_LEN  65 /* 0x04 || x || y */

typedef struct kw_hsm_options {
	const char *module_path; /* e.g. /usr/lib/softhsm/libsofthsm2.so */
	const char *token_uri;   /* e.g. pkcs11:token=keyward */
	const char *pin_file;    /* the user PIN; read, used, wiped */
	unsigned max_sessions;   /* 0: the token's ulMaxSessionCount */
	/* false (the default): each session works on a session-object copy
	 * of a token key (C_CopyObject, CKA_TOKEN false; made on first use,
	 * as sensitive and non-extractable as the original), which spares
	 * SoftHSM its per-operation check of the token's object files; true:
	 * every operation names the token object itself (the benchmarks'
	 * yardstick). */
	bool token_objects_only;
} kw_hsm_options;

/* Loads the module, finds exactly one token matching the URI, logs in
 * (after checking the PIN is neither locked nor on its final try), and
 * finds every keyward/<family>/<n> key. KW_ERR_NOT_FOUND: no such token;
 * KW_ERR_PIN: PIN refused or unsafe to try. */
KW_MUST_CHECK kw_err kw_hsm_open(const kw_hsm_options *opt, kw_hsm **out);
/* Closes every session, logs out, C_Finalize. Sessions must be closed. */
void kw_hsm_close(kw_hsm *hsm);

/* Opens a session for the calling thread. KW_ERR_BUSY when the session
 * cap is reached. */
KW_MUST_CHECK kw_err kw_hsm_session_open(kw_hsm *hsm, kw_hsm_session **out);
void kw_hsm_session_close(kw_hsm_session *s);
/* A cheap call that proves the session and the token answer. */
KW_MUST_CHECK kw_err kw_hsm_session_ping(kw_hsm_session *s);

/* Key lookup. Active = the highest version of the family. */
KW_MUST_CHECK kw_err kw_hsm_key_active(kw_hsm *hsm, kw_key_family f, const kw_hsm_key **out);
/* Objects that carry a key family's label but are not what keyward
 * creates — not generated in the token (CKA_LOCAL), extractable or ever
 * so, of another type or size, or with a usage keyward does
 * not give — as of the last read of the token's keys. They are never
 * used. Returns how many; first (cap bytes, may be NULL) describes one. */
size_t kw_hsm_refused_keys(kw_hsm *hsm, char *first, size_t cap);
KW_MUST_CHECK kw_err kw_hsm_key_get(kw_hsm *hsm, kw_key_family f, uint32_t version, const kw_hsm_key **out);
/* As kw_hsm_key_get, but a version this process has not seen (made by
 * keywardctl since it last looked) makes it re-read the token's key list
 * first — at most every KW_HSM_MISS_REFRESH_MS, so a flood of unknown
 * versions costs the token little. */
#define KW_HSM_MISS_REFRESH_MS 100
KW_MUST_CHECK kw_err kw_hsm_key_get_fresh(kw_hsm *hsm, kw_key_family f, uint32_t version,
                                          const kw_hsm_key **out);
uint32_t kw_hsm_key_version(const kw_hsm_key *k);
kw_key_family kw_hsm_key_family(const kw_hsm_key *k);
/* Re-reads the key objects from the token (after a rotation elsewhere). */
KW_MUST_CHECK kw_err kw_hsm_keys_refresh(kw_hsm *hsm);
/* Moves on whenever the key table changes (a key appears, goes, or is
 * another object): a cue to sweep idle sessions (kw_hsm_session_sweep). */
uint64_t kw_hsm_keys_epoch(kw_hsm *hsm);

/* Creates version `version` of a family in the token with exactly the
 * attributes of DESIGN §3. KW_ERR_EXISTS if that label exists already. */
KW_MUST_CHECK kw_err kw_hsm_key_generate(kw_hsm_session *s, kw_key_family f, uint32_t version);
/* Ensures version 1 (at least) of every family exists; never overwrites.
 * *created = how many key families were created now. */
KW_MUST_CHECK kw_err kw_hsm_token_init(kw_hsm_session *s, int *created);
/* Destroys version `version` of a family (retirement). */
KW_MUST_CHECK kw_err kw_hsm_key_destroy(kw_hsm_session *s, kw_key_family f, uint32_t version);

/* What `keywardctl token status` prints, read back from the token. */
typedef struct kw_hsm_key_info {
	char label[64];
	kw_key_family family;
	uint32_t version;
	bool active;
	bool sensitive, extractable, never_extractable, always_sensitive;
	bool is_private_half; /* for the JWT pair: which object this is */
	char refused[96];     /* "" or why keyward does not use it (kw_hsm_refused_keys) */
} kw_hsm_key_info;
/* Fills up to cap entries (sorted by family, version), sets *n. */
KW_MUST_CHECK kw_err kw_hsm_key_list(kw_hsm_session *s, kw_hsm_key_info *infos, size_t cap, size_t *n);

/* Operations. All outputs are written only on success. */
KW_MUST_CHECK kw_err kw_hsm_random(kw_hsm_session *s, unsigned char *buf, size_t len);
/* AES-256-GCM with a fresh IV from the token's RNG; out holds ptlen + 16. */
KW_MUST_CHECK kw_err kw_hsm_gcm_encrypt(kw_hsm_session *s, const kw_hsm_key *k, const unsigned char *aad,
                                        size_t aadlen, const unsigned char *pt, size_t ptlen,
                                        unsigned char iv[KW_GCM_IV_LEN], unsigned char *out);
/* As above with a caller-chosen IV: for known-answer tests only. */
KW_MUST_CHECK kw_err kw_hsm_gcm_encrypt_iv(kw_hsm_session *s, const kw_hsm_key *k,
                                           const unsigned char iv[KW_GCM_IV_LEN], const unsigned char *aad,
                                           size_t aadlen, const unsigned char *pt, size_t ptlen,
                                           unsigned char *out);
/* ctlen includes the 16-byte tag; out holds ctlen - 16. KW_ERR_VERIFY on a
 * bad tag (wrong key, IV, AAD or tampered data). */
KW_MUST_CHECK kw_err kw_hsm_gcm_decrypt(kw_hsm_session *s, const kw_hsm_key *k,
                                        const unsigned char iv[KW_GCM_IV_LEN], const unsigned char *aad,
                                        size_t aadlen, const unsigned char *ct, size_t ctlen,
                                        unsigned char *out);
KW_MUST_CHECK kw_err kw_hsm_hmac(kw_hsm_session *s, const kw_hsm_key *k, const unsigned char *data,
                                 size_t len, unsigned char out[KW_HMAC_LEN]);
/* HMAC-SHA256 in process under a subkey of k: HKDF-Expand(k, purpose)
 * computed in the token the first time, then kept in locked memory for the
 * process's life (per key version and purpose). For MACs computed on every
 * request (refresh-token hashes, the audit chain), where a token call each
 * would cost more than the request. The subkey never leaves the process;
 * anyone able to read it could equally ask the token through our session. */
KW_MUST_CHECK kw_err kw_hsm_subkey_hmac(kw_hsm_session *s, const kw_hsm_key *k, const char *purpose,
                                        const unsigned char *data, size_t len,
                                        unsigned char out[KW_HMAC_LEN]);
/* RFC 5869 HKDF-Expand with the key as PRK; outlen <= 255 * 32. */
KW_MUST_CHECK kw_err kw_hsm_hkdf_expand(kw_hsm_session *s, const kw_hsm_key *prk, const unsigned char *info,
                                        size_t infolen, unsigned char *out, size_t outlen);
/* ECDSA P-256 over SHA-256(msg) computed in process; raw r || s. */
KW_MUST_CHECK kw_err kw_hsm_ecdsa_sign(kw_hsm_session *s, const kw_hsm_key *k, const unsigned char *msg,
                                       size_t len, unsigned char sig[KW_ECDSA_SIG_LEN]);
/* The public point of a JWT key, uncompressed. */
KW_MUST_CHECK kw_err kw_hsm_public_key(kw_hsm *hsm, const kw_hsm_key *k, unsigned char pub[KW_EC_POINT_LEN]);

/* Test support: imports bytes as a session-only HMAC (generic secret) or
 * AES key in s; the key lives until the session closes. Never used by the
 * service: long-lived keys are generated in the token. */
KW_MUST_CHECK kw_err kw_hsm_test_import_key(kw_hsm_session *s, kw_key_family f, const unsigned char *value,
                                            size_t len, const kw_hsm_key **out);
/* Test support: plants what an attacker with the PIN could, a token
 * object labelled keyward/<family>/<version> (secret-key families): with
 * value, an imported key of that value (sensitive, not extractable, the
 * family's usage); without, a key generated in the token that may also
 * wrap. keyward must refuse both (kw_hsm_refused_keys). */
KW_MUST_CHECK kw_err kw_hsm_test_plant_key(kw_hsm_session *s, kw_key_family f, uint32_t version,
                                           const unsigned char *value, size_t len);
/* Destroys, now, s's session copies of keys that went from the token (a
 * retired key) or changed; the session's next operation would, but an
 * idle session could keep one for long. Call from s's owner thread. */
void kw_hsm_session_sweep(kw_hsm_session *s);
/* Test support: closes the session handle behind the pool's back, or logs
 * the application out, so the revive path can be exercised. */
void kw_hsm_test_kill_session(kw_hsm_session *s, bool logout);
/* Test support: the session-object copies of token keys s holds now (see
 * kw_hsm_options.token_objects_only), with their secrecy attributes as
 * the token reports them. KW_ERR_HSM if one of them claims to be a token
 * object. */
KW_MUST_CHECK kw_err kw_hsm_test_session_copies(kw_hsm_session *s, kw_hsm_key_info *infos, size_t cap,
                                                size_t *n);
/* Test support: how many session objects (of any session) the token
 * shows to s: what C_FindObjects finds with CKA_TOKEN false. */
KW_MUST_CHECK kw_err kw_hsm_test_count_session_objects(kw_hsm_session *s, size_t *n);

/* Counters for /metrics: ops and cumulative microseconds per operation. */
typedef enum kw_hsm_op {
	KW_HSM_OP_RANDOM = 0,
	KW_HSM_OP_ENCRYPT,
	KW_HSM_OP_DECRYPT,
	KW_HSM_OP_SIGN_HMAC,
	KW_HSM_OP_SIGN_ECDSA,
	KW_HSM_OP_OTHER,
	KW_HSM_OP_COUNT,
} kw_hsm_op;
const char *kw_hsm_op_name(kw_hsm_op op);
typedef struct kw_hsm_stats {
	uint64_t count[KW_HSM_OP_COUNT];
	uint64_t errors[KW_HSM_OP_COUNT];
	uint64_t usec[KW_HSM_OP_COUNT];
	uint64_t revived_sessions;
} kw_hsm_stats;
void kw_hsm_stats_get(kw_hsm *hsm, kw_hsm_stats *out);

#endif
