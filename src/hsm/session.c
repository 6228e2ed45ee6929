/* session.c — worker sessions, the session cap, and revive-and-retry-once.
 *
 * Each worker owns one kw_hsm_session; nothing here is shared between
 * threads except the counters. Every operation runs through kw_hsm_run:
 * when the token answers that the session died (closed, device removed,
 * user logged out) or that a key handle went stale, the session is
 * reopened, the user logged in again if the token forgot the login, the
 * key handles re-read, and the operation retried exactly once. A PIN is
 * never retried: kw_hsm_login_ensure refuses after one rejection.
 *
 * Session objects (test imports, and the copies of token keys each session
 * makes for its own operations) die with the session they live in; a
 * revive forgets the copies and the next operation makes them again.
 *
 * Why copies: SoftHSM re-checks the token's object files (open, fcntl
 * locks, fstat, close: about 15 system calls) on every operation that
 * names a token object, and not for a session object. A copy made with
 * C_CopyObject keeps CKA_SENSITIVE and CKA_EXTRACTABLE as they were (a
 * copy may only tighten them) and lives only in this session of this
 * process. A copy is used only while the table says its key is present
 * and still the same token object: kw_hsm_key_use looks the key up first,
 * and every refresh (which marks vanished keys gone) makes each session
 * destroy the copies of keys that went. A key destroyed by another
 * process stays usable here until this process next refreshes the table
 * (on a miss, after a token error, and at every housekeeping run). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hsm_internal.h"
#include "keyward/core/log.h"

CK_RV kw_hsm_session_open_handle(kw_hsm *hsm, kw_hsm_session *s)
{
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv = kw_p11_OpenSession(hsm, hsm->slot, &h);
	if (rv == CKR_OK) {
		s->h = h;
		s->open = true;
	}
	return rv;
}

/* A copy may be named only if it was made under the current login (a
 * logout ended it, and its handle may since name something else), of the
 * token object the table lists now, and not before that object appeared. */
static bool copy_alive(const kw_hsm_session *s, const struct kw_hsm_copy *c)
{
	return c->login == atomic_load(&s->hsm->login_gen);
}

static bool copy_current(kw_hsm_session *s, const struct kw_hsm_copy *c)
{
	CK_OBJECT_HANDLE now = CK_INVALID_HANDLE;
	uint_fast64_t changed = 0;
	return copy_alive(s, c) && kw_hsm_key_handle_since(s->hsm, c->k, &now, &changed) == CKR_OK &&
	       now == c->from && c->epoch >= changed;
}

void kw_hsm_copies_forget(kw_hsm_session *s, bool reopened)
{
	for (size_t i = 0; i < s->ncopies; i++)
		if (!reopened && s->copies[i].h != CK_INVALID_HANDLE && copy_alive(s, &s->copies[i]))
			(void)kw_p11_DestroyObject(s->hsm, s->h, s->copies[i].h);
	s->ncopies = 0;
}

void kw_hsm_copies_sweep(kw_hsm_session *s)
{
	uint_fast64_t epoch = atomic_load(&s->hsm->keys_epoch), login = atomic_load(&s->hsm->login_gen);
	if (s->ncopies == 0 || (epoch == s->copies_epoch && login == s->copies_login))
		return;
	size_t kept = 0;
	for (size_t i = 0; i < s->ncopies; i++) {
		struct kw_hsm_copy *c = &s->copies[i];
		if (copy_current(s, c)) {
			s->copies[kept++] = *c;
			continue;
		}
		if (c->h != CK_INVALID_HANDLE && copy_alive(s, c))
			(void)kw_p11_DestroyObject(s->hsm, s->h, c->h);
	}
	s->ncopies = kept;
	s->copies_epoch = epoch;
	s->copies_login = login;
}

/* A fresh copy must be what was asked for: a session object, sensitive
 * and not extractable (a token may ignore a template). */
static bool copy_is_sound(kw_hsm_session *s, CK_OBJECT_HANDLE h)
{
	CK_BBOOL tok = CK_TRUE, sens = CK_FALSE, ext = CK_TRUE;
	CK_ATTRIBUTE a[] = {
	    {CKA_TOKEN, &tok, sizeof(tok)},
	    {CKA_SENSITIVE, &sens, sizeof(sens)},
	    {CKA_EXTRACTABLE, &ext, sizeof(ext)},
	};
	return kw_p11_GetAttributeValue(s->hsm, s->h, h, a, 3) == CKR_OK && tok == CK_FALSE &&
	       sens == CK_TRUE && ext == CK_FALSE;
}

CK_RV kw_hsm_key_use(kw_hsm_session *s, const kw_hsm_key *k, CK_OBJECT_HANDLE *out)
{
	kw_hsm *hsm = s->hsm;
	CK_OBJECT_HANDLE tok = CK_INVALID_HANDLE;
	uint_fast64_t changed = 0;
	/* Epoch and login first: a refresh or login after this point makes
	 * the copy look old (and dropped next time), never current. */
	uint_fast64_t epoch = atomic_load(&hsm->keys_epoch), login = atomic_load(&hsm->login_gen);
	CK_RV rv = kw_hsm_key_handle_since(hsm, k, &tok, &changed);
	*out = tok;
	if (rv != CKR_OK || k->session_key || !hsm->session_copies)
		return rv;
	kw_hsm_copies_sweep(s);
	for (size_t i = 0; i < s->ncopies; i++) {
		const struct kw_hsm_copy *c = &s->copies[i];
		if (c->k == k && c->from == tok && c->epoch >= changed && c->login == login) {
			if (c->h != CK_INVALID_HANDLE)
				*out = c->h;
			return CKR_OK;
		}
	}
	if (s->ncopies == KW_HSM_COPIES)
		return CKR_OK; /* enough copies: this one uses the token object */
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &no, sizeof(no)}};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	rv = kw_p11_CopyObject(hsm, s->h, tok, tmpl, 1, &h);
	if (rv != CKR_OK) {
		/* A dead session or a stale handle: let kw_hsm_run repair and
		 * retry. Anything else (CKA_COPYABLE false, a token without
		 * C_CopyObject): work on the token object. */
		if (kw_hsm_rv_session_dead(rv) || kw_hsm_rv_stale_handles(rv))
			return rv;
		kw_info("hsm: keyward/%s/%lu: no session copy (%s); using the token object",
		        kw_key_family_name(k->family), (unsigned long)k->version, kw_hsm_rv_name(rv));
		h = CK_INVALID_HANDLE;
	} else if (!copy_is_sound(s, h)) {
		kw_warn("hsm: keyward/%s/%lu: the token's copy is not a sensitive session object; "
		        "using the token object",
		        kw_key_family_name(k->family), (unsigned long)k->version);
		(void)kw_p11_DestroyObject(hsm, s->h, h);
		h = CK_INVALID_HANDLE;
	}
	s->copies[s->ncopies++] =
	    (struct kw_hsm_copy){.k = k, .from = tok, .h = h, .epoch = epoch, .login = login};
	if (h != CK_INVALID_HANDLE)
		*out = h;
	return CKR_OK;
}

static bool state_logged_in(CK_STATE st)
{
	return st == CKS_RO_USER_FUNCTIONS || st == CKS_RW_USER_FUNCTIONS;
}

/* Repairs s after an attempt failed with cause. */
static CK_RV session_recover(kw_hsm_session *s, CK_RV cause)
{
	kw_hsm *hsm = s->hsm;
	bool reopen = !s->open || kw_hsm_rv_session_dead(cause);
	bool refresh = kw_hsm_rv_stale_handles(cause);
	bool did_login = false;
	CK_RV rv;

	if (!reopen) {
		/* A stale handle may only mean the token logged us out. */
		CK_SESSION_INFO si;
		rv = kw_p11_GetSessionInfo(hsm, s->h, &si);
		if (rv != CKR_OK || !state_logged_in(si.state))
			reopen = true;
	}
	if (reopen) {
		/* A handle the token already invalidated may have been given to
		 * another thread's new session: never close it again. */
		if (s->open && cause != CKR_SESSION_HANDLE_INVALID && cause != CKR_SESSION_CLOSED)
			(void)kw_p11_CloseSession(hsm, s->h);
		s->open = false;
		rv = kw_hsm_session_open_handle(hsm, s);
		if (rv != CKR_OK)
			return rv;
		atomic_fetch_add(&hsm->st_revived, 1);
		kw_warn("hsm: session reopened after %s", kw_hsm_rv_name(cause));
	}
	rv = kw_hsm_login_ensure(hsm, s->h, &did_login);
	if (rv != CKR_OK) {
		kw_hsm_copies_forget(s, true); /* never name them without a login */
		return rv;
	}
	/* The copies may be what the failure was about: made again after the
	 * repair (destroyed first if still alive). */
	kw_hsm_copies_forget(s, reopen);
	/* A new login gives private objects new handles on some tokens
	 * (SoftHSM among them): look the keys up again. */
	if (did_login)
		refresh = true;
	if (refresh)
		rv = kw_hsm_refresh_on(s);
	return rv;
}

static bool recoverable(const kw_hsm_session *s, CK_RV rv)
{
	return !s->open || kw_hsm_rv_session_dead(rv) || kw_hsm_rv_stale_handles(rv);
}

kw_err kw_hsm_run(kw_hsm_session *s, kw_hsm_op op, kw_hsm_attempt_fn fn, void *arg)
{
	struct timespec t0, t1;
	CK_RV rv = CKR_SESSION_HANDLE_INVALID;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (s->open) {
		kw_hsm_copies_sweep(s); /* whatever the operation: idle copies go too */
		rv = fn(s, arg);
	}
	if (rv != CKR_OK && recoverable(s, rv)) {
		if (s->open)
			kw_warn("hsm: %s failed with %s; recovering the session and retrying once",
			        kw_hsm_op_name(op), kw_hsm_rv_name(rv));
		CK_RV r2 = session_recover(s, rv);
		rv = r2 == CKR_OK ? fn(s, arg) : r2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	int64_t usec = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000;
	kw_hsm_stats_add(s->hsm, op, rv == CKR_OK, usec > 0 ? (uint64_t)usec : 0);
	return rv == CKR_OK ? KW_OK : kw_hsm_rv_err(rv);
}

kw_err kw_hsm_session_open(kw_hsm *hsm, kw_hsm_session **out)
{
	kw_err err;
	CK_RV rv;
	kw_hsm_session *s = NULL;
	bool did_login = false;

	if (hsm == NULL || out == NULL)
		kw_misuse("kw_hsm_session_open: NULL argument");
	if (atomic_fetch_add(&hsm->nsessions, 1) >= hsm->cap) {
		atomic_fetch_sub(&hsm->nsessions, 1);
		kw_warn("hsm: session cap (%u) reached", hsm->cap);
		return KW_ERR_BUSY;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		atomic_fetch_sub(&hsm->nsessions, 1);
		return KW_ERR_NOMEM;
	}
	s->hsm = hsm;
	s->counted = true;
	rv = kw_hsm_session_open_handle(hsm, s);
	/* The application is normally logged in through the kw_hsm's own
	 * session; if the token forgot that, log in and re-read handles. */
	if (rv == CKR_OK)
		rv = kw_hsm_login_ensure(hsm, s->h, &did_login);
	if (rv == CKR_OK && did_login)
		rv = kw_hsm_refresh_on(s);
	if (rv != CKR_OK) {
		err = kw_hsm_rv_err(rv);
		goto done;
	}
	*out = s;
	s = NULL;
	err = KW_OK;
done:
	kw_hsm_session_close(s);
	return err;
}

void kw_hsm_session_close(kw_hsm_session *s)
{
	if (s == NULL)
		return;
	if (s->open)
		(void)kw_p11_CloseSession(s->hsm, s->h);
	struct kw_hsm_key *k = s->session_keys;
	while (k != NULL) {
		struct kw_hsm_key *next = k->next_session_key;
		free(k);
		k = next;
	}
	if (s->counted)
		atomic_fetch_sub(&s->hsm->nsessions, 1);
	kw_secret_free(s->rand_pool);
	free(s);
}

static CK_RV ping_attempt(kw_hsm_session *s, void *arg)
{
	CK_SESSION_INFO si;
	CK_RV rv = kw_p11_GetSessionInfo(s->hsm, s->h, &si);
	if (rv == CKR_OK && !state_logged_in(si.state))
		rv = CKR_USER_NOT_LOGGED_IN;
	return rv;
}

kw_err kw_hsm_session_ping(kw_hsm_session *s)
{
	return kw_hsm_run(s, KW_HSM_OP_OTHER, ping_attempt, NULL);
}

kw_err kw_hsm_test_session_copies(kw_hsm_session *s, kw_hsm_key_info *infos, size_t cap, size_t *n)
{
	*n = 0;
	for (size_t i = 0; i < s->ncopies && *n < cap; i++) {
		const struct kw_hsm_copy *c = &s->copies[i];
		if (c->h == CK_INVALID_HANDLE)
			continue;
		CK_BBOOL tok = CK_TRUE, sens = CK_FALSE, ext = CK_TRUE, never = CK_FALSE, always = CK_FALSE;
		CK_ATTRIBUTE a[] = {
		    {CKA_TOKEN, &tok, sizeof(tok)},
		    {CKA_SENSITIVE, &sens, sizeof(sens)},
		    {CKA_EXTRACTABLE, &ext, sizeof(ext)},
		    {CKA_NEVER_EXTRACTABLE, &never, sizeof(never)},
		    {CKA_ALWAYS_SENSITIVE, &always, sizeof(always)},
		};
		CK_RV rv = kw_p11_GetAttributeValue(s->hsm, s->h, c->h, a, 5);
		if (rv != CKR_OK)
			return kw_hsm_rv_err(rv);
		if (tok != CK_FALSE)
			return KW_ERR_HSM;
		kw_hsm_key_info *info = &infos[(*n)++];
		memset(info, 0, sizeof(*info));
		(void)kw_hsm_label_format(info->label, sizeof(info->label), true, c->k->family,
		                          c->k->version);
		info->family = c->k->family;
		info->version = c->k->version;
		info->is_private_half = true;
		info->sensitive = sens == CK_TRUE;
		info->extractable = ext != CK_FALSE;
		info->never_extractable = never == CK_TRUE;
		info->always_sensitive = always == CK_TRUE;
	}
	return KW_OK;
}

void kw_hsm_test_kill_session(kw_hsm_session *s, bool logout)
{
	if (logout)
		(void)kw_p11_Logout(s->hsm, s->h);
	else
		(void)kw_p11_CloseSession(s->hsm, s->h);
	/* s->open stays true on purpose: the pool must find out by itself. */
}

void kw_hsm_session_sweep(kw_hsm_session *s)
{
	if (s != NULL && s->open)
		kw_hsm_copies_sweep(s);
}
