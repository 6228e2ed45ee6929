/* keys.c — keyward's key objects: labels, the key table, and the calls
 * that create, find, list and destroy keys in the token.
 *
 * Every long-lived key is a token object labelled keyward/<family>/<n>
 * (CKA_ID "<family>/<n>") created with exactly the attributes of DESIGN §3:
 * sensitive, never extractable, usable only for its one purpose. Key
 * objects are found once (at open, after a generate/destroy, or when a
 * handle went stale) by enumerating the token's key objects and parsing
 * their labels; their handles live in a table under hsm->keys_lock.
 *
 * Table entries are never freed while the kw_hsm lives, so a kw_hsm_key
 * pointer stays valid: a key that disappeared is only marked gone. This
 * file never reads a key value: there is no call here that could. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hsm_internal.h"
#include "keyward/core/log.h"

static const char *const family_names[KW_KEY_FAMILY_COUNT] = {
    [KW_KEY_KEK] = "kek", [KW_KEY_DERIVE] = "derive", [KW_KEY_PEPPER] = "pepper",
    [KW_KEY_JWT] = "jwt", [KW_KEY_AUDIT] = "audit",
};

/* DER of the OID 1.2.840.10045.3.1.7 (prime256v1 / P-256). */
static const unsigned char p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

#define LABEL_PREFIX "keyward/"
#define LABEL_MAX    64

const char *kw_key_family_name(kw_key_family f)
{
	if ((unsigned)f >= KW_KEY_FAMILY_COUNT)
		return "unknown";
	return family_names[f];
}

bool kw_hsm_label_parse(const char *label, size_t len, kw_key_family *f, uint32_t *version)
{
	size_t plen = strlen(LABEL_PREFIX);
	if (len <= plen || memcmp(label, LABEL_PREFIX, plen) != 0)
		return false;
	const char *p = label + plen, *end = label + len;
	const char *slash = memchr(p, '/', (size_t)(end - p));
	if (slash == NULL)
		return false;
	int fam = -1;
	for (int i = 0; i < KW_KEY_FAMILY_COUNT; i++) {
		size_t n = strlen(family_names[i]);
		if ((size_t)(slash - p) == n && memcmp(p, family_names[i], n) == 0)
			fam = i;
	}
	if (fam < 0)
		return false;
	p = slash + 1;
	if (p == end || end - p > 10 || *p == '0')
		return false;
	uint64_t v = 0;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v > UINT32_MAX)
		return false;
	*f = (kw_key_family)fam;
	*version = (uint32_t)v;
	return true;
}

size_t kw_hsm_label_format(char *buf, size_t cap, bool prefix, kw_key_family f, uint32_t version)
{
	if ((unsigned)f >= KW_KEY_FAMILY_COUNT || version == 0)
		return 0;
	int n = snprintf(buf, cap, "%s%s/%lu", prefix ? LABEL_PREFIX : "", family_names[f],
	                 (unsigned long)version);
	if (n < 0 || (size_t)n >= cap)
		return 0;
	return (size_t)n;
}

bool kw_hsm_ec_point_parse(const unsigned char *in, size_t len, unsigned char out[KW_EC_POINT_LEN])
{
	/* Raw (PKCS#11 3.0 allows it) or a DER OCTET STRING (v2.40, SoftHSM). */
	if (len == KW_EC_POINT_LEN && in[0] == 0x04) {
		memcpy(out, in, KW_EC_POINT_LEN);
		return true;
	}
	if (len == KW_EC_POINT_LEN + 2 && in[0] == 0x04 && in[1] == KW_EC_POINT_LEN && in[2] == 0x04) {
		memcpy(out, in + 2, KW_EC_POINT_LEN);
		return true;
	}
	return false;
}

/* ---- enumeration ----------------------------------------------------- */

typedef struct scan_obj {
	kw_key_family family;
	uint32_t version;
	CK_OBJECT_CLASS cls;
	CK_OBJECT_HANDLE h;
	const char *refused; /* NULL, or why it is not what keyward creates */
} scan_obj;

/* ---- what keyward creates --------------------------------------------- */

/* A boolean attribute and the value keyward gives it. */
typedef struct want_bool {
	CK_ATTRIBUTE_TYPE t;
	CK_BBOOL v;
	const char *why; /* said when it differs */
} want_bool;

/* Every key: generated in the token. Secret and private keys: sensitive
 * and never extractable from their creation on. (Not CKA_MODIFIABLE
 * false: SoftHSM then refuses the session copies, C_CopyObject with
 * CKA_TOKEN false answering CKR_ATTRIBUTE_READ_ONLY. The usages are
 * checked at every read instead, and sensitivity cannot be relaxed.) */
#define ORIGIN                                                                                               \
	{                                                                                                    \
		CKA_LOCAL, CK_TRUE, "CKA_LOCAL is false: not generated in the token (imported or derived)"   \
	}
#define SECRECY                                                                                              \
	{CKA_ALWAYS_SENSITIVE, CK_TRUE, "CKA_ALWAYS_SENSITIVE is false"},                                    \
	    {CKA_NEVER_EXTRACTABLE, CK_TRUE, "CKA_NEVER_EXTRACTABLE is false"},                              \
	    {CKA_SENSITIVE, CK_TRUE, "CKA_SENSITIVE is false"},                                              \
	{                                                                                                    \
		CKA_EXTRACTABLE, CK_FALSE, "CKA_EXTRACTABLE is true"                                         \
	}

/* The KEK: AES-256-GCM encrypt and decrypt, nothing else. */
static const want_bool kek_shape[] = {
    ORIGIN,
    SECRECY,
    {CKA_ENCRYPT, CK_TRUE, "CKA_ENCRYPT is false"},
    {CKA_DECRYPT, CK_TRUE, "CKA_DECRYPT is false"},
    {CKA_WRAP, CK_FALSE, "CKA_WRAP is true"},
    {CKA_UNWRAP, CK_FALSE, "CKA_UNWRAP is true"},
    {CKA_SIGN, CK_FALSE, "CKA_SIGN is true"},
    {CKA_VERIFY, CK_FALSE, "CKA_VERIFY is true"},
    {CKA_DERIVE, CK_FALSE, "CKA_DERIVE is true"},
};
/* Derivation root, pepper, audit key: HMAC-SHA256 signing, nothing else. */
static const want_bool mac_shape[] = {
    ORIGIN,
    SECRECY,
    {CKA_SIGN, CK_TRUE, "CKA_SIGN is false"},
    {CKA_VERIFY, CK_FALSE, "CKA_VERIFY is true"},
    {CKA_ENCRYPT, CK_FALSE, "CKA_ENCRYPT is true"},
    {CKA_DECRYPT, CK_FALSE, "CKA_DECRYPT is true"},
    {CKA_WRAP, CK_FALSE, "CKA_WRAP is true"},
    {CKA_UNWRAP, CK_FALSE, "CKA_UNWRAP is true"},
    {CKA_DERIVE, CK_FALSE, "CKA_DERIVE is true"},
};
/* The JWT private key: ECDSA signing, nothing else. */
static const want_bool jwt_private_shape[] = {
    ORIGIN,
    SECRECY,
    {CKA_SIGN, CK_TRUE, "CKA_SIGN is false"},
    {CKA_DECRYPT, CK_FALSE, "CKA_DECRYPT is true"},
    {CKA_UNWRAP, CK_FALSE, "CKA_UNWRAP is true"},
    {CKA_DERIVE, CK_FALSE, "CKA_DERIVE is true"},
};
/* Its public half. */
static const want_bool jwt_public_shape[] = {
    ORIGIN,
    {CKA_VERIFY, CK_TRUE, "CKA_VERIFY is false"},
    {CKA_ENCRYPT, CK_FALSE, "CKA_ENCRYPT is true"},
    {CKA_WRAP, CK_FALSE, "CKA_WRAP is true"},
    {CKA_DERIVE, CK_FALSE, "CKA_DERIVE is true"},
};
#undef ORIGIN
#undef SECRECY

#define N_WANT 16

/* NULL when object h (family f, class cls) is what keyward generates for
 * it; otherwise the first difference. A token that cannot tell (an
 * attribute it does not have) is refused too. */
static CK_RV check_shape(kw_hsm_session *s, kw_key_family f, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE h,
                         const char **why)
{
	const want_bool *w;
	size_t nw;
	bool jwt = f == KW_KEY_JWT;
	if (jwt && cls == CKO_PRIVATE_KEY)
		w = jwt_private_shape, nw = sizeof(jwt_private_shape) / sizeof(*w);
	else if (jwt && cls == CKO_PUBLIC_KEY)
		w = jwt_public_shape, nw = sizeof(jwt_public_shape) / sizeof(*w);
	else if (!jwt && cls == CKO_SECRET_KEY && f == KW_KEY_KEK)
		w = kek_shape, nw = sizeof(kek_shape) / sizeof(*w);
	else if (!jwt && cls == CKO_SECRET_KEY)
		w = mac_shape, nw = sizeof(mac_shape) / sizeof(*w);
	else {
		*why = "wrong object class for its family";
		return CKR_OK;
	}
	CK_BBOOL got[N_WANT];
	CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
	CK_ULONG vlen = 0;
	unsigned char params[32];
	CK_ATTRIBUTE a[N_WANT + 2];
	for (size_t i = 0; i < nw; i++)
		a[i] = (CK_ATTRIBUTE){w[i].t, &got[i], sizeof(got[i])};
	a[nw] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &kt, sizeof(kt)};
	a[nw + 1] = jwt ? (CK_ATTRIBUTE){CKA_EC_PARAMS, params, sizeof(params)}
	                : (CK_ATTRIBUTE){CKA_VALUE_LEN, &vlen, sizeof(vlen)};
	CK_RV rv = kw_p11_GetAttributeValue(s->hsm, s->h, h, a, (CK_ULONG)(nw + 2));
	*why = NULL;
	if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_BUFFER_TOO_SMALL) {
		*why = "an attribute keyward checks cannot be read";
		return CKR_OK;
	}
	if (rv != CKR_OK)
		return rv;
	if (jwt ? kt != CKK_EC : kt != (f == KW_KEY_KEK ? CKK_AES : CKK_GENERIC_SECRET))
		*why = "wrong key type";
	else if (jwt ? a[nw + 1].ulValueLen != sizeof(p256_oid) ||
	                   memcmp(params, p256_oid, sizeof(p256_oid)) != 0
	             : vlen != 32)
		*why = jwt ? "not a P-256 key" : "not 32 bytes long";
	for (size_t i = 0; *why == NULL && i < nw; i++)
		if (a[i].ulValueLen != sizeof(CK_BBOOL) || (got[i] != CK_FALSE) != (w[i].v != CK_FALSE))
			*why = w[i].why;
	return CKR_OK;
}

static CK_RV find_all(kw_hsm_session *s, CK_ATTRIBUTE *tmpl, CK_ULONG ntmpl, CK_OBJECT_HANDLE **objs,
                      size_t *n)
{
	kw_hsm *hsm = s->hsm;
	CK_OBJECT_HANDLE *v = *objs;
	size_t len = *n, cap = *n;
	CK_RV rv = kw_p11_FindObjectsInit(hsm, s->h, tmpl, ntmpl);
	if (rv != CKR_OK)
		return rv;
	for (;;) {
		if (cap - len < 32) {
			size_t ncap = cap * 2 + 64;
			CK_OBJECT_HANDLE *nv = realloc(v, ncap * sizeof(*nv));
			if (nv == NULL) {
				rv = CKR_HOST_MEMORY;
				break;
			}
			v = nv;
			cap = ncap;
		}
		CK_ULONG got = 0;
		rv = kw_p11_FindObjects(hsm, s->h, v + len, (CK_ULONG)(cap - len), &got);
		if (rv != CKR_OK || got == 0)
			break;
		len += got;
	}
	CK_RV rf = kw_p11_FindObjectsFinal(hsm, s->h);
	if (rv == CKR_OK)
		rv = rf;
	*objs = v;
	*n = len;
	return rv;
}

/* Every token key object with a keyward label, through s. */
static CK_RV scan(kw_hsm_session *s, scan_obj **out, size_t *nout)
{
	static const CK_OBJECT_CLASS classes[] = {CKO_SECRET_KEY, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
	kw_hsm *hsm = s->hsm;
	CK_RV rv = CKR_OK;
	CK_OBJECT_HANDLE *handles[3] = {NULL, NULL, NULL};
	size_t nh[3] = {0, 0, 0};
	scan_obj *objs = NULL;
	size_t n = 0;

	/* Find first, read labels after: some tokens allow no other call on
	 * a session while a search is active. */
	for (size_t c = 0; c < 3; c++) {
		CK_OBJECT_CLASS cls = classes[c];
		CK_BBOOL yes = CK_TRUE;
		CK_ATTRIBUTE tmpl[] = {
		    {CKA_CLASS, &cls, sizeof(cls)},
		    {CKA_TOKEN, &yes, sizeof(yes)},
		};
		rv = find_all(s, tmpl, 2, &handles[c], &nh[c]);
		if (rv != CKR_OK)
			goto done;
	}
	objs = calloc(nh[0] + nh[1] + nh[2] + 1, sizeof(*objs));
	if (objs == NULL) {
		rv = CKR_HOST_MEMORY;
		goto done;
	}
	for (size_t c = 0; c < 3; c++) {
		for (size_t i = 0; i < nh[c]; i++) {
			char label[LABEL_MAX];
			CK_ATTRIBUTE a = {CKA_LABEL, label, sizeof(label)};
			rv = kw_p11_GetAttributeValue(hsm, s->h, handles[c][i], &a, 1);
			/* Too long a label is not ours; a vanished object neither. */
			if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_OBJECT_HANDLE_INVALID ||
			    rv == CKR_ATTRIBUTE_TYPE_INVALID) {
				rv = CKR_OK;
				continue;
			}
			if (rv != CKR_OK)
				goto done;
			kw_key_family f;
			uint32_t v;
			if (!kw_hsm_label_parse(label, a.ulValueLen, &f, &v))
				continue;
			const char *why = NULL;
			rv = check_shape(s, f, classes[c], handles[c][i], &why);
			if (rv == CKR_OBJECT_HANDLE_INVALID) {
				rv = CKR_OK;
				continue;
			}
			if (rv != CKR_OK)
				goto done;
			objs[n++] = (scan_obj){
			    .family = f, .version = v, .cls = classes[c], .h = handles[c][i], .refused = why};
		}
	}
	*out = objs;
	*nout = n;
	objs = NULL;
done:
	free(objs);
	for (size_t c = 0; c < 3; c++)
		free(handles[c]);
	return rv;
}

static CK_RV read_ec_point(kw_hsm_session *s, CK_OBJECT_HANDLE h, unsigned char out[KW_EC_POINT_LEN],
                           bool *ok)
{
	unsigned char buf[KW_EC_POINT_LEN + 16];
	CK_ATTRIBUTE a = {CKA_EC_POINT, buf, sizeof(buf)};
	CK_RV rv = kw_p11_GetAttributeValue(s->hsm, s->h, h, &a, 1);
	*ok = false;
	if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID)
		return CKR_OK;
	if (rv == CKR_OK)
		*ok = kw_hsm_ec_point_parse(buf, a.ulValueLen, out);
	return rv;
}

/* ---- the table ------------------------------------------------------- */

/* Call with keys_lock held for writing. NULL on allocation failure. */
static struct kw_hsm_key *table_get_or_add_locked(kw_hsm *hsm, kw_key_family f, uint32_t v)
{
	for (size_t i = 0; i < hsm->nkeys; i++) {
		if (hsm->keys[i]->family == f && hsm->keys[i]->version == v)
			return hsm->keys[i];
	}
	if (hsm->nkeys == hsm->keys_cap) {
		size_t ncap = hsm->keys_cap * 2 + 16;
		struct kw_hsm_key **nk = realloc(hsm->keys, ncap * sizeof(*nk));
		if (nk == NULL)
			return NULL;
		hsm->keys = nk;
		hsm->keys_cap = ncap;
	}
	struct kw_hsm_key *k = calloc(1, sizeof(*k));
	if (k == NULL)
		return NULL;
	k->family = f;
	k->version = v;
	k->gone = true;
	hsm->keys[hsm->nkeys++] = k;
	return k;
}

CK_RV kw_hsm_refresh_on(kw_hsm_session *s)
{
	kw_hsm *hsm = s->hsm;
	CK_RV rv;
	scan_obj *objs = NULL;
	size_t n = 0;
	struct pub_point {
		bool ok;
		unsigned char pt[KW_EC_POINT_LEN];
	} *pts = NULL;

	pthread_mutex_lock(&hsm->refresh_lock);
	/* Logged out, the token would hide every private key: log in first. */
	rv = kw_hsm_login_ensure(hsm, s->h, NULL);
	if (rv != CKR_OK)
		goto done;
	rv = scan(s, &objs, &n);
	if (rv != CKR_OK)
		goto done;
	pts = calloc(n + 1, sizeof(*pts));
	if (pts == NULL) {
		rv = CKR_HOST_MEMORY;
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		if (objs[i].family == KW_KEY_JWT && objs[i].cls == CKO_PUBLIC_KEY) {
			rv = read_ec_point(s, objs[i].h, pts[i].pt, &pts[i].ok);
			if (rv != CKR_OK)
				goto done;
			if (!pts[i].ok)
				kw_warn("hsm: keyward/jwt/%lu has no readable P-256 point",
				        (unsigned long)objs[i].version);
		}
	}

	pthread_rwlock_wrlock(&hsm->keys_lock);
	CK_OBJECT_HANDLE *was = calloc(hsm->nkeys + 1, sizeof(*was));
	if (was == NULL) {
		pthread_rwlock_unlock(&hsm->keys_lock);
		rv = CKR_HOST_MEMORY;
		goto done;
	}
	size_t nwas = hsm->nkeys;
	for (size_t i = 0; i < hsm->nkeys; i++) {
		was[i] = hsm->keys[i]->gone ? CK_INVALID_HANDLE : hsm->keys[i]->handle;
		hsm->keys[i]->handle = CK_INVALID_HANDLE;
		hsm->keys[i]->pub_handle = CK_INVALID_HANDLE;
		hsm->keys[i]->have_pub = false;
	}
	size_t nrefused = 0;
	for (size_t i = 0; i < n; i++) {
		scan_obj *o = &objs[i];
		if (o->refused != NULL) {
			/* Someone with the PIN may have planted a key of a known value:
			 * never use it, and say so loudly (once per read of the keys). */
			if (nrefused++ == 0)
				snprintf(hsm->refused_first, sizeof(hsm->refused_first),
				         "keyward/%s/%lu (%s): %s", kw_key_family_name(o->family),
				         (unsigned long)o->version,
				         o->cls == CKO_PUBLIC_KEY ? "public" : "key", o->refused);
			kw_err_log(
			    "hsm: REFUSED keyward/%s/%lu: %s; keyward did not create this object and will "
			    "not use it",
			    kw_key_family_name(o->family), (unsigned long)o->version, o->refused);
			continue;
		}
		bool is_jwt = o->family == KW_KEY_JWT;
		bool want_priv = is_jwt ? o->cls == CKO_PRIVATE_KEY : o->cls == CKO_SECRET_KEY;
		bool want_pub = is_jwt && o->cls == CKO_PUBLIC_KEY;
		if (!want_priv && !want_pub) {
			kw_warn("hsm: ignoring keyward/%s/%lu: wrong object class",
			        kw_key_family_name(o->family), (unsigned long)o->version);
			continue;
		}
		struct kw_hsm_key *k = table_get_or_add_locked(hsm, o->family, o->version);
		if (k == NULL) {
			rv = CKR_HOST_MEMORY;
			continue;
		}
		if ((want_priv && k->handle != CK_INVALID_HANDLE) ||
		    (want_pub && k->pub_handle != CK_INVALID_HANDLE))
			kw_warn("hsm: two objects are labelled keyward/%s/%lu; using one",
			        kw_key_family_name(o->family), (unsigned long)o->version);
		if (want_priv) {
			k->handle = o->h;
		} else {
			k->pub_handle = o->h;
			k->have_pub = pts[i].ok;
			if (pts[i].ok)
				memcpy(k->pub, pts[i].pt, KW_EC_POINT_LEN);
		}
	}
	hsm->nrefused = nrefused;
	if (nrefused == 0)
		hsm->refused_first[0] = '\0';
	uint_fast64_t epoch = atomic_load(&hsm->keys_epoch) + 1;
	for (size_t i = 0; i < hsm->nkeys; i++) {
		struct kw_hsm_key *k = hsm->keys[i];
		k->gone = k->handle == CK_INVALID_HANDLE;
		/* New since the last look (or added now), or another object. */
		if (!k->gone && (i >= nwas || was[i] != k->handle))
			k->changed_epoch = epoch;
	}
	atomic_store(&hsm->keys_epoch, epoch);
	pthread_rwlock_unlock(&hsm->keys_lock);
	free(was);
done:
	pthread_mutex_unlock(&hsm->refresh_lock);
	free(pts);
	free(objs);
	return rv;
}

CK_RV kw_hsm_key_handles(kw_hsm *hsm, const kw_hsm_key *k, CK_OBJECT_HANDLE *priv, CK_OBJECT_HANDLE *pub)
{
	CK_RV rv = CKR_OK;
	if (k->session_key) {
		*priv = k->handle;
		if (pub != NULL)
			*pub = CK_INVALID_HANDLE;
		return CKR_OK;
	}
	pthread_rwlock_rdlock(&hsm->keys_lock);
	if (k->gone) {
		rv = CKR_KEY_HANDLE_INVALID;
	} else {
		*priv = k->handle;
		if (pub != NULL)
			*pub = k->pub_handle;
	}
	pthread_rwlock_unlock(&hsm->keys_lock);
	return rv;
}

CK_RV kw_hsm_key_handle_since(kw_hsm *hsm, const kw_hsm_key *k, CK_OBJECT_HANDLE *priv,
                              uint_fast64_t *changed)
{
	CK_RV rv = CKR_OK;
	pthread_rwlock_rdlock(&hsm->keys_lock);
	if (k->gone) {
		rv = CKR_KEY_HANDLE_INVALID;
	} else {
		*priv = k->handle;
		*changed = k->changed_epoch;
	}
	pthread_rwlock_unlock(&hsm->keys_lock);
	return rv;
}

void kw_hsm_keys_free(kw_hsm *hsm)
{
	for (size_t i = 0; i < hsm->nkeys; i++)
		free(hsm->keys[i]);
	free(hsm->keys);
	hsm->keys = NULL;
	hsm->nkeys = hsm->keys_cap = 0;
}

/* The key of family f at version (0: the highest) that is not gone. */
static kw_err find_key(kw_hsm *hsm, kw_key_family f, uint32_t version, const kw_hsm_key **out)
{
	const kw_hsm_key *found = NULL;
	pthread_rwlock_rdlock(&hsm->keys_lock);
	for (size_t i = 0; i < hsm->nkeys; i++) {
		const kw_hsm_key *k = hsm->keys[i];
		if (k->family != f || k->gone)
			continue;
		if (version != 0 ? k->version == version : (found == NULL || k->version > found->version))
			found = k;
	}
	pthread_rwlock_unlock(&hsm->keys_lock);
	if (found == NULL)
		return KW_ERR_NOT_FOUND;
	*out = found;
	return KW_OK;
}

uint64_t kw_hsm_keys_epoch(kw_hsm *hsm)
{
	return (uint64_t)atomic_load(&hsm->keys_epoch);
}

size_t kw_hsm_refused_keys(kw_hsm *hsm, char *first, size_t cap)
{
	pthread_rwlock_rdlock(&hsm->keys_lock);
	size_t n = hsm->nrefused;
	if (first != NULL && cap > 0)
		snprintf(first, cap, "%s", hsm->refused_first);
	pthread_rwlock_unlock(&hsm->keys_lock);
	return n;
}

kw_err kw_hsm_key_active(kw_hsm *hsm, kw_key_family f, const kw_hsm_key **out)
{
	return find_key(hsm, f, 0, out);
}

kw_err kw_hsm_key_get(kw_hsm *hsm, kw_key_family f, uint32_t version, const kw_hsm_key **out)
{
	return version == 0 ? KW_ERR_NOT_FOUND : find_key(hsm, f, version, out);
}

kw_err kw_hsm_key_get_fresh(kw_hsm *hsm, kw_key_family f, uint32_t version, const kw_hsm_key **out)
{
	kw_err err = kw_hsm_key_get(hsm, f, version, out);
	if (err != KW_ERR_NOT_FOUND)
		return err;
	pthread_mutex_lock(&hsm->miss_lock);
	/* Whoever held the lock before may have found it already. */
	err = kw_hsm_key_get(hsm, f, version, out);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t since_ms = (int64_t)(now.tv_sec - hsm->miss_refreshed.tv_sec) * 1000 +
	                   (now.tv_nsec - hsm->miss_refreshed.tv_nsec) / 1000000;
	if (err == KW_ERR_NOT_FOUND && since_ms >= KW_HSM_MISS_REFRESH_MS) {
		hsm->miss_refreshed = now;
		err = kw_hsm_keys_refresh(hsm);
		if (err == KW_OK)
			err = kw_hsm_key_get(hsm, f, version, out);
	}
	pthread_mutex_unlock(&hsm->miss_lock);
	return err;
}

uint32_t kw_hsm_key_version(const kw_hsm_key *k)
{
	return k->version;
}

kw_key_family kw_hsm_key_family(const kw_hsm_key *k)
{
	return k->family;
}

static CK_RV refresh_attempt(kw_hsm_session *s, void *arg)
{
	return kw_hsm_refresh_on(s);
}

kw_err kw_hsm_keys_refresh(kw_hsm *hsm)
{
	pthread_mutex_lock(&hsm->admin_lock);
	kw_err err = kw_hsm_run(&hsm->admin, KW_HSM_OP_OTHER, refresh_attempt, NULL);
	pthread_mutex_unlock(&hsm->admin_lock);
	return err;
}

/* ---- generate / destroy ---------------------------------------------- */

static CK_RV find_label(kw_hsm_session *s, const char *label, size_t len, CK_OBJECT_HANDLE **objs, size_t *n)
{
	CK_BBOOL yes = CK_TRUE;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_LABEL, (void *)label, (CK_ULONG)len},
	};
	return find_all(s, tmpl, 2, objs, n);
}

static CK_RV generate_secret(kw_hsm_session *s, kw_key_family f, const char *label, size_t llen,
                             const char *id, size_t idlen)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG vlen = 32;
	bool kek = f == KW_KEY_KEK;
	CK_KEY_TYPE kt = kek ? CKK_AES : CKK_GENERIC_SECRET;
	CK_MECHANISM m = {kek ? CKM_AES_KEY_GEN : CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
	CK_BBOOL *crypt = kek ? &yes : &no; /* encrypt/decrypt (AES-GCM) */
	CK_BBOOL *mac = kek ? &no : &yes;   /* sign (HMAC-SHA256) */
	/* Exactly what check_shape accepts: nothing keyward does not use. */
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},         {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_VALUE_LEN, &vlen, sizeof(vlen)},   {CKA_LABEL, (void *)label, (CK_ULONG)llen},
	    {CKA_ID, (void *)id, (CK_ULONG)idlen},  {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_PRIVATE, &yes, sizeof(yes)},       {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &no, sizeof(no)},     {CKA_ENCRYPT, crypt, sizeof(CK_BBOOL)},
	    {CKA_DECRYPT, crypt, sizeof(CK_BBOOL)}, {CKA_WRAP, &no, sizeof(no)},
	    {CKA_UNWRAP, &no, sizeof(no)},          {CKA_SIGN, mac, sizeof(CK_BBOOL)},
	    {CKA_VERIFY, &no, sizeof(no)},          {CKA_DERIVE, &no, sizeof(no)},
	};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	return kw_p11_GenerateKey(s->hsm, s->h, &m, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h);
}

static CK_RV generate_ec(kw_hsm_session *s, const char *label, size_t llen, const char *id, size_t idlen)
{
	CK_OBJECT_CLASS pub_cls = CKO_PUBLIC_KEY, priv_cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt = CKK_EC;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_ATTRIBUTE pub[] = {
	    {CKA_CLASS, &pub_cls, sizeof(pub_cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid)},
	    {CKA_LABEL, (void *)label, (CK_ULONG)llen},
	    {CKA_ID, (void *)id, (CK_ULONG)idlen},
	    {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_PRIVATE, &no, sizeof(no)},
	    {CKA_VERIFY, &yes, sizeof(yes)},
	    {CKA_ENCRYPT, &no, sizeof(no)},
	    {CKA_WRAP, &no, sizeof(no)},
	    {CKA_DERIVE, &no, sizeof(no)},
	};
	CK_ATTRIBUTE priv[] = {
	    {CKA_CLASS, &priv_cls, sizeof(priv_cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_LABEL, (void *)label, (CK_ULONG)llen},
	    {CKA_ID, (void *)id, (CK_ULONG)idlen},
	    {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_PRIVATE, &yes, sizeof(yes)},
	    {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &no, sizeof(no)},
	    {CKA_SIGN, &yes, sizeof(yes)},
	    {CKA_DECRYPT, &no, sizeof(no)},
	    {CKA_UNWRAP, &no, sizeof(no)},
	    {CKA_DERIVE, &no, sizeof(no)},
	};
	CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
	return kw_p11_GenerateKeyPair(s->hsm, s->h, &m, pub, sizeof(pub) / sizeof(pub[0]), priv,
	                              sizeof(priv) / sizeof(priv[0]), &hpub, &hpriv);
}

typedef struct gen_ctx {
	kw_key_family f;
	char label[LABEL_MAX], id[LABEL_MAX];
	size_t llen, idlen;
	bool exists, generated;
} gen_ctx;

static CK_RV gen_attempt(kw_hsm_session *s, void *arg)
{
	gen_ctx *c = arg;
	CK_RV rv;
	CK_OBJECT_HANDLE *objs = NULL;
	size_t n = 0;

	/* A retry after a successful generate only needs the refresh. */
	if (!c->generated) {
		rv = kw_hsm_login_ensure(s->hsm, s->h, NULL);
		if (rv != CKR_OK)
			goto done;
		rv = find_label(s, c->label, c->llen, &objs, &n);
		if (rv != CKR_OK)
			goto done;
		if (n > 0) {
			c->exists = true;
			goto done;
		}
		if (c->f == KW_KEY_JWT)
			rv = generate_ec(s, c->label, c->llen, c->id, c->idlen);
		else
			rv = generate_secret(s, c->f, c->label, c->llen, c->id, c->idlen);
		if (rv != CKR_OK)
			goto done;
		c->generated = true;
		kw_info("hsm: generated %s", c->label);
	}
	rv = kw_hsm_refresh_on(s);
done:
	free(objs);
	return rv;
}

kw_err kw_hsm_key_generate(kw_hsm_session *s, kw_key_family f, uint32_t version)
{
	gen_ctx c = {.f = f};
	if ((unsigned)f >= KW_KEY_FAMILY_COUNT || version == 0)
		return KW_ERR_INVALID;
	c.llen = kw_hsm_label_format(c.label, sizeof(c.label), true, f, version);
	c.idlen = kw_hsm_label_format(c.id, sizeof(c.id), false, f, version);
	kw_err err = kw_hsm_run(s, KW_HSM_OP_OTHER, gen_attempt, &c);
	if (err == KW_OK && c.exists) {
		kw_warn("hsm: %s exists already; not generating it again", c.label);
		err = KW_ERR_EXISTS;
	}
	return err;
}

typedef struct destroy_ctx {
	char label[LABEL_MAX];
	size_t llen;
	size_t destroyed;
} destroy_ctx;

static CK_RV destroy_attempt(kw_hsm_session *s, void *arg)
{
	destroy_ctx *c = arg;
	CK_OBJECT_HANDLE *objs = NULL;
	size_t n = 0;
	CK_RV rv = kw_hsm_login_ensure(s->hsm, s->h, NULL);
	if (rv != CKR_OK)
		goto done;
	rv = find_label(s, c->label, c->llen, &objs, &n);
	if (rv != CKR_OK)
		goto done;
	for (size_t i = 0; i < n; i++) {
		rv = kw_p11_DestroyObject(s->hsm, s->h, objs[i]);
		if (rv != CKR_OK)
			goto done;
		c->destroyed++;
	}
	if (c->destroyed > 0)
		kw_info("hsm: destroyed %s (%zu objects)", c->label, c->destroyed);
	rv = kw_hsm_refresh_on(s);
done:
	free(objs);
	return rv;
}

kw_err kw_hsm_key_destroy(kw_hsm_session *s, kw_key_family f, uint32_t version)
{
	destroy_ctx c = {.destroyed = 0};
	if ((unsigned)f >= KW_KEY_FAMILY_COUNT || version == 0)
		return KW_ERR_INVALID;
	c.llen = kw_hsm_label_format(c.label, sizeof(c.label), true, f, version);
	kw_err err = kw_hsm_run(s, KW_HSM_OP_OTHER, destroy_attempt, &c);
	if (err == KW_OK && c.destroyed == 0)
		err = KW_ERR_NOT_FOUND;
	return err;
}

kw_err kw_hsm_token_init(kw_hsm_session *s, int *created)
{
	kw_err err;
	int n = 0;

	err = kw_hsm_run(s, KW_HSM_OP_OTHER, refresh_attempt, NULL);
	if (err != KW_OK)
		goto done;
	for (int f = 0; f < KW_KEY_FAMILY_COUNT; f++) {
		const kw_hsm_key *k;
		if (kw_hsm_key_active(s->hsm, (kw_key_family)f, &k) == KW_OK)
			continue;
		/* The first free version: a label keyward refuses (an object it
		 * did not create, kw_hsm_refused_keys) is skipped, never used. */
		for (uint32_t v = 1; v <= 64; v++) {
			err = kw_hsm_key_generate(s, (kw_key_family)f, v);
			if (err == KW_OK)
				n++;
			/* Another process may have made it meanwhile: that is fine. */
			if (err != KW_ERR_EXISTS || kw_hsm_key_active(s->hsm, (kw_key_family)f, &k) == KW_OK)
				break;
		}
		if (err == KW_ERR_EXISTS)
			err = KW_OK;
		if (err != KW_OK)
			goto done;
	}
	if (created != NULL)
		*created = n;
	err = KW_OK;
done:
	return err;
}

/* ---- listing --------------------------------------------------------- */

static int scan_obj_cmp(const void *a, const void *b)
{
	const scan_obj *x = a, *y = b;
	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	if (x->version != y->version)
		return x->version < y->version ? -1 : 1;
	/* The private (or secret) object before the public half. */
	bool xp = x->cls == CKO_PUBLIC_KEY, yp = y->cls == CKO_PUBLIC_KEY;
	return (int)xp - (int)yp;
}

typedef struct list_ctx {
	kw_hsm_key_info *infos;
	size_t cap, n, total;
} list_ctx;

static CK_RV list_attempt(kw_hsm_session *s, void *arg)
{
	list_ctx *c = arg;
	scan_obj *objs = NULL;
	size_t n = 0;
	uint32_t active[KW_KEY_FAMILY_COUNT] = {0};
	CK_RV rv = kw_hsm_login_ensure(s->hsm, s->h, NULL);
	if (rv != CKR_OK)
		goto done;
	rv = scan(s, &objs, &n);
	if (rv != CKR_OK)
		goto done;
	qsort(objs, n, sizeof(*objs), scan_obj_cmp);
	for (size_t i = 0; i < n; i++) {
		if (objs[i].cls != CKO_PUBLIC_KEY && objs[i].refused == NULL &&
		    objs[i].version > active[objs[i].family])
			active[objs[i].family] = objs[i].version;
	}
	c->n = 0;
	c->total = n;
	for (size_t i = 0; i < n && c->n < c->cap; i++) {
		kw_hsm_key_info *info = &c->infos[c->n];
		memset(info, 0, sizeof(*info));
		(void)kw_hsm_label_format(info->label, sizeof(info->label), true, objs[i].family,
		                          objs[i].version);
		info->family = objs[i].family;
		info->version = objs[i].version;
		info->active = objs[i].version == active[objs[i].family];
		info->is_private_half = objs[i].cls != CKO_PUBLIC_KEY;
		if (objs[i].refused != NULL)
			snprintf(info->refused, sizeof(info->refused), "%s", objs[i].refused);
		if (info->is_private_half) {
			CK_BBOOL sens = CK_FALSE, ext = CK_TRUE, never = CK_FALSE, always = CK_FALSE;
			CK_ATTRIBUTE a[] = {
			    {CKA_SENSITIVE, &sens, sizeof(sens)},
			    {CKA_EXTRACTABLE, &ext, sizeof(ext)},
			    {CKA_NEVER_EXTRACTABLE, &never, sizeof(never)},
			    {CKA_ALWAYS_SENSITIVE, &always, sizeof(always)},
			};
			rv = kw_p11_GetAttributeValue(s->hsm, s->h, objs[i].h, a, 4);
			if (rv != CKR_OK)
				goto done;
			info->sensitive = sens == CK_TRUE;
			info->extractable = ext != CK_FALSE;
			info->never_extractable = never == CK_TRUE;
			info->always_sensitive = always == CK_TRUE;
		} else {
			/* A public key has no secrecy attributes: it is, by
			 * nature, neither sensitive nor protected from export. */
			info->sensitive = false;
			info->extractable = true;
			info->never_extractable = false;
			info->always_sensitive = false;
		}
		c->n++;
	}
done:
	free(objs);
	return rv;
}

kw_err kw_hsm_key_list(kw_hsm_session *s, kw_hsm_key_info *infos, size_t cap, size_t *n)
{
	kw_err err;
	list_ctx c = {.cap = cap};
	c.infos = calloc(cap ? cap : 1, sizeof(*c.infos));
	if (c.infos == NULL)
		return KW_ERR_NOMEM;
	err = kw_hsm_run(s, KW_HSM_OP_OTHER, list_attempt, &c);
	if (err != KW_OK)
		goto done;
	if (c.total > c.n)
		kw_warn("hsm: key list truncated to %zu of %zu objects", c.n, c.total);
	if (c.n > 0)
		memcpy(infos, c.infos, c.n * sizeof(*infos));
	*n = c.n;
done:
	free(c.infos);
	return err;
}

/* ---- test support ---------------------------------------------------- */

typedef struct import_ctx {
	kw_key_family f;
	const unsigned char *val;
	size_t len;
	CK_OBJECT_HANDLE h;
} import_ctx;

static CK_RV import_attempt(kw_hsm_session *s, void *arg)
{
	import_ctx *c = arg;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	bool kek = c->f == KW_KEY_KEK;
	CK_KEY_TYPE kt = kek ? CKK_AES : CKK_GENERIC_SECRET;
	static const char label[] = "keyward-test/import";
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_TOKEN, &no, sizeof(no)},
	    {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &no, sizeof(no)},
	    {CKA_LABEL, (void *)label, sizeof(label) - 1},
	    {CKA_VALUE, (void *)c->val, (CK_ULONG)c->len},
	    {kek ? CKA_ENCRYPT : CKA_SIGN, &yes, sizeof(yes)},
	    {kek ? CKA_DECRYPT : CKA_VERIFY, &yes, sizeof(yes)},
	};
	return kw_p11_CreateObject(s->hsm, s->h, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &c->h);
}

kw_err kw_hsm_test_count_session_objects(kw_hsm_session *s, size_t *n)
{
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &no, sizeof(no)}};
	CK_OBJECT_HANDLE *objs = NULL;
	*n = 0;
	CK_RV rv = find_all(s, tmpl, 1, &objs, n);
	free(objs);
	return kw_hsm_rv_err(rv);
}

kw_err kw_hsm_test_import_key(kw_hsm_session *s, kw_key_family f, const unsigned char *val, size_t len,
                              const kw_hsm_key **out)
{
	kw_err err;
	import_ctx c = {.f = f, .val = val, .len = len, .h = CK_INVALID_HANDLE};
	struct kw_hsm_key *k = NULL;

	if ((unsigned)f >= KW_KEY_FAMILY_COUNT || f == KW_KEY_JWT || val == NULL || len == 0)
		return KW_ERR_INVALID;
	if (f == KW_KEY_KEK && len != 16 && len != 24 && len != 32)
		return KW_ERR_INVALID;
	k = calloc(1, sizeof(*k));
	if (k == NULL)
		return KW_ERR_NOMEM;
	err = kw_hsm_run(s, KW_HSM_OP_OTHER, import_attempt, &c);
	if (err != KW_OK)
		goto done;
	k->family = f;
	k->version = 0;
	k->session_key = true;
	k->handle = c.h;
	k->pub_handle = CK_INVALID_HANDLE;
	k->next_session_key = s->session_keys;
	s->session_keys = k;
	*out = k;
	k = NULL;
done:
	free(k);
	return err;
}

typedef struct plant_ctx {
	kw_key_family f;
	char label[LABEL_MAX];
	size_t llen;
	const unsigned char *val;
	size_t len;
} plant_ctx;

static CK_RV plant_attempt(kw_hsm_session *s, void *arg)
{
	plant_ctx *c = arg;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	bool kek = c->f == KW_KEY_KEK;
	CK_KEY_TYPE kt = kek ? CKK_AES : CKK_GENERIC_SECRET;
	CK_ULONG vlen = 32;
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv = kw_hsm_login_ensure(s->hsm, s->h, NULL);
	if (rv != CKR_OK)
		return rv;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_PRIVATE, &yes, sizeof(yes)},
	    {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &no, sizeof(no)},
	    {CKA_MODIFIABLE, &no, sizeof(no)},
	    {CKA_LABEL, (void *)c->label, (CK_ULONG)c->llen},
	    {kek ? CKA_ENCRYPT : CKA_SIGN, &yes, sizeof(yes)},
	    {kek ? CKA_DECRYPT : CKA_VERIFY, &yes, sizeof(yes)},
	    {CKA_WRAP, c->val ? &no : &yes, sizeof(CK_BBOOL)},
	    c->val ? (CK_ATTRIBUTE){CKA_VALUE, (void *)c->val, (CK_ULONG)c->len}
	           : (CK_ATTRIBUTE){CKA_VALUE_LEN, &vlen, sizeof(vlen)},
	};
	CK_ULONG n = sizeof(tmpl) / sizeof(tmpl[0]);
	if (c->val != NULL)
		return kw_p11_CreateObject(s->hsm, s->h, tmpl, n, &h);
	CK_MECHANISM m = {kek ? CKM_AES_KEY_GEN : CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
	return kw_p11_GenerateKey(s->hsm, s->h, &m, tmpl, n, &h);
}

kw_err kw_hsm_test_plant_key(kw_hsm_session *s, kw_key_family f, uint32_t version, const unsigned char *value,
                             size_t len)
{
	plant_ctx c = {.f = f, .val = value, .len = len};
	if ((unsigned)f >= KW_KEY_FAMILY_COUNT || f == KW_KEY_JWT || version == 0)
		return KW_ERR_INVALID;
	c.llen = kw_hsm_label_format(c.label, sizeof(c.label), true, f, version);
	return kw_hsm_run(s, KW_HSM_OP_OTHER, plant_attempt, &c);
}
