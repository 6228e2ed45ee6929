/* audit_internal.h — the canonical row form, shared by writer and verifier.
 *
 * A row's MAC is HMAC-SHA256 in the token, keyed by keyward/audit/<v>, over
 *   prev_mac (32 bytes) || canonical(row)
 * where canonical(row) encodes, in this order, each as a 4-byte big-endian
 * length followed by its bytes (SQL NULL: length 0xFFFFFFFF, no bytes):
 *   "keyward-audit-v1", chain_id, seq (decimal), at, tenant_id (lowercase
 *   uuid or NULL), actor, action, target, status, ip, user_agent,
 *   request_id, context (exact JSON text), key_version (decimal).
 * `at` is UTC text "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" (what the verifier reads
 * back with to_char). Row 1's prev_mac is 32 zero bytes.
 *
 * A chain's head (audit_chains) carries
 *   head_mac = HMAC(keyward/audit/<key_version>, "keyward-audit-head-v1" ||
 *              chain_id (36 ASCII chars) || be64(last_seq) || last_mac)
 * so a deleted tail, or a rewound head, is detected.
 *
 * Nothing here is exported from the library. */
#ifndef KEYWARD_AUDIT_INTERNAL_H
#define KEYWARD_AUDIT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "keyward/audit/audit.h"
#include "keyward/db/db.h"
#include "keyward/db/repo_audit.h"
#include "keyward/hsm/hsm.h"

#define KW_AUDIT_MAC_LEN  32
#define KW_AUDIT_ROW_TAG  "keyward-audit-v1"
#define KW_AUDIT_HEAD_TAG "keyward-audit-head-v1"
#define KW_AUDIT_UUID_LEN 36

/* Caps that keep rows bounded: characters of the user agent and of other
 * text (longer is cut; ill-formed UTF-8 becomes U+FFFD, kw_utf8_clean).
 * Context is JSON and cannot be cut: more bytes than its cap is invalid. */
#define KW_AUDIT_MAX_UA      256
#define KW_AUDIT_MAX_TEXT    512
#define KW_AUDIT_MAX_CONTEXT (64 * 1024)
#define KW_AUDIT_MAX_WRITER  128

typedef enum kw_audit_field {
	KW_AF_CHAIN_ID = 0,
	KW_AF_SEQ,
	KW_AF_AT,
	KW_AF_TENANT_ID,
	KW_AF_ACTOR,
	KW_AF_ACTION,
	KW_AF_TARGET,
	KW_AF_STATUS,
	KW_AF_IP,
	KW_AF_USER_AGENT,
	KW_AF_REQUEST_ID,
	KW_AF_CONTEXT,
	KW_AF_KEY_VERSION,
	KW_AF_COUNT,
} kw_audit_field;

/* mac = HMAC(k, prev || canonical(f)); f[i] NULL is SQL NULL. */
/* Row and head MACs are HMAC-SHA256 under the in-process subkey
 * HKDF-Expand(keyward/audit/<n>, KW_AUDIT_SUBKEY) (see kw_hsm_subkey_hmac):
 * the audit key stays in the token, and a MAC costs no token call. */
#define KW_AUDIT_SUBKEY "keyward:v1:audit-chain"
KW_MUST_CHECK kw_err kw_audit_row_mac(kw_hsm_session *s, const kw_hsm_key *k,
                                      const unsigned char prev[KW_AUDIT_MAC_LEN],
                                      const char *const f[KW_AF_COUNT], unsigned char out[KW_AUDIT_MAC_LEN]);
KW_MUST_CHECK kw_err kw_audit_head_mac(kw_hsm_session *s, const kw_hsm_key *k, const char *chain_id,
                                       uint64_t last_seq, const unsigned char last_mac[KW_AUDIT_MAC_LEN],
                                       unsigned char out[KW_AUDIT_MAC_LEN]);

/* Required fields present, ids well formed, context within its cap. */
KW_MUST_CHECK kw_err kw_audit_event_check(const kw_audit_event *ev);

/* A row ready to INSERT: owns copies of its (capped) text. */
typedef struct kw_audit_row {
	char *text; /* one allocation holding the copied fields */
	const char *f[KW_AF_COUNT];
	char seq[24], at[32], key_version[12], chain_id[KW_AUDIT_UUID_LEN + 1];
	unsigned char prev_mac[KW_AUDIT_MAC_LEN], mac[KW_AUDIT_MAC_LEN];
	const char *values[KW_AUDIT_INSERT_NPARAMS];
	int lengths[KW_AUDIT_INSERT_NPARAMS], formats[KW_AUDIT_INSERT_NPARAMS];
	kw_db_stmt stmt; /* the INSERT, pointing into this struct */
} kw_audit_row;

/* The chain head write that goes with a batch of rows. */
typedef struct kw_audit_head {
	char chain_id[KW_AUDIT_UUID_LEN + 1], last_seq[24], prev_seq[24], key_version[12];
	unsigned char last_mac[KW_AUDIT_MAC_LEN], head_mac[KW_AUDIT_MAC_LEN];
	const char *values[6];
	int lengths[6], formats[6];
	bool update; /* UPDATE ... WHERE last_seq = prev_seq: must touch one row */
	kw_db_stmt stmt;
	const char *writer;
} kw_audit_head;

/* Builds the next row from the chain's pending head and advances the
 * pending head past it (in memory only). On failure nothing changes. */
KW_MUST_CHECK kw_err kw_audit_stage_row(kw_audit_chain *c, kw_hsm_session *s, const kw_audit_event *ev,
                                        kw_audit_row *row);
void kw_audit_row_clear(kw_audit_row *row);
/* Builds the audit_chains INSERT (first write) or UPDATE for the pending
 * head and records that the head row now holds it. */
KW_MUST_CHECK kw_err kw_audit_stage_head(kw_audit_chain *c, kw_hsm_session *s, kw_audit_head *h);
/* Checks the head statement's result (the UPDATE must touch one row). */
KW_MUST_CHECK kw_err kw_audit_head_check(kw_audit_chain *c, const kw_audit_head *h, const kw_db_result *res);
/* The commit's outcome is unknown (connection lost during COMMIT): the
 * chain may or may not have advanced, so continue on a fresh chain. */
void kw_audit_chain_restart(kw_audit_chain *c);

#endif
