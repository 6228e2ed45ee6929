/* module.c — loading the PKCS#11 module, choosing the token, logging in.
 *
 * The module is loaded through p11-kit and the token chosen by an RFC 7512
 * URI parsed by p11-kit: exactly one initialised, present token must
 * match. The user PIN is read from a file into an mlocked kw_secret,
 * checked against the token's PIN flags before every C_Login, never
 * logged, and never tried again once the token refused it. It stays in
 * that kw_secret only so that the service can log in again after the token
 * forgot the login (device removed, C_Logout elsewhere); kw_hsm_close
 * wipes it.
 *
 * kw_hsm keeps one session of its own open for its whole life: PKCS#11
 * logs an application out when its last session closes, and worker
 * sessions come and go. */
#include <openssl/evp.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>
#include <stdlib.h>
#include <string.h>

#include "hsm_internal.h"
#include "keyward/core/log.h"

/* A token that reports no usable limit gets this many sessions. */
#define KW_HSM_DEFAULT_SESSION_CAP 256u

static bool state_logged_in(CK_STATE st)
{
	return st == CKS_RO_USER_FUNCTIONS || st == CKS_RW_USER_FUNCTIONS;
}

CK_RV kw_hsm_login_ensure(kw_hsm *hsm, CK_SESSION_HANDLE h, bool *did_login)
{
	CK_RV rv;
	CK_SESSION_INFO si;
	CK_TOKEN_INFO ti;
	bool did = false;

	pthread_mutex_lock(&hsm->login_lock);
	rv = kw_p11_GetSessionInfo(hsm, h, &si);
	if (rv != CKR_OK)
		goto done;
	if (state_logged_in(si.state))
		goto done;
	/* Logged out: every private session object is gone (see login_gen). */
	atomic_fetch_add(&hsm->login_gen, 1);
	if (si.state == CKS_RW_SO_FUNCTIONS) {
		kw_err_log("hsm: the security officer is logged in to the token; refusing to work as SO");
		rv = CKR_USER_ANOTHER_ALREADY_LOGGED_IN;
		goto done;
	}
	rv = kw_p11_GetTokenInfo(hsm, hsm->slot, &ti);
	if (rv != CKR_OK)
		goto done;
	if (hsm->pin == NULL) {
		kw_err_log("hsm: the token refused the PIN earlier; it will not be tried again");
		rv = CKR_PIN_INCORRECT;
		goto done;
	}
	if (ti.flags & CKF_USER_PIN_LOCKED) {
		kw_err_log("hsm: the user PIN of the token is locked");
		rv = CKR_PIN_LOCKED;
		goto done;
	}
	if (ti.flags & CKF_USER_PIN_FINAL_TRY) {
		/* One more wrong PIN would lock the token: leave it to a human. */
		kw_err_log("hsm: the user PIN is on its final try; refusing to log in");
		rv = CKR_PIN_LOCKED;
		goto done;
	}
	if (!(ti.flags & CKF_USER_PIN_INITIALIZED)) {
		kw_err_log("hsm: the token has no user PIN set");
		rv = CKR_USER_PIN_NOT_INITIALIZED;
		goto done;
	}
	if (ti.flags & CKF_USER_PIN_COUNT_LOW)
		kw_warn("hsm: the token reports failed PIN attempts (count low)");
	rv = kw_p11_Login(hsm, h, kw_secret_data(hsm->pin), kw_secret_len(hsm->pin));
	if (rv == CKR_USER_ALREADY_LOGGED_IN) {
		rv = CKR_OK;
	} else if (rv == CKR_OK) {
		did = true;
	} else if (kw_hsm_rv_err(rv) == KW_ERR_PIN) {
		kw_err_log("hsm: the token refused the PIN (%s); it will not be tried again",
		           kw_hsm_rv_name(rv));
		kw_secret_free(hsm->pin);
		hsm->pin = NULL;
	}
done:
	pthread_mutex_unlock(&hsm->login_lock);
	if (rv == CKR_OK && did_login != NULL)
		*did_login = did;
	return rv;
}

/* Finds the one initialised token matching uri; sets hsm->slot and *ti. */
static kw_err find_token(kw_hsm *hsm, P11KitUri *uri, CK_TOKEN_INFO *ti_out)
{
	kw_err err;
	CK_RV rv;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG nslots = 0;
	size_t matches = 0;
	CK_SLOT_ID slot = 0;
	CK_TOKEN_INFO match_ti;

	memset(&match_ti, 0, sizeof(match_ti));

	/* The slot list may grow between the two calls: try a few times. */
	for (int tries = 0;; tries++) {
		rv = kw_p11_GetSlotList(hsm, NULL, &nslots);
		if (rv != CKR_OK) {
			err = kw_hsm_rv_err(rv);
			goto done;
		}
		free(slots);
		slots = calloc(nslots ? nslots : 1, sizeof(*slots));
		if (slots == NULL) {
			err = KW_ERR_NOMEM;
			goto done;
		}
		rv = kw_p11_GetSlotList(hsm, slots, &nslots);
		if (rv == CKR_BUFFER_TOO_SMALL && tries < 3)
			continue;
		if (rv != CKR_OK) {
			err = kw_hsm_rv_err(rv);
			goto done;
		}
		break;
	}
	for (CK_ULONG i = 0; i < nslots; i++) {
		CK_TOKEN_INFO ti;
		if (kw_p11_GetTokenInfo(hsm, slots[i], &ti) != CKR_OK)
			continue;
		/* SoftHSM always offers one blank token; it is never ours. */
		if (!(ti.flags & CKF_TOKEN_INITIALIZED))
			continue;
		if (!p11_kit_uri_match_token_info(uri, &ti))
			continue;
		if (matches++ == 0) {
			slot = slots[i];
			match_ti = ti;
		}
	}
	if (matches == 0) {
		kw_err_log("hsm: no initialised token matches the configured URI");
		err = KW_ERR_NOT_FOUND;
		goto done;
	}
	if (matches > 1) {
		kw_err_log("hsm: %zu tokens match the configured URI; name one (token=, serial=)", matches);
		err = KW_ERR_CONFIG;
		goto done;
	}
	hsm->slot = slot;
	*ti_out = match_ti;
	err = KW_OK;
done:
	free(slots);
	return err;
}

static unsigned session_cap(const kw_hsm_options *opt, const CK_TOKEN_INFO *ti)
{
	unsigned cap = KW_HSM_DEFAULT_SESSION_CAP;
	CK_ULONG tok = ti->ulMaxSessionCount;
	bool finite = tok != CK_EFFECTIVELY_INFINITE && tok != CK_UNAVAILABLE_INFORMATION && tok <= 65536;
	if (finite)
		cap = tok > 1 ? (unsigned)(tok - 1) : 1; /* one is the kw_hsm's own session */
	if (opt->max_sessions != 0) {
		if (finite && opt->max_sessions > cap)
			kw_warn("hsm: max_sessions %u exceeds what the token allows; using %u",
			        opt->max_sessions, cap);
		else
			cap = opt->max_sessions;
	}
	return cap;
}

kw_err kw_hsm_open(const kw_hsm_options *opt, kw_hsm **out)
{
	kw_err err;
	CK_RV rv;
	kw_hsm *hsm = NULL;
	P11KitUri *uri = NULL;
	CK_TOKEN_INFO ti;
	int r;

	memset(&ti, 0, sizeof(ti));
	if (opt == NULL || out == NULL)
		kw_misuse("kw_hsm_open: NULL argument");
	if (opt->module_path == NULL || opt->token_uri == NULL || opt->pin_file == NULL) {
		kw_err_log("hsm: module, token URI and PIN file must all be configured");
		return KW_ERR_CONFIG;
	}

	hsm = calloc(1, sizeof(*hsm));
	if (hsm == NULL)
		return KW_ERR_NOMEM;
	pthread_mutex_init(&hsm->login_lock, NULL);
	pthread_mutex_init(&hsm->admin_lock, NULL);
	pthread_mutex_init(&hsm->refresh_lock, NULL);
	pthread_mutex_init(&hsm->miss_lock, NULL);
	pthread_rwlock_init(&hsm->keys_lock, NULL);
	pthread_mutex_init(&hsm->subkeys_lock, NULL);
	hsm->admin.hsm = hsm;

	uri = p11_kit_uri_new();
	if (uri == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	/* The URI is not logged: RFC 7512 lets it carry a pin-value. */
	r = p11_kit_uri_parse(opt->token_uri, P11_KIT_URI_FOR_TOKEN, uri);
	if (r != P11_KIT_URI_OK) {
		kw_err_log("hsm: the token URI is not a valid PKCS#11 URI: %s", p11_kit_uri_message(r));
		err = KW_ERR_CONFIG;
		goto done;
	}

	err = kw_secret_read_file(opt->pin_file, &hsm->pin);
	if (err != KW_OK) {
		kw_err_log("hsm: cannot read the PIN file %s: %s", opt->pin_file, kw_err_str(err));
		if (err != KW_ERR_NOMEM)
			err = KW_ERR_CONFIG;
		goto done;
	}

	hsm->f = p11_kit_module_load(opt->module_path, 0);
	if (hsm->f == NULL) {
		kw_err_log("hsm: cannot load the PKCS#11 module %s: %s", opt->module_path, p11_kit_message());
		err = KW_ERR_CONFIG;
		goto done;
	}
	rv = kw_p11_initialize(hsm);
	if (rv != CKR_OK) {
		err = KW_ERR_HSM_UNAVAILABLE;
		goto done;
	}
	hsm->initialized = true;

	err = find_token(hsm, uri, &ti);
	if (err != KW_OK)
		goto done;
	hsm->cap = session_cap(opt, &ti);
	hsm->session_copies = !opt->token_objects_only;

	rv = kw_hsm_session_open_handle(hsm, &hsm->admin);
	if (rv == CKR_OK)
		rv = kw_hsm_login_ensure(hsm, hsm->admin.h, NULL);
	if (rv == CKR_OK)
		rv = kw_hsm_refresh_on(&hsm->admin);
	if (rv != CKR_OK) {
		err = kw_hsm_rv_err(rv);
		goto done;
	}
	kw_info("hsm: token ready (slot %lu, session cap %u)", (unsigned long)hsm->slot, hsm->cap);
	*out = hsm;
	hsm = NULL;
	err = KW_OK;
done:
	if (uri != NULL)
		p11_kit_uri_free(uri);
	kw_hsm_close(hsm);
	return err;
}

void kw_hsm_close(kw_hsm *hsm)
{
	if (hsm == NULL)
		return;
	if (atomic_load(&hsm->nsessions) != 0)
		kw_misuse("kw_hsm_close: sessions are still open");
	if (hsm->admin.open) {
		CK_SESSION_INFO si;
		if (kw_p11_GetSessionInfo(hsm, hsm->admin.h, &si) == CKR_OK && state_logged_in(si.state))
			(void)kw_p11_Logout(hsm, hsm->admin.h);
		(void)kw_p11_CloseSession(hsm, hsm->admin.h);
		hsm->admin.open = false;
	}
	if (hsm->initialized)
		(void)kw_p11_finalize(hsm);
	if (hsm->f != NULL)
		p11_kit_module_release(hsm->f);
	kw_hsm_keys_free(hsm);
	for (struct kw_hsm_subkey *sk = hsm->subkeys; sk != NULL;) {
		struct kw_hsm_subkey *next = sk->next;
		kw_secret_free(sk->key);
		free(sk);
		sk = next;
	}
	pthread_mutex_destroy(&hsm->subkeys_lock);
	kw_secret_free(hsm->pin);
	pthread_rwlock_destroy(&hsm->keys_lock);
	pthread_mutex_destroy(&hsm->refresh_lock);
	pthread_mutex_destroy(&hsm->miss_lock);
	pthread_mutex_destroy(&hsm->admin_lock);
	pthread_mutex_destroy(&hsm->login_lock);
	free(hsm);
}
