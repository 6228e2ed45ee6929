/* chain.c — appends MAC-chained audit rows inside the caller's transaction.
 *
 * A kw_audit_chain is one writer's chain: a random id and an in-memory
 * head (last seq, last mac, whether its audit_chains row exists). Two heads
 * are kept: `committed`, what the database durably holds, and `pending`,
 * what the open transaction holds. Appends build on `pending`; the caller
 * says whether the transaction committed or rolled back, and `pending`
 * becomes `committed` or is thrown away. A chain is used by one thread at
 * a time, so it never forks. MACs are computed in the token; this file
 * never sees key material. Audit rows never carry secrets: callers pass
 * ids, names and outcomes. */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit_internal.h"
#include "keyward/core/log.h"
#include "keyward/core/text.h"

typedef struct chain_state {
	uint64_t seq;                             /* last row (0: no row yet) */
	unsigned char mac[KW_AUDIT_MAC_LEN];      /* its mac (zeros before row 1) */
	bool head_stored;                         /* audit_chains row exists */
	uint64_t head_seq;                        /* last_seq that row holds */
	uint32_t head_key;                        /* the audit key version of ... */
	unsigned char head_mac[KW_AUDIT_MAC_LEN]; /* ... its head_mac */
} chain_state;

struct kw_audit_chain {
	kw_hsm *hsm;
	char id[KW_AUDIT_UUID_LEN + 1];
	char writer[KW_AUDIT_MAX_WRITER + 1];
	chain_state committed, pending;
	bool desync; /* the database disagrees with us: restart on rollback */
	/* The registry of this process's chains (checkpoints): */
	struct kw_audit_chain *next;
	uint64_t logged_seq; /* the last checkpoint logged for this id */
};

/* Every chain of the process, for checkpoints. The lock also guards each
 * chain's id, `committed` and `logged_seq` against the checkpoint reader;
 * `pending` is its owner thread's alone. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static kw_audit_chain *registry;
static bool log_at_free; /* kw_audit_checkpoints_log was called: a process that logs them */

static bool log_checkpoint_locked(kw_audit_chain *c, bool all);

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

kw_err kw_audit_row_mac(kw_hsm_session *s, const kw_hsm_key *k, const unsigned char prev[KW_AUDIT_MAC_LEN],
                        const char *const f[KW_AF_COUNT], unsigned char out[KW_AUDIT_MAC_LEN])
{
	kw_err err = KW_OK;
	unsigned char *buf = NULL;
	size_t lens[KW_AF_COUNT], total = KW_AUDIT_MAC_LEN + 4 + strlen(KW_AUDIT_ROW_TAG);
	unsigned char mac[KW_AUDIT_MAC_LEN];

	for (int i = 0; i < KW_AF_COUNT; i++) {
		lens[i] = f[i] != NULL ? strlen(f[i]) : 0;
		if (lens[i] >= UINT32_MAX)
			return KW_ERR_INVALID;
		total += 4 + lens[i];
	}
	buf = malloc(total);
	if (buf == NULL)
		return KW_ERR_NOMEM;
	unsigned char *p = buf;
	memcpy(p, prev, KW_AUDIT_MAC_LEN);
	p += KW_AUDIT_MAC_LEN;
	put_be32(p, (uint32_t)strlen(KW_AUDIT_ROW_TAG));
	memcpy(p + 4, KW_AUDIT_ROW_TAG, strlen(KW_AUDIT_ROW_TAG));
	p += 4 + strlen(KW_AUDIT_ROW_TAG);
	for (int i = 0; i < KW_AF_COUNT; i++) {
		if (f[i] == NULL) {
			put_be32(p, UINT32_MAX);
			p += 4;
			continue;
		}
		put_be32(p, (uint32_t)lens[i]);
		memcpy(p + 4, f[i], lens[i]);
		p += 4 + lens[i];
	}
	err = kw_hsm_subkey_hmac(s, k, KW_AUDIT_SUBKEY, buf, total, mac);
	if (err != KW_OK)
		goto done;
	memcpy(out, mac, sizeof(mac));
done:
	free(buf);
	return err;
}

kw_err kw_audit_head_mac(kw_hsm_session *s, const kw_hsm_key *k, const char *chain_id, uint64_t last_seq,
                         const unsigned char last_mac[KW_AUDIT_MAC_LEN], unsigned char out[KW_AUDIT_MAC_LEN])
{
	unsigned char buf[sizeof(KW_AUDIT_HEAD_TAG) - 1 + KW_AUDIT_UUID_LEN + 8 + KW_AUDIT_MAC_LEN];
	size_t tag = sizeof(KW_AUDIT_HEAD_TAG) - 1;

	if (strlen(chain_id) != KW_AUDIT_UUID_LEN)
		return KW_ERR_INVALID;
	memcpy(buf, KW_AUDIT_HEAD_TAG, tag);
	memcpy(buf + tag, chain_id, KW_AUDIT_UUID_LEN);
	for (int i = 0; i < 8; i++)
		buf[tag + KW_AUDIT_UUID_LEN + i] = (unsigned char)(last_seq >> (56 - 8 * i));
	memcpy(buf + tag + KW_AUDIT_UUID_LEN + 8, last_mac, KW_AUDIT_MAC_LEN);
	return kw_hsm_subkey_hmac(s, k, KW_AUDIT_SUBKEY, buf, sizeof(buf), out);
}

kw_err kw_audit_event_check(const kw_audit_event *ev)
{
	if (ev == NULL || ev->actor == NULL || ev->action == NULL || ev->status == NULL)
		return KW_ERR_INVALID;
	if (ev->actor[0] == '\0' || ev->action[0] == '\0' || ev->status[0] == '\0')
		return KW_ERR_INVALID;
	if (ev->tenant_id != NULL && !kw_is_uuid(ev->tenant_id))
		return KW_ERR_INVALID;
	if (ev->context != NULL && (ev->context[0] == '\0' || strlen(ev->context) > KW_AUDIT_MAX_CONTEXT))
		return KW_ERR_INVALID;
	return KW_OK;
}

static void format_now(char at[32])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(at, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(at + n, 32 - n, ".%06ldZ", ts.tv_nsec / 1000);
}

kw_err kw_audit_chain_new(kw_hsm *hsm, const char *writer, kw_audit_chain **out)
{
	kw_err err = KW_OK;
	kw_audit_chain *c = NULL;

	if (hsm == NULL || writer == NULL || out == NULL)
		kw_misuse("kw_audit_chain_new: NULL argument");
	if (writer[0] == '\0' || strlen(writer) > KW_AUDIT_MAX_WRITER)
		return KW_ERR_INVALID;
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	c->hsm = hsm;
	snprintf(c->writer, sizeof(c->writer), "%s", writer);
	err = kw_random_uuid(c->id);
	if (err != KW_OK)
		goto done;
	pthread_mutex_lock(&registry_lock);
	c->next = registry;
	registry = c;
	pthread_mutex_unlock(&registry_lock);
	*out = c;
	c = NULL;
done:
	free(c);
	return err;
}

void kw_audit_chain_free(kw_audit_chain *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&registry_lock);
	if (log_at_free)
		log_checkpoint_locked(c, false); /* a chain's last word */
	for (kw_audit_chain **p = &registry; *p != NULL; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	pthread_mutex_unlock(&registry_lock);
	free(c);
}

const char *kw_audit_chain_id(const kw_audit_chain *c)
{
	return c->id;
}

/* The chain goes on under a new id, from seq 1. */
static void restart(kw_audit_chain *c, kw_log_level level, const char *why)
{
	char id[KW_AUDIT_UUID_LEN + 1];
	if (kw_random_uuid(id) != KW_OK) {
		/* Without a fresh id the chain would fork: refuse to go on. */
		kw_misuse("audit: no random bytes for a new chain id");
	}
	kw_log(level, "audit: chain %s continues as chain %s (%s)", c->id, id, why);
	pthread_mutex_lock(&registry_lock);
	if (log_at_free)
		log_checkpoint_locked(c, false); /* the old id's last word */
	memcpy(c->id, id, sizeof(id));
	memset(&c->committed, 0, sizeof(c->committed));
	c->logged_seq = 0;
	pthread_mutex_unlock(&registry_lock);
	c->pending = c->committed;
	c->desync = false;
}

void kw_audit_chain_restart(kw_audit_chain *c)
{
	restart(c, KW_LOG_WARN, "commit outcome unknown or head out of step");
}

void kw_audit_chain_committed(kw_audit_chain *c)
{
	pthread_mutex_lock(&registry_lock);
	c->committed = c->pending;
	pthread_mutex_unlock(&registry_lock);
}

void kw_audit_chain_rolled_back(kw_audit_chain *c)
{
	c->pending = c->committed;
	if (c->desync)
		kw_audit_chain_restart(c);
}

void kw_audit_chain_commit_unknown(kw_audit_chain *c)
{
	c->desync = true;
	kw_audit_chain_rolled_back(c);
}

kw_err kw_audit_end_tx(kw_audit_chain *chain, kw_db *db, kw_err err)
{
	bool committing = err == KW_OK;
	if (committing)
		err = kw_db_commit(db);
	else if (kw_db_in_tx(db))
		kw_db_rollback(db);
	if (chain == NULL)
		return err;
	if (err == KW_OK)
		kw_audit_chain_committed(chain);
	else if (committing && err == KW_ERR_DB_UNAVAILABLE)
		kw_audit_chain_commit_unknown(chain);
	else
		kw_audit_chain_rolled_back(chain);
	return err;
}

void kw_audit_row_clear(kw_audit_row *row)
{
	free(row->text);
	memset(row, 0, sizeof(*row));
}

kw_err kw_audit_stage_row(kw_audit_chain *c, kw_hsm_session *s, const kw_audit_event *ev, kw_audit_row *row)
{
	kw_err err = KW_OK;
	const kw_hsm_key *key = NULL;
	kw_audit_row r = {0};
	const char *src[KW_AF_COUNT] = {0};
	size_t cap[KW_AF_COUNT] = {0}, chars[KW_AF_COUNT] = {0};
	size_t total = 0;

	err = kw_audit_event_check(ev);
	if (err != KW_OK)
		goto done;
	err = kw_hsm_key_active(c->hsm, KW_KEY_AUDIT, &key);
	if (err != KW_OK) {
		kw_err_log("audit: no active audit key: %s", kw_err_str(err));
		goto done;
	}
	if (c->pending.seq == INT64_MAX) {
		err = KW_ERR_INTERNAL;
		goto done;
	}
	/* A new audit key (keywardctl audit rotate-key) starts a new chain, at
	 * the first row of a transaction: each chain segment is MAC'd under
	 * one key, and the old segments still verify under theirs. */
	if (c->pending.seq > 0 && c->pending.seq == c->committed.seq &&
	    c->committed.head_key != kw_hsm_key_version(key))
		restart(c, KW_LOG_INFO, "a new audit key");

	src[KW_AF_TENANT_ID] = ev->tenant_id;
	src[KW_AF_ACTOR] = ev->actor;
	src[KW_AF_ACTION] = ev->action;
	src[KW_AF_TARGET] = ev->target;
	src[KW_AF_STATUS] = ev->status;
	src[KW_AF_IP] = ev->ip;
	src[KW_AF_USER_AGENT] = ev->user_agent;
	src[KW_AF_REQUEST_ID] = ev->request_id;
	src[KW_AF_CONTEXT] = ev->context != NULL ? ev->context : "{}";
	/* Whatever bytes a request carried, the row holds valid UTF-8 (or the
	 * database would refuse it, and the refusal would go unaudited),
	 * bounded by characters. */
	for (int i = 0; i < KW_AF_COUNT; i++) {
		if (src[i] == NULL)
			continue;
		size_t len = strlen(src[i]);
		chars[i] = i == KW_AF_USER_AGENT ? KW_AUDIT_MAX_UA
		           : i == KW_AF_CONTEXT  ? SIZE_MAX /* JSON: checked whole, never cut */
		                                 : KW_AUDIT_MAX_TEXT;
		cap[i] = 3 * len + 1; /* each byte may become U+FFFD */
		if (chars[i] != SIZE_MAX && cap[i] > 4 * chars[i] + 1)
			cap[i] = 4 * chars[i] + 1;
		total += cap[i];
	}
	r.text = malloc(total > 0 ? total : 1);
	if (r.text == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	char *p = r.text;
	for (int i = 0; i < KW_AF_COUNT; i++) {
		if (src[i] == NULL)
			continue;
		size_t n = kw_utf8_clean(src[i], strlen(src[i]), chars[i], p, cap[i], NULL);
		/* The database prints uuids in lowercase: so does the MAC. */
		if (i == KW_AF_TENANT_ID) {
			for (size_t j = 0; j < n; j++)
				if (p[j] >= 'A' && p[j] <= 'F')
					p[j] = (char)(p[j] - 'A' + 'a');
		}
		r.f[i] = p;
		p += cap[i];
	}

	memcpy(r.chain_id, c->id, sizeof(r.chain_id));
	snprintf(r.seq, sizeof(r.seq), "%llu", (unsigned long long)(c->pending.seq + 1));
	format_now(r.at);
	snprintf(r.key_version, sizeof(r.key_version), "%u", (unsigned)kw_hsm_key_version(key));
	r.f[KW_AF_CHAIN_ID] = r.chain_id;
	r.f[KW_AF_SEQ] = r.seq;
	r.f[KW_AF_AT] = r.at;
	r.f[KW_AF_KEY_VERSION] = r.key_version;
	memcpy(r.prev_mac, c->pending.mac, KW_AUDIT_MAC_LEN);
	err = kw_audit_row_mac(s, key, r.prev_mac, r.f, r.mac);
	if (err != KW_OK)
		goto done;

	*row = r;
	memset(&r, 0, sizeof(r));
	/* Fields and parameters point into *row, which the caller now owns. */
	row->f[KW_AF_CHAIN_ID] = row->chain_id;
	row->f[KW_AF_SEQ] = row->seq;
	row->f[KW_AF_AT] = row->at;
	row->f[KW_AF_KEY_VERSION] = row->key_version;
	static const int order[] = {KW_AF_CHAIN_ID,   KW_AF_SEQ,        KW_AF_AT,         KW_AF_TENANT_ID,
	                            KW_AF_ACTOR,      KW_AF_ACTION,     KW_AF_TARGET,     KW_AF_STATUS,
	                            KW_AF_IP,         KW_AF_USER_AGENT, KW_AF_REQUEST_ID, KW_AF_CONTEXT,
	                            KW_AF_KEY_VERSION};
	for (int i = 0; i < 13; i++) {
		row->values[i] = row->f[order[i]];
		row->lengths[i] = 0;
		row->formats[i] = 0;
	}
	row->values[13] = (const char *)row->prev_mac;
	row->lengths[13] = KW_AUDIT_MAC_LEN;
	row->formats[13] = 1;
	row->values[14] = (const char *)row->mac;
	row->lengths[14] = KW_AUDIT_MAC_LEN;
	row->formats[14] = 1;
	row->stmt = kw_audit_stmt_row(row->values, row->lengths, row->formats);
	c->pending.seq++;
	memcpy(c->pending.mac, row->mac, KW_AUDIT_MAC_LEN);
done:
	kw_audit_row_clear(&r);
	return err;
}

kw_err kw_audit_stage_head(kw_audit_chain *c, kw_hsm_session *s, kw_audit_head *h)
{
	kw_err err = KW_OK;
	const kw_hsm_key *key = NULL;
	kw_audit_head out = {0};

	if (c->pending.seq == 0)
		kw_misuse("kw_audit_stage_head: no row staged");
	err = kw_hsm_key_active(c->hsm, KW_KEY_AUDIT, &key);
	if (err != KW_OK)
		goto done;
	memcpy(out.chain_id, c->id, sizeof(out.chain_id));
	memcpy(out.last_mac, c->pending.mac, KW_AUDIT_MAC_LEN);
	snprintf(out.last_seq, sizeof(out.last_seq), "%llu", (unsigned long long)c->pending.seq);
	snprintf(out.prev_seq, sizeof(out.prev_seq), "%llu", (unsigned long long)c->pending.head_seq);
	snprintf(out.key_version, sizeof(out.key_version), "%u", (unsigned)kw_hsm_key_version(key));
	err = kw_audit_head_mac(s, key, c->id, c->pending.seq, c->pending.mac, out.head_mac);
	if (err != KW_OK)
		goto done;
	out.update = c->pending.head_stored;
	out.writer = c->writer;

	*h = out;
	h->values[0] = h->chain_id;
	h->values[1] = h->update ? h->prev_seq : h->writer;
	h->values[2] = h->last_seq;
	h->values[3] = (const char *)h->last_mac;
	h->lengths[3] = KW_AUDIT_MAC_LEN;
	h->formats[3] = 1;
	h->values[4] = h->key_version;
	h->values[5] = (const char *)h->head_mac;
	h->lengths[5] = KW_AUDIT_MAC_LEN;
	h->formats[5] = 1;
	h->stmt = kw_audit_stmt_head(h->update, h->values, h->lengths, h->formats);
	c->pending.head_stored = true;
	c->pending.head_seq = c->pending.seq;
	c->pending.head_key = kw_hsm_key_version(key);
	memcpy(c->pending.head_mac, out.head_mac, KW_AUDIT_MAC_LEN);
done:
	return err;
}

kw_err kw_audit_head_check(kw_audit_chain *c, const kw_audit_head *h, const kw_db_result *res)
{
	if (kw_db_affected(res) == 1)
		return KW_OK;
	/* Our idea of the head is not the database's: never fork, move on. */
	kw_err_log("audit: chain %s head is not at seq %s in audit_chains", h->chain_id,
	           h->update ? h->prev_seq : "0");
	c->desync = true;
	return KW_ERR_CONFLICT;
}

kw_err kw_audit_append(kw_audit_chain *c, kw_hsm_session *s, kw_db *db, const kw_audit_event *ev)
{
	kw_err err = KW_OK;
	chain_state saved;
	kw_audit_row row = {0};
	kw_audit_head head = {0};
	kw_db_result *res[2] = {NULL, NULL};

	if (c == NULL || s == NULL || db == NULL)
		kw_misuse("kw_audit_append: NULL argument");
	if (!kw_db_in_tx(db))
		kw_misuse("kw_audit_append: no open transaction");
	saved = c->pending;
	char saved_id[KW_AUDIT_UUID_LEN + 1];
	memcpy(saved_id, c->id, sizeof(saved_id));
	err = kw_audit_stage_row(c, s, ev, &row);
	if (err != KW_OK)
		goto done;
	err = kw_audit_stage_head(c, s, &head);
	if (err != KW_OK)
		goto done;
	kw_db_stmt stmts[2] = {row.stmt, head.stmt};
	err = kw_db_exec_pipeline(db, stmts, 2, res);
	if (err == KW_ERR_EXISTS) {
		/* Our seq or chain id is taken: an earlier commit we thought had
		 * failed went through. Restart the chain when the caller rolls back. */
		c->desync = true;
	}
	if (err != KW_OK)
		goto done;
	err = kw_audit_head_check(c, &head, res[1]);
done:
	if (err != KW_OK) /* (staging may have started a new chain: then from its start) */
		c->pending = strcmp(saved_id, c->id) == 0 ? saved : c->committed;
	kw_db_result_free(res[0]);
	kw_db_result_free(res[1]);
	kw_audit_row_clear(&row);
	return err;
}

kw_err kw_audit_write_one(kw_audit_chain *c, kw_hsm_session *s, kw_db *db, const kw_audit_event *ev)
{
	kw_err err = KW_OK;
	bool committing = false;

	err = kw_audit_event_check(ev);
	if (err != KW_OK)
		return err;
	/* The row's own tenant scope, so the INSERT policy admits it. */
	err = kw_db_begin(db, ev->tenant_id, ev->user_id);
	if (err != KW_OK)
		return err;
	err = kw_audit_append(c, s, db, ev);
	if (err != KW_OK)
		goto done;
	committing = true;
	err = kw_db_commit(db);
done:
	if (err == KW_OK) {
		kw_audit_chain_committed(c);
	} else {
		kw_db_rollback(db);
		if (committing && err == KW_ERR_DB_UNAVAILABLE)
			kw_audit_chain_commit_unknown(c);
		else
			kw_audit_chain_rolled_back(c);
	}
	return err;
}

/* --- checkpoints ---------------------------------------------------------- */

void kw_audit_checkpoint_format(const kw_audit_checkpoint *cp, char *out, size_t cap)
{
	char mac[2 * KW_AUDIT_MAC_LEN + 1], head[2 * KW_AUDIT_MAC_LEN + 1];
	kw_hex_encode(cp->mac, KW_AUDIT_MAC_LEN, mac);
	kw_hex_encode(cp->head_mac, KW_AUDIT_MAC_LEN, head);
	snprintf(out, cap, "%s chain=%s seq=%" PRIu64 " key=%" PRIu32 " mac=%s head_mac=%s",
	         KW_AUDIT_CHECKPOINT_TAG, cp->chain_id, cp->seq, cp->key_version, mac, head);
}

/* Logs c's checkpoint if it moved since its last one (or all). Call with
 * registry_lock held. Returns whether it logged one. */
static bool log_checkpoint_locked(kw_audit_chain *c, bool all)
{
	const chain_state *h = &c->committed;
	if (!h->head_stored || h->head_seq != h->seq || (!all && h->seq == c->logged_seq))
		return false;
	kw_audit_checkpoint cp = {.seq = h->seq, .key_version = h->head_key};
	memcpy(cp.chain_id, c->id, sizeof(cp.chain_id));
	memcpy(cp.mac, h->mac, KW_AUDIT_MAC_LEN);
	memcpy(cp.head_mac, h->head_mac, KW_AUDIT_MAC_LEN);
	char line[256];
	kw_audit_checkpoint_format(&cp, line, sizeof(line));
	kw_log_always("%s", line);
	c->logged_seq = h->seq;
	return true;
}

size_t kw_audit_checkpoints_log(bool all)
{
	size_t n = 0;
	pthread_mutex_lock(&registry_lock);
	log_at_free = true;
	for (kw_audit_chain *c = registry; c != NULL; c = c->next)
		n += log_checkpoint_locked(c, all);
	pthread_mutex_unlock(&registry_lock);
	return n;
}
