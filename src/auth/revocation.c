/* revocation.c — the in-process copy of jwt_revocations, kept fresh by one
 * listener thread (DESIGN §5.4).
 *
 * The thread owns its PostgreSQL connection (application_name
 * keyward-revocations). Per connection: LISTEN keyward_revocations, then
 * load every unexpired row into new sets and swap them in at once (so a
 * revocation committed between the two is either in the load or announced
 * after it), then apply notifications and run a cheap query on the table
 * every KW_RC_HEARTBEAT_MS. A notification is a cue (migration 0014): its
 * payload must be a row id, and the row it names is read back; a payload
 * that is not an id, or names no row, is ignored and counted, so a forged
 * notification (any role may NOTIFY) revokes nothing and costs no reload.
 * Each success records the time of contact on the monotonic clock. Any
 * error (connection lost, table missing, a query that does not answer in
 * time) marks the list broken, closes the connection, waits (backoff up
 * to 1 s) and starts over with a full load. Every wait of the thread also watches an eventfd, so
 * stop is prompt even while connecting or querying.
 *
 * Checks never wait for the thread: they read the freshness flag and the
 * last contact time (atomics), so a hung thread still fails closed after
 * stale_ms. Ids are held as 16 bytes (jti: 32 hex digits; sid: a uuid, any
 * case), in two open-addressing sets (linear probing, power-of-two
 * capacity, at most half full, no deletion in place: a purge rebuilds)
 * under one rwlock. Checks take the read lock and never allocate. An id
 * that is not in the table's format cannot be listed, so it is not revoked.
 *
 * Locking: rc->lock guards both sets; rc->mu guards nothing but the ready
 * condition variable. Everything else shared is atomic. */
#include "keyward/auth/revocation.h"
#include "keyward/core/text.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "keyward/core/log.h"
#include "keyward/db/repo_revocations.h"

#define KW_RC_APP_NAME       "keyward-revocations"
#define KW_RC_HEARTBEAT_MS   500
#define KW_RC_QUERY_MS       5000 /* a query (or connect) slower than this is an error */
#define KW_RC_CONNECT_MS     10000
#define KW_RC_BACKOFF_MIN_MS 100
#define KW_RC_BACKOFF_MAX_MS 1000
#define KW_RC_PURGE_MS       60000
#define KW_RC_PURGE_GRACE_S  60 /* keep entries this long past expiry: callers' clocks may lag */
#define KW_RC_MIN_CAP        64
#define KW_ID_LEN            16
#define KW_SID_TEXT_LEN      36

/* exp == 0 marks an empty slot: nothing that old is ever inserted. */
typedef struct rc_slot {
	unsigned char key[KW_ID_LEN];
	int64_t exp;
} rc_slot;

typedef struct rc_set {
	rc_slot *slots;
	size_t cap; /* a power of two, or 0 */
	size_t used;
} rc_set;

struct kw_revcache {
	char *conninfo; /* may carry a password: wiped on free, never logged */
	int stale_ms;
	uint64_t seed[2];

	pthread_rwlock_t lock;
	rc_set jti, sid;
	uint64_t generation; /* bumped by every write to the sets */

	pthread_mutex_t mu;
	pthread_cond_t ready_cv;

	atomic_bool fresh;          /* loaded on the current connection, no error since */
	_Atomic int64_t last_ok_ms; /* monotonic time of the last successful contact */
	atomic_bool stopping;
	int wake_fd;
	pthread_t thread;

	atomic_ullong loads, notifications, refused_stale, ignored;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

/* ---- ids ---------------------------------------------------------------- */

static bool parse_jti(const char *s, unsigned char out[KW_ID_LEN])
{
	return strnlen(s, KW_JTI_HEX_LEN + 1) == KW_JTI_HEX_LEN && kw_hex_decode(s, KW_ID_LEN, out);
}

/* ---- sets --------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static size_t slot_of(const kw_revcache *rc, const unsigned char key[KW_ID_LEN], size_t cap)
{
	uint64_t a, b;
	memcpy(&a, key, 8);
	memcpy(&b, key + 8, 8);
	return (size_t)(mix64(a ^ rc->seed[0]) ^ mix64(b ^ rc->seed[1])) & (cap - 1);
}

/* The expiry of key, or 0 when absent. Call with the lock held. */
static int64_t set_find(const kw_revcache *rc, const rc_set *set, const unsigned char key[KW_ID_LEN])
{
	if (set->cap == 0)
		return 0;
	for (size_t i = slot_of(rc, key, set->cap);; i = (i + 1) & (set->cap - 1)) {
		const rc_slot *sl = &set->slots[i];
		if (sl->exp == 0)
			return 0;
		if (memcmp(sl->key, key, KW_ID_LEN) == 0)
			return sl->exp;
	}
}

/* Inserts into a set known to have room; keeps the later expiry. */
static void set_put_nogrow(const kw_revcache *rc, rc_set *set, const unsigned char key[KW_ID_LEN],
                           int64_t exp)
{
	for (size_t i = slot_of(rc, key, set->cap);; i = (i + 1) & (set->cap - 1)) {
		rc_slot *sl = &set->slots[i];
		if (sl->exp == 0) {
			memcpy(sl->key, key, KW_ID_LEN);
			sl->exp = exp;
			set->used++;
			return;
		}
		if (memcmp(sl->key, key, KW_ID_LEN) == 0) {
			if (exp > sl->exp)
				sl->exp = exp;
			return;
		}
	}
}

static kw_err set_init(rc_set *set, size_t want)
{
	size_t cap = KW_RC_MIN_CAP;
	while (cap < 2 * want) {
		if (cap > SIZE_MAX / 4)
			return KW_ERR_NOMEM;
		cap *= 2;
	}
	set->slots = calloc(cap, sizeof(*set->slots));
	if (set->slots == NULL)
		return KW_ERR_NOMEM;
	set->cap = cap;
	set->used = 0;
	return KW_OK;
}

static void set_free(rc_set *set)
{
	free(set->slots);
	set->slots = NULL;
	set->cap = set->used = 0;
}

/* Copies the entries of src with exp >= keep_from into a fresh dst. */
static kw_err set_copy_live(const kw_revcache *rc, const rc_set *src, int64_t keep_from, size_t extra,
                            rc_set *dst)
{
	kw_err err = set_init(dst, src->used + extra);
	if (err != KW_OK)
		return err;
	for (size_t i = 0; i < src->cap; i++) {
		if (src->slots[i].exp != 0 && src->slots[i].exp >= keep_from)
			set_put_nogrow(rc, dst, src->slots[i].key, src->slots[i].exp);
	}
	return KW_OK;
}

/* Inserts, growing when half full. Call with the write lock held. */
static kw_err set_put(const kw_revcache *rc, rc_set *set, const unsigned char key[KW_ID_LEN], int64_t exp)
{
	if (2 * (set->used + 1) > set->cap) {
		rc_set bigger;
		kw_err err = set_copy_live(rc, set, INT64_MIN, set->used, &bigger);
		if (err != KW_OK)
			return err;
		set_free(set);
		*set = bigger;
	}
	set_put_nogrow(rc, set, key, exp);
	return KW_OK;
}

/* ---- freshness ---------------------------------------------------------- */

static bool is_fresh(kw_revcache *rc)
{
	if (!atomic_load(&rc->fresh))
		return false;
	return mono_ms() - atomic_load(&rc->last_ok_ms) <= rc->stale_ms;
}

/* A successful contact (after a full load: the list is fresh again). Wakes
 * kw_revcache_wait_ready, which may also be waiting out a stale spell. */
static void mark_contact(kw_revcache *rc)
{
	pthread_mutex_lock(&rc->mu);
	atomic_store(&rc->last_ok_ms, mono_ms());
	atomic_store(&rc->fresh, true);
	pthread_cond_broadcast(&rc->ready_cv);
	pthread_mutex_unlock(&rc->mu);
}

/* ---- the listener thread ------------------------------------------------ */

/* Waits for events on fd (-1: none) or the wake fd, until deadline_ms
 * (monotonic). 1: fd ready; 0: timeout; -1: stopping or poll failed. */
static int wait_fd(void *arg, int fd, short events, int64_t deadline_ms)
{
	kw_revcache *rc = arg;
	if (atomic_load(&rc->stopping))
		return -1;
	return kw_listener_poll(rc->wake_fd, "revocations", fd, events, deadline_ms);
}

/* Reads the full list into new sets and swaps them in. */
static kw_err rc_load(kw_revcache *rc, kw_listener *l, kw_log_level level)
{
	kw_db_result *res = NULL;
	rc_set jti = {0}, sid = {0}, old_jti, old_sid;
	kw_err err = kw_revocations_load(l, level, &res);
	if (err != KW_OK)
		return err;
	int n = kw_db_nrows(res);
	if (kw_db_ncols(res) != 3) {
		err = KW_ERR_INTERNAL;
		goto done;
	}
	if ((err = set_init(&jti, (size_t)n)) != KW_OK || (err = set_init(&sid, (size_t)n)) != KW_OK)
		goto done;
	for (int i = 0; i < n; i++) {
		unsigned char key[KW_ID_LEN];
		char *end = NULL;
		const char *exp_text = kw_db_value(res, i, 2), *jti_text = kw_db_value(res, i, 0),
		           *sid_text = kw_db_value(res, i, 1);
		int64_t exp = exp_text == NULL ? 0 : strtoll(exp_text, &end, 10);
		bool ok = exp > 0 && end != NULL && *end == '\0';
		if (ok && jti_text != NULL) {
			ok = parse_jti(jti_text, key);
			if (ok)
				set_put_nogrow(rc, &jti, key, exp);
		} else if (ok && sid_text != NULL) {
			ok = kw_uuid_parse(sid_text, key);
			if (ok)
				set_put_nogrow(rc, &sid, key, exp);
		} else {
			ok = false;
		}
		if (!ok) {
			kw_log(level, "revocations: row %d of the list is malformed", i);
			err = KW_ERR_INTERNAL;
			goto done;
		}
	}
	pthread_rwlock_wrlock(&rc->lock);
	old_jti = rc->jti;
	old_sid = rc->sid;
	rc->jti = jti;
	rc->sid = sid;
	rc->generation++;
	pthread_rwlock_unlock(&rc->lock);
	jti = old_jti;
	sid = old_sid;
	atomic_fetch_add(&rc->loads, 1);
	kw_debug("revocations: loaded %d entries", n);
done:
	set_free(&jti);
	set_free(&sid);
	kw_db_result_free(res);
	return err;
}

/* Records one id; false when the id is malformed or memory ran out. */
static bool rc_put(kw_revcache *rc, const char *jti, const char *sid, int64_t exp)
{
	unsigned char jk[KW_ID_LEN], sk[KW_ID_LEN];
	bool has_jti = jti != NULL, has_sid = sid != NULL;
	kw_err err = KW_OK;

	if ((has_jti && !parse_jti(jti, jk)) || (has_sid && !kw_uuid_parse(sid, sk)) || exp <= 0)
		return false;
	if (exp < wall_s() - KW_RC_PURGE_GRACE_S)
		return true; /* would be purged at once; ignored by every check */
	pthread_rwlock_wrlock(&rc->lock);
	if (has_jti)
		err = set_put(rc, &rc->jti, jk, exp);
	if (err == KW_OK && has_sid)
		err = set_put(rc, &rc->sid, sk, exp);
	rc->generation++;
	pthread_rwlock_unlock(&rc->lock);
	if (err != KW_OK)
		kw_err_log("revocations: out of memory recording a revocation");
	return err == KW_OK;
}

/* A notification is a cue: its payload must be a row id, which is read
 * back from the table; anything else is ignored and counted (never a
 * reload: a forged notification costs nothing). */
#define KW_RC_MAX_CUES 100000 /* past this many at once: reload instead */

typedef struct cues {
	kw_revcache *rc;
	int64_t *id;
	size_t n, cap;
	bool overflow;
} cues;

static bool collect_cue(void *arg, const char *payload)
{
	cues *c = arg;
	size_t n = strnlen(payload, 20);
	bool digits = n > 0 && n < 20 && payload[0] != '0' && payload[n] == '\0';
	for (size_t i = 0; digits && i < n; i++)
		digits = payload[i] >= '0' && payload[i] <= '9';
	if (!digits) {
		atomic_fetch_add(&c->rc->ignored, 1);
		return true;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 64;
		int64_t *g = cap <= KW_RC_MAX_CUES ? realloc(c->id, cap * sizeof(*g)) : NULL;
		if (g == NULL) {
			c->overflow = true;
			return true;
		}
		c->id = g;
		c->cap = cap;
	}
	c->id[c->n++] = (int64_t)strtoll(payload, NULL, 10);
	return true;
}

/* Reads the rows of up to 64 cues and records them. */
static kw_err apply_cues(kw_revcache *rc, kw_listener *l, const int64_t *ids, size_t n)
{
	kw_db_result *res = NULL;
	kw_err err = kw_revocations_by_ids(l, ids, n, KW_LOG_WARN, &res);
	if (err != KW_OK)
		return err;
	int rows = kw_db_nrows(res);
	for (int i = 0; i < rows; i++) {
		const char *exp = kw_db_value(res, i, 2);
		if (!rc_put(rc, kw_db_value(res, i, 0), kw_db_value(res, i, 1),
		            exp ? strtoll(exp, NULL, 10) : 0))
			kw_warn("revocations: row %s of the list is malformed", kw_db_value(res, i, 3));
		else
			atomic_fetch_add(&rc->notifications, 1);
	}
	if ((size_t)rows < n)
		atomic_fetch_add(&rc->ignored, n - (size_t)rows); /* named no row */
	kw_db_result_free(res);
	return KW_OK;
}

/* Applies every queued notification by reading the rows they name, 64 at
 * a time; false when that cannot be done (then the list is reloaded, so
 * nothing is lost). */
static bool drain_notifies(kw_revcache *rc, kw_listener *l)
{
	cues c = {.rc = rc};
	(void)kw_listener_drain(l, KW_REVOCATIONS_CHANNEL, collect_cue, &c);
	bool ok = !c.overflow;
	if (c.overflow)
		kw_warn("revocations: more than %d notifications at once; reloading", KW_RC_MAX_CUES);
	for (size_t at = 0; ok && at < c.n; at += 64)
		ok = apply_cues(rc, l, c.id + at, c.n - at < 64 ? c.n - at : 64) == KW_OK;
	free(c.id);
	return ok;
}

/* Drops entries past expiry (with a grace) by rebuilding both sets: built
 * under the read lock, so checks go on, and swapped in only if nothing was
 * written meanwhile. False when it has to be tried again. */
static bool rc_purge(kw_revcache *rc)
{
	rc_set jti = {0}, sid = {0};
	int64_t keep_from = wall_s() - KW_RC_PURGE_GRACE_S;
	bool swapped = false;

	pthread_rwlock_rdlock(&rc->lock);
	uint64_t gen = rc->generation;
	kw_err err = set_copy_live(rc, &rc->jti, keep_from, 0, &jti);
	if (err == KW_OK)
		err = set_copy_live(rc, &rc->sid, keep_from, 0, &sid);
	pthread_rwlock_unlock(&rc->lock);
	if (err != KW_OK)
		goto done;
	pthread_rwlock_wrlock(&rc->lock);
	if (rc->generation == gen) {
		rc_set t = rc->jti;
		rc->jti = jti;
		jti = t;
		t = rc->sid;
		rc->sid = sid;
		sid = t;
		rc->generation++;
		swapped = true;
	}
	pthread_rwlock_unlock(&rc->lock);
done:
	set_free(&jti);
	set_free(&sid);
	return swapped;
}

/* One connection's life: LISTEN, load, then notifications and heartbeats
 * until an error or stop. Returns true if the list was loaded. */
static bool rc_session(kw_revcache *rc, kw_log_level level)
{
	kw_listener_opts opts = {.conninfo = rc->conninfo,
	                         .app_name = KW_RC_APP_NAME,
	                         .log_name = "revocations",
	                         .wait = wait_fd,
	                         .wait_arg = rc,
	                         .connect_ms = KW_RC_CONNECT_MS,
	                         .query_ms = KW_RC_QUERY_MS};
	kw_listener *conn = kw_listener_connect(&opts, level);
	bool loaded = false;
	int64_t next_beat, next_purge;

	if (conn == NULL)
		return false;
	if (kw_revocations_listen(conn, level) != KW_OK || rc_load(rc, conn, level) != KW_OK)
		goto done;
	mark_contact(rc);
	loaded = true;
	kw_info("revocations: list loaded, listening");
	next_beat = mono_ms() + KW_RC_HEARTBEAT_MS;
	next_purge = mono_ms() + KW_RC_PURGE_MS;
	if (!drain_notifies(rc, conn))
		goto done;
	while (!atomic_load(&rc->stopping)) {
		int w = wait_fd(rc, kw_listener_fd(conn), POLLIN, next_beat);
		if (w < 0)
			goto done;
		if (w > 0) {
			if (!kw_listener_consume(conn))
				goto done;
			if (!drain_notifies(rc, conn))
				goto done;
		}
		if (mono_ms() < next_beat)
			continue;
		if (kw_revocations_heartbeat(conn, KW_LOG_WARN) != KW_OK)
			goto done;
		mark_contact(rc);
		next_beat = mono_ms() + KW_RC_HEARTBEAT_MS;
		if (!drain_notifies(rc, conn))
			goto done;
		if (mono_ms() >= next_purge)
			next_purge = mono_ms() + (rc_purge(rc) ? KW_RC_PURGE_MS : KW_RC_HEARTBEAT_MS);
	}
done:
	atomic_store(&rc->fresh, false);
	kw_listener_close(conn);
	return loaded;
}

static void *rc_thread(void *arg)
{
	kw_revcache *rc = arg;
	int backoff = KW_RC_BACKOFF_MIN_MS;
	unsigned failures = 0;

	while (!atomic_load(&rc->stopping)) {
		/* Say it at warn the first time and every 60th, quieter between. */
		kw_log_level level = failures % 60 == 0 ? KW_LOG_WARN : KW_LOG_DEBUG;
		if (rc_session(rc, level)) {
			backoff = KW_RC_BACKOFF_MIN_MS;
			failures = 0;
			if (!atomic_load(&rc->stopping))
				kw_warn("revocations: list not fresh; reconnecting");
		} else {
			failures++;
		}
		if (wait_fd(rc, -1, 0, mono_ms() + backoff) < 0)
			break;
		backoff = backoff * 2 > KW_RC_BACKOFF_MAX_MS ? KW_RC_BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

/* ---- API ---------------------------------------------------------------- */

static void rc_free(kw_revcache *rc)
{
	if (rc->wake_fd >= 0)
		close(rc->wake_fd);
	set_free(&rc->jti);
	set_free(&rc->sid);
	pthread_cond_destroy(&rc->ready_cv);
	pthread_mutex_destroy(&rc->mu);
	pthread_rwlock_destroy(&rc->lock);
	if (rc->conninfo != NULL) {
		OPENSSL_cleanse(rc->conninfo, strlen(rc->conninfo));
		free(rc->conninfo);
	}
	free(rc);
}

kw_err kw_revcache_start(const char *conninfo, int stale_ms, kw_revcache **out)
{
	kw_revcache *rc = NULL;
	pthread_condattr_t ca;
	kw_err err = KW_OK;

	if (conninfo == NULL || out == NULL)
		kw_misuse("kw_revcache_start: NULL argument");
	if (stale_ms < 1000)
		return KW_ERR_INVALID;
	rc = calloc(1, sizeof(*rc));
	if (rc == NULL)
		return KW_ERR_NOMEM;
	rc->wake_fd = -1;
	rc->stale_ms = stale_ms;
	pthread_rwlock_init(&rc->lock, NULL);
	pthread_mutex_init(&rc->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&rc->ready_cv, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&rc->fresh, false);
	atomic_init(&rc->last_ok_ms, 0);
	atomic_init(&rc->stopping, false);
	if (RAND_bytes((unsigned char *)rc->seed, sizeof(rc->seed)) != 1) {
		err = KW_ERR_INTERNAL;
		goto fail;
	}
	rc->conninfo = strdup(conninfo);
	if (rc->conninfo == NULL || set_init(&rc->jti, 0) != KW_OK || set_init(&rc->sid, 0) != KW_OK) {
		err = KW_ERR_NOMEM;
		goto fail;
	}
	rc->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (rc->wake_fd < 0) {
		err = KW_ERR_IO;
		goto fail;
	}
	if (pthread_create(&rc->thread, NULL, rc_thread, rc) != 0) {
		err = KW_ERR_NOMEM;
		goto fail;
	}
	*out = rc;
	return KW_OK;
fail:
	rc_free(rc);
	return err;
}

void kw_revcache_stop(kw_revcache *rc)
{
	uint64_t one = 1;

	if (rc == NULL)
		return;
	atomic_store(&rc->stopping, true);
	if (write(rc->wake_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		kw_warn("revocations: cannot wake the listener: errno %d", errno);
	pthread_join(rc->thread, NULL);
	rc_free(rc);
}

kw_err kw_revcache_check(kw_revcache *rc, const char *jti, const char *sid, int64_t now_unix)
{
	unsigned char jk[KW_ID_LEN], sk[KW_ID_LEN];
	bool has_jti, has_sid, revoked = false;

	if (rc == NULL)
		kw_misuse("kw_revcache_check: NULL cache");
	if (!is_fresh(rc)) {
		atomic_fetch_add(&rc->refused_stale, 1);
		return KW_ERR_DB_UNAVAILABLE;
	}
	has_jti = jti != NULL && parse_jti(jti, jk);
	has_sid = sid != NULL && kw_uuid_parse(sid, sk);
	if (!has_jti && !has_sid)
		return KW_OK;
	pthread_rwlock_rdlock(&rc->lock);
	if (has_jti) {
		int64_t exp = set_find(rc, &rc->jti, jk);
		revoked = exp != 0 && exp >= now_unix;
	}
	if (!revoked && has_sid) {
		int64_t exp = set_find(rc, &rc->sid, sk);
		revoked = exp != 0 && exp >= now_unix;
	}
	pthread_rwlock_unlock(&rc->lock);
	return revoked ? KW_ERR_VERIFY : KW_OK;
}

void kw_revcache_add(kw_revcache *rc, const char *jti, const char *sid, int64_t expires_unix)
{
	if (rc == NULL)
		kw_misuse("kw_revcache_add: NULL cache");
	/* Each id on its own: one malformed id must not drop the other. */
	if (jti != NULL && !rc_put(rc, jti, NULL, expires_unix))
		kw_warn("revocations: a jti was not recorded (malformed, or no memory)");
	if (sid != NULL && !rc_put(rc, NULL, sid, expires_unix))
		kw_warn("revocations: a sid was not recorded (malformed, or no memory)");
}

bool kw_revcache_ready(kw_revcache *rc)
{
	return rc != NULL && is_fresh(rc);
}

bool kw_revcache_wait_ready(kw_revcache *rc, int timeout_ms)
{
	struct timespec until;
	bool ready;

	if (rc == NULL)
		return false;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&rc->mu);
	while (!(ready = is_fresh(rc))) {
		if (pthread_cond_timedwait(&rc->ready_cv, &rc->mu, &until) == ETIMEDOUT) {
			ready = is_fresh(rc);
			break;
		}
	}
	pthread_mutex_unlock(&rc->mu);
	return ready;
}

void kw_revcache_stats_get(kw_revcache *rc, kw_revcache_stats *out)
{
	int64_t now = wall_s();
	uint64_t live = 0;

	if (rc == NULL || out == NULL)
		kw_misuse("kw_revcache_stats_get: NULL argument");
	pthread_rwlock_rdlock(&rc->lock);
	for (size_t i = 0; i < rc->jti.cap; i++)
		live += rc->jti.slots[i].exp != 0 && rc->jti.slots[i].exp >= now;
	for (size_t i = 0; i < rc->sid.cap; i++)
		live += rc->sid.slots[i].exp != 0 && rc->sid.slots[i].exp >= now;
	pthread_rwlock_unlock(&rc->lock);
	out->entries = live;
	out->loads = atomic_load(&rc->loads);
	out->notifications = atomic_load(&rc->notifications);
	out->refused_stale = atomic_load(&rc->refused_stale);
	out->ignored = atomic_load(&rc->ignored);
}
