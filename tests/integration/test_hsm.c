/* test_hsm.c — the PKCS#11 layer against a real SoftHSM token.
 *
 * Most tests use the token scripts/dev.sh test provisions (KEYWARD_HSM_*).
 * Tests that rotate, destroy or present a wrong PIN use scratch tokens
 * created next to it in the same SoftHSM store, so they neither change the
 * keys other suites rely on nor spend tries of the real PIN. */
#include <criterion/criterion.h>
#include <errno.h>
#include <libgen.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keyward/core/log.h"
#include "keyward/core/text.h"
#include "kwtest.h"

/* ---- vector files ---------------------------------------------------- */

#define VEC_MAX_FIELDS 12

typedef struct vec_rec {
	size_t n;
	char name[VEC_MAX_FIELDS][16];
	char *text[VEC_MAX_FIELDS];
} vec_rec;

/* Reads "name = value" records separated by blank lines; '#' comments. */
static size_t vec_read(const char *file, vec_rec *recs, size_t cap)
{
	const char *dir = getenv("KW_SOURCE_DIR");
	char path[1024];
	snprintf(path, sizeof(path), "%s/tests/vectors/%s", dir ? dir : KW_SOURCE_DIR, file);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "cannot open %s: %s", path, strerror(errno));
	size_t n = 0;
	char line[4096];
	memset(recs, 0, cap * sizeof(*recs));
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t len = strcspn(line, "\r\n");
		line[len] = '\0';
		if (line[0] == '#')
			continue;
		if (len == 0) {
			if (n < cap && recs[n].n > 0)
				n++;
			continue;
		}
		char *eq = strchr(line, '=');
		cr_assert_not_null(eq, "%s: malformed line '%s'", file, line);
		cr_assert_lt(n, cap, "%s: too many records", file);
		vec_rec *r = &recs[n];
		cr_assert_lt(r->n, VEC_MAX_FIELDS);
		char *name = line, *val = eq + 1;
		*eq = '\0';
		while (*name == ' ')
			name++;
		for (char *e = eq - 1; e >= name && *e == ' '; e--)
			*e = '\0';
		while (*val == ' ')
			val++;
		cr_assert_lt(strlen(name), sizeof(r->name[0]), "%s: field name too long", file);
		memcpy(r->name[r->n], name, strlen(name) + 1);
		r->text[r->n] = strdup(val);
		r->n++;
	}
	if (n < cap && recs[n].n > 0)
		n++;
	fclose(f);
	cr_assert_gt(n, 0, "%s: no records", file);
	return n;
}

static const char *vec_text(const vec_rec *r, const char *name)
{
	for (size_t i = 0; i < r->n; i++) {
		if (strcmp(r->name[i], name) == 0)
			return r->text[i];
	}
	cr_assert_fail("vector field %s missing", name);
	return NULL;
}

/* Decodes field name as hex into a malloc'd buffer (never NULL). */
static unsigned char *vec_hex(const vec_rec *r, const char *name, size_t *len)
{
	const char *t = vec_text(r, name);
	size_t tl = strlen(t);
	cr_assert_eq(tl % 2, 0, "odd hex length in %s", name);
	unsigned char *out = malloc(tl / 2 + 1);
	cr_assert_not_null(out);
	cr_assert(kw_hex_decode(t, tl / 2, out), "bad hex in %s", name);
	*len = tl / 2;
	return out;
}

static void vec_free(vec_rec *recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < recs[i].n; j++)
			free(recs[i].text[j]);
}

/* ---- fixtures -------------------------------------------------------- */

static kw_hsm *hsm;
static kw_hsm_session *sess;

static void setup(void)
{
	kw_log_set_level(KW_LOG_WARN);
	hsm = kwt_hsm_open();
	kw_err err = kw_hsm_session_open(hsm, &sess);
	cr_assert_eq(err, KW_OK, "session_open: %s", kw_err_str(err));
}

static void teardown(void)
{
	kw_hsm_session_close(sess);
	sess = NULL;
	kw_hsm_close(hsm);
	hsm = NULL;
}

static const kw_hsm_key *active(kw_key_family f)
{
	const kw_hsm_key *k = NULL;
	kw_err err = kw_hsm_key_active(hsm, f, &k);
	cr_assert_eq(err, KW_OK, "no active %s key: %s", kw_key_family_name(f), kw_err_str(err));
	return k;
}

/* A scratch token in the test token's SoftHSM store, with a known PIN in
 * <store dir>/<label>.pin. Created once, reused afterwards. */
static void scratch_token(const char *label, char *pin_path, size_t cap)
{
	char conf[1024], cmd[4096];
	snprintf(conf, sizeof(conf), "%s", kwt_env("SOFTHSM2_CONF"));
	const char *dir = dirname(conf);
	snprintf(pin_path, cap, "%s/%s.pin", dir, label);
	const char *pin = "kwtest-scratch-pin";
	FILE *f = fopen(pin_path, "w");
	cr_assert_not_null(f);
	fprintf(f, "%s\n", pin);
	fclose(f);
	chmod(pin_path, 0600);
	snprintf(
	    cmd, sizeof(cmd),
	    "softhsm2-util --show-slots 2>/dev/null | grep -q 'Label: *%s *$' || "
	    "softhsm2-util --init-token --free --label '%s' --pin '%s' --so-pin kwtest-scratch-so >/dev/null",
	    label, label, pin);
	cr_assert_eq(system(cmd), 0, "cannot provision scratch token %s", label);
}

static kw_err open_with(const char *uri, const char *pin_file, unsigned max_sessions, kw_hsm **out)
{
	kw_hsm_options opt = {
	    .module_path = kwt_env("KEYWARD_HSM_MODULE"),
	    .token_uri = uri,
	    .pin_file = pin_file,
	    .max_sessions = max_sessions,
	};
	return kw_hsm_open(&opt, out);
}

TestSuite(hsm, .init = setup, .fini = teardown);

/* Tests that open the token themselves. SoftHSM reads its token store once
 * per process, so scratch tokens are made before anything loads it. */
static void scratch_setup(void)
{
	kw_log_set_level(KW_LOG_WARN);
}

TestSuite(hsm_scratch, .init = scratch_setup);

/* ---- open, close, keys ----------------------------------------------- */

Test(hsm, open_close_and_ping)
{
	for (int f = 0; f < KW_KEY_FAMILY_COUNT; f++) {
		const kw_hsm_key *k = active((kw_key_family)f);
		cr_assert_eq(kw_hsm_key_family(k), f);
		cr_assert_geq(kw_hsm_key_version(k), 1);
	}
	cr_assert_eq(kw_hsm_session_ping(sess), KW_OK);
	cr_assert_eq(kw_hsm_keys_refresh(hsm), KW_OK);
	/* Handles survive a refresh: the same pointers come back. */
	const kw_hsm_key *a = active(KW_KEY_KEK), *b = NULL;
	cr_assert_eq(kw_hsm_keys_refresh(hsm), KW_OK);
	cr_assert_eq(kw_hsm_key_get(hsm, KW_KEY_KEK, kw_hsm_key_version(a), &b), KW_OK);
	cr_assert_eq(a, b);
	const kw_hsm_key *none = NULL;
	cr_assert_eq(kw_hsm_key_get(hsm, KW_KEY_KEK, 4000000000u, &none), KW_ERR_NOT_FOUND);
	cr_assert_null(none);
}

Test(hsm, token_init_is_idempotent)
{
	int created = -1;
	cr_assert_eq(kw_hsm_token_init(sess, &created), KW_OK);
	cr_assert_eq(created, 0);
	const kw_hsm_key *k = active(KW_KEY_PEPPER);
	cr_assert_eq(kw_hsm_key_generate(sess, KW_KEY_PEPPER, kw_hsm_key_version(k)), KW_ERR_EXISTS);
}

/* Security invariant 1: no key object is extractable or non-sensitive. */
Test(hsm, keys_are_sensitive_and_never_extractable)
{
	kw_hsm_key_info infos[128];
	size_t n = 0;
	cr_assert_eq(kw_hsm_key_list(sess, infos, 128, &n), KW_OK);
	cr_assert_lt(n, 128);
	bool seen_active[KW_KEY_FAMILY_COUNT] = {false};
	bool seen_jwt_pub = false;
	size_t secret_objects = 0;
	for (size_t i = 0; i < n; i++) {
		const kw_hsm_key_info *k = &infos[i];
		cr_assert(strncmp(k->label, "keyward/", 8) == 0, "label %s", k->label);
		if (i > 0) {
			const kw_hsm_key_info *p = &infos[i - 1];
			cr_assert(p->family < k->family ||
			              (p->family == k->family && p->version <= k->version),
			          "list not sorted at %s", k->label);
		}
		if (k->active && k->is_private_half)
			seen_active[k->family] = true;
		if (!k->is_private_half) {
			/* The public half of the JWT pair is public by nature. */
			cr_assert_eq(k->family, KW_KEY_JWT, "%s: public object outside jwt", k->label);
			seen_jwt_pub = true;
			continue;
		}
		secret_objects++;
		cr_assert_str_eq(k->refused, "", "%s refused: %s", k->label, k->refused);
		cr_assert(k->sensitive, "%s is not sensitive", k->label);
		cr_assert(!k->extractable, "%s is extractable", k->label);
		cr_assert(k->never_extractable, "%s was once extractable", k->label);
		cr_assert(k->always_sensitive, "%s was once not sensitive", k->label);
	}
	cr_assert_geq(secret_objects, KW_KEY_FAMILY_COUNT);
	for (int f = 0; f < KW_KEY_FAMILY_COUNT; f++)
		cr_assert(seen_active[f], "no active %s key listed", kw_key_family_name((kw_key_family)f));
	cr_assert(seen_jwt_pub);
}

/* Keys are trusted for their attributes, not their names: an object that
 * someone with the PIN made under a key family's label is never used. */
static void expect_refused(kw_key_family f, uint32_t planted, const char *why)
{
	cr_assert_eq(kw_hsm_keys_refresh(hsm), KW_OK);
	const kw_hsm_key *k = NULL;
	cr_assert_eq(kw_hsm_key_get(hsm, f, planted, &k), KW_ERR_NOT_FOUND, "the planted key is in use");
	cr_assert_eq(kw_hsm_key_active(hsm, f, &k), KW_OK);
	cr_assert_lt(kw_hsm_key_version(k), planted, "the planted key became the active one");
	char first[200];
	cr_assert_geq(kw_hsm_refused_keys(hsm, first, sizeof(first)), 1);
	cr_assert_not_null(strstr(first, why), "%s", first);
	kw_hsm_key_info infos[128];
	size_t n = 0;
	cr_assert_eq(kw_hsm_key_list(sess, infos, 128, &n), KW_OK);
	bool listed = false;
	for (size_t i = 0; i < n; i++)
		listed |= infos[i].family == f && infos[i].version == planted &&
		          strstr(infos[i].refused, why) != NULL;
	cr_assert(listed, "token status does not show the refusal");
	cr_assert_eq(kw_hsm_key_destroy(sess, f, planted), KW_OK);
	cr_assert_eq(kw_hsm_keys_refresh(hsm), KW_OK);
	cr_assert_eq(kw_hsm_refused_keys(hsm, NULL, 0), 0);
}

Test(hsm, a_planted_key_of_known_value_is_refused)
{
	const unsigned char known[32] = {1, 2, 3};
	uint32_t next = kw_hsm_key_version(active(KW_KEY_KEK)) + 1;
	cr_assert_eq(kw_hsm_test_plant_key(sess, KW_KEY_KEK, next, known, sizeof(known)), KW_OK);
	expect_refused(KW_KEY_KEK, next, "CKA_LOCAL is false");
	next = kw_hsm_key_version(active(KW_KEY_PEPPER)) + 1;
	cr_assert_eq(kw_hsm_test_plant_key(sess, KW_KEY_PEPPER, next, known, sizeof(known)), KW_OK);
	expect_refused(KW_KEY_PEPPER, next, "CKA_LOCAL is false");
}

Test(hsm, a_generated_key_with_usages_keyward_does_not_give_is_refused)
{
	uint32_t next = kw_hsm_key_version(active(KW_KEY_KEK)) + 1;
	cr_assert_eq(kw_hsm_test_plant_key(sess, KW_KEY_KEK, next, NULL, 0), KW_OK);
	expect_refused(KW_KEY_KEK, next, "CKA_WRAP is true");
	next = kw_hsm_key_version(active(KW_KEY_AUDIT)) + 1;
	cr_assert_eq(kw_hsm_test_plant_key(sess, KW_KEY_AUDIT, next, NULL, 0), KW_OK);
	expect_refused(KW_KEY_AUDIT, next, "CKA_VERIFY is true");
}

Test(hsm, random)
{
	unsigned char a[32], b[32], zero[32] = {0};
	cr_assert_eq(kw_hsm_random(sess, a, sizeof(a)), KW_OK);
	cr_assert_eq(kw_hsm_random(sess, b, sizeof(b)), KW_OK);
	cr_assert_neq(memcmp(a, b, sizeof(a)), 0);
	cr_assert_neq(memcmp(a, zero, sizeof(a)), 0);
	cr_assert_eq(kw_hsm_random(sess, a, 0), KW_OK);
	unsigned char big[4096];
	cr_assert_eq(kw_hsm_random(sess, big, sizeof(big)), KW_OK);
}

/* ---- AES-GCM --------------------------------------------------------- */

Test(hsm, gcm_round_trip_with_aad)
{
	const kw_hsm_key *kek = active(KW_KEY_KEK);
	static const unsigned char aad[] = "keyward:v1:vault:tenant:user:1";
	static const unsigned char pt[] = "thirty-two bytes of master key!!";
	unsigned char iv[KW_GCM_IV_LEN], iv2[KW_GCM_IV_LEN], ct[sizeof(pt) + KW_GCM_TAG_LEN],
	    ct2[sizeof(pt) + KW_GCM_TAG_LEN], back[sizeof(pt)];
	cr_assert_eq(kw_hsm_gcm_encrypt(sess, kek, aad, sizeof(aad) - 1, pt, sizeof(pt), iv, ct), KW_OK);
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, aad, sizeof(aad) - 1, ct, sizeof(ct), back), KW_OK);
	cr_assert_eq(memcmp(back, pt, sizeof(pt)), 0);
	/* Fresh IV every time. */
	cr_assert_eq(kw_hsm_gcm_encrypt(sess, kek, aad, sizeof(aad) - 1, pt, sizeof(pt), iv2, ct2), KW_OK);
	cr_assert_neq(memcmp(iv, iv2, sizeof(iv)), 0);
	cr_assert_neq(memcmp(ct, ct2, sizeof(ct)), 0);
	/* No AAD and an empty plaintext work too. */
	cr_assert_eq(kw_hsm_gcm_encrypt(sess, kek, NULL, 0, pt, sizeof(pt), iv, ct), KW_OK);
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, NULL, 0, ct, sizeof(ct), back), KW_OK);
	cr_assert_eq(memcmp(back, pt, sizeof(pt)), 0);
	unsigned char tag[KW_GCM_TAG_LEN];
	cr_assert_eq(kw_hsm_gcm_encrypt(sess, kek, aad, 5, NULL, 0, iv, tag), KW_OK);
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, aad, 5, tag, sizeof(tag), back), KW_OK);
}

Test(hsm, gcm_tampering_fails_verify)
{
	const kw_hsm_key *kek = active(KW_KEY_KEK);
	static const unsigned char aad[] = "keyward:v1:vault:t1:u1:1";
	static const unsigned char pt[] = "a secret worth protecting";
	unsigned char iv[KW_GCM_IV_LEN], ct[sizeof(pt) + KW_GCM_TAG_LEN], bad[sizeof(ct)], out[sizeof(pt)];
	cr_assert_eq(kw_hsm_gcm_encrypt(sess, kek, aad, sizeof(aad) - 1, pt, sizeof(pt), iv, ct), KW_OK);

	memset(out, 0xa5, sizeof(out));
	for (size_t pos = 0; pos < sizeof(ct); pos += 7) {
		memcpy(bad, ct, sizeof(ct));
		bad[pos] ^= 0x01;
		cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, aad, sizeof(aad) - 1, bad, sizeof(bad), out),
		             KW_ERR_VERIFY, "flip at %zu", pos);
	}
	memcpy(bad, ct, sizeof(ct));
	bad[sizeof(ct) - 1] ^= 0x80;
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, aad, sizeof(aad) - 1, bad, sizeof(bad), out),
	             KW_ERR_VERIFY);
	/* A blob copied into another row: different AAD. */
	static const unsigned char other[] = "keyward:v1:vault:t1:u2:1";
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, other, sizeof(other) - 1, ct, sizeof(ct), out),
	             KW_ERR_VERIFY);
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, NULL, 0, ct, sizeof(ct), out), KW_ERR_VERIFY);
	unsigned char iv2[KW_GCM_IV_LEN];
	memcpy(iv2, iv, sizeof(iv));
	iv2[0] ^= 0x01;
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv2, aad, sizeof(aad) - 1, ct, sizeof(ct), out),
	             KW_ERR_VERIFY);
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, aad, sizeof(aad) - 1, ct, sizeof(ct) - 1, out),
	             KW_ERR_VERIFY);
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, aad, sizeof(aad) - 1, ct, 10, out), KW_ERR_VERIFY);
	/* Nothing was written by a failed decrypt. */
	for (size_t i = 0; i < sizeof(out); i++)
		cr_assert_eq(out[i], 0xa5);
	/* And the session still works. */
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, kek, iv, aad, sizeof(aad) - 1, ct, sizeof(ct), out), KW_OK);
	cr_assert_eq(memcmp(out, pt, sizeof(pt)), 0);
}

Test(hsm, gcm_nist_known_answers)
{
	vec_rec recs[8];
	size_t n = vec_read("gcm_nist.txt", recs, 8);
	for (size_t i = 0; i < n; i++) {
		size_t klen, ivlen, plen, alen, clen, tlen;
		unsigned char *k = vec_hex(&recs[i], "K", &klen), *iv = vec_hex(&recs[i], "IV", &ivlen),
		              *p = vec_hex(&recs[i], "P", &plen), *a = vec_hex(&recs[i], "A", &alen),
		              *c = vec_hex(&recs[i], "C", &clen), *t = vec_hex(&recs[i], "T", &tlen);
		const char *name = vec_text(&recs[i], "Case");
		cr_assert_eq(klen, 32);
		cr_assert_eq(ivlen, KW_GCM_IV_LEN);
		cr_assert_eq(tlen, KW_GCM_TAG_LEN);
		cr_assert_eq(clen, plen);
		const kw_hsm_key *key = NULL;
		cr_assert_eq(kw_hsm_test_import_key(sess, KW_KEY_KEK, k, klen, &key), KW_OK);
		unsigned char *out = malloc(plen + KW_GCM_TAG_LEN), *back = malloc(plen + 1);
		cr_assert_eq(kw_hsm_gcm_encrypt_iv(sess, key, iv, alen ? a : NULL, alen, p, plen, out), KW_OK,
		             "case %s", name);
		cr_assert_eq(memcmp(out, c, clen), 0, "case %s: ciphertext", name);
		cr_assert_eq(memcmp(out + clen, t, tlen), 0, "case %s: tag", name);
		cr_assert_eq(kw_hsm_gcm_decrypt(sess, key, iv, alen ? a : NULL, alen, out,
		                                plen + KW_GCM_TAG_LEN, back),
		             KW_OK, "case %s: decrypt", name);
		cr_assert_eq(memcmp(back, p, plen), 0, "case %s: plaintext", name);
		free(out);
		free(back);
		free(k);
		free(iv);
		free(p);
		free(a);
		free(c);
		free(t);
	}
	vec_free(recs, n);
}

/* ---- HMAC, HKDF, ECDSA ----------------------------------------------- */

Test(hsm, hmac_rfc4231)
{
	vec_rec recs[8];
	size_t n = vec_read("rfc4231_sha256.txt", recs, 8), checked = 0;
	for (size_t i = 0; i < n; i++) {
		size_t klen, dlen, mlen;
		unsigned char *k = vec_hex(&recs[i], "Key", &klen), *d = vec_hex(&recs[i], "Data", &dlen),
		              *m = vec_hex(&recs[i], "Mac", &mlen);
		const char *name = vec_text(&recs[i], "Case");
		const kw_hsm_key *key = NULL;
		unsigned char mac[KW_HMAC_LEN];
		cr_assert_eq(kw_hsm_test_import_key(sess, KW_KEY_PEPPER, k, klen, &key), KW_OK);
		kw_err err = kw_hsm_hmac(sess, key, d, dlen, mac);
		if (err == KW_ERR_INVALID && klen < 32) {
			/* SoftHSM refuses HMAC-SHA256 keys shorter than the hash
			 * (CKR_KEY_SIZE_RANGE); keyward's keys are 32 bytes. */
			cr_log_info("case %s: %zu-byte key refused by the token", name, klen);
		} else {
			cr_assert_eq(err, KW_OK, "case %s: %s", name, kw_err_str(err));
			cr_assert_eq(mlen, KW_HMAC_LEN);
			cr_assert_eq(memcmp(mac, m, KW_HMAC_LEN), 0, "case %s", name);
			checked++;
		}
		free(k);
		free(d);
		free(m);
	}
	vec_free(recs, n);
	/* At least the long-key cases (6 and 7) run on every token. */
	cr_assert_geq(checked, 2);
}

Test(hsm, hkdf_expand_rfc5869)
{
	vec_rec recs[8];
	size_t n = vec_read("rfc5869_sha256.txt", recs, 8);
	for (size_t i = 0; i < n; i++) {
		size_t ikmlen, saltlen, infolen, prklen, okmlen;
		unsigned char *ikm = vec_hex(&recs[i], "IKM", &ikmlen),
		              *salt = vec_hex(&recs[i], "salt", &saltlen),
		              *info = vec_hex(&recs[i], "info", &infolen),
		              *prk_want = vec_hex(&recs[i], "PRK", &prklen),
		              *okm_want = vec_hex(&recs[i], "OKM", &okmlen);
		const char *name = vec_text(&recs[i], "Case");
		size_t L = (size_t)strtoul(vec_text(&recs[i], "L"), NULL, 10);
		cr_assert_eq(L, okmlen);
		/* HKDF-Extract in process (RFC 5869 §2.2: no salt = HashLen zeros). */
		unsigned char zeros[32] = {0}, prk[32];
		unsigned int prk_len = 0;
		cr_assert_not_null(HMAC(EVP_sha256(), saltlen ? salt : zeros, saltlen ? (int)saltlen : 32,
		                        ikm, ikmlen, prk, &prk_len));
		cr_assert_eq(prk_len, prklen);
		cr_assert_eq(memcmp(prk, prk_want, prklen), 0, "case %s: PRK", name);
		const kw_hsm_key *key = NULL;
		cr_assert_eq(kw_hsm_test_import_key(sess, KW_KEY_DERIVE, prk, prk_len, &key), KW_OK);
		unsigned char *okm = malloc(L);
		cr_assert_eq(kw_hsm_hkdf_expand(sess, key, infolen ? info : NULL, infolen, okm, L), KW_OK,
		             "case %s", name);
		cr_assert_eq(memcmp(okm, okm_want, L), 0, "case %s: OKM", name);
		/* A prefix of the output is the output of a shorter expand. */
		unsigned char part[33];
		cr_assert_eq(
		    kw_hsm_hkdf_expand(sess, key, infolen ? info : NULL, infolen, part, sizeof(part)), KW_OK);
		cr_assert_eq(memcmp(part, okm_want, sizeof(part)), 0);
		OPENSSL_cleanse(prk, sizeof(prk));
		free(okm);
		free(ikm);
		free(salt);
		free(info);
		free(prk_want);
		free(okm_want);
	}
	vec_free(recs, n);
	const kw_hsm_key *root = active(KW_KEY_DERIVE);
	unsigned char out[32];
	cr_assert_eq(kw_hsm_hkdf_expand(sess, root, (const unsigned char *)"x", 1, out, 0), KW_ERR_INVALID);
	unsigned char *big = malloc(255 * 32 + 1);
	cr_assert_eq(kw_hsm_hkdf_expand(sess, root, NULL, 0, big, 255 * 32 + 1), KW_ERR_INVALID);
	cr_assert_eq(kw_hsm_hkdf_expand(sess, root, NULL, 0, big, 255 * 32), KW_OK);
	free(big);
}

static EVP_PKEY *pkey_from_point(const unsigned char pub[KW_EC_POINT_LEN])
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	cr_assert_not_null(bld);
	cr_assert(OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0));
	cr_assert(OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, KW_EC_POINT_LEN));
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *pkey = NULL;
	cr_assert(EVP_PKEY_fromdata_init(ctx) == 1);
	cr_assert(EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

static int verify_es256(EVP_PKEY *pkey, const unsigned char *msg, size_t len, const unsigned char sig[64])
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	cr_assert(ECDSA_SIG_set0(es, r, s) == 1);
	unsigned char *der = NULL;
	int derlen = i2d_ECDSA_SIG(es, &der);
	cr_assert_gt(derlen, 0);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	cr_assert(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1);
	int ok = EVP_DigestVerify(md, der, (size_t)derlen, msg, len);
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	return ok;
}

Test(hsm, ecdsa_sign_verifies_with_openssl)
{
	const kw_hsm_key *jwt = active(KW_KEY_JWT);
	unsigned char pub[KW_EC_POINT_LEN], pub2[KW_EC_POINT_LEN], sig[KW_ECDSA_SIG_LEN];
	cr_assert_eq(kw_hsm_public_key(hsm, jwt, pub), KW_OK);
	cr_assert_eq(pub[0], 0x04);
	cr_assert_eq(kw_hsm_public_key(hsm, jwt, pub2), KW_OK);
	cr_assert_eq(memcmp(pub, pub2, sizeof(pub)), 0);
	static const unsigned char msg[] = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9";
	cr_assert_eq(kw_hsm_ecdsa_sign(sess, jwt, msg, sizeof(msg) - 1, sig), KW_OK);
	EVP_PKEY *pkey = pkey_from_point(pub);
	cr_assert_eq(verify_es256(pkey, msg, sizeof(msg) - 1, sig), 1);
	cr_assert_neq(verify_es256(pkey, msg, sizeof(msg) - 2, sig), 1);
	EVP_PKEY_free(pkey);
	/* Wrong key kinds are refused before the token sees them. */
	cr_assert_eq(kw_hsm_public_key(hsm, active(KW_KEY_KEK), pub), KW_ERR_INVALID);
	cr_assert_eq(kw_hsm_ecdsa_sign(sess, active(KW_KEY_PEPPER), msg, 3, sig), KW_ERR_INVALID);
	unsigned char mac[KW_HMAC_LEN];
	cr_assert_eq(kw_hsm_hmac(sess, active(KW_KEY_KEK), msg, 3, mac), KW_ERR_INVALID);
	unsigned char iv[KW_GCM_IV_LEN], ct[3 + KW_GCM_TAG_LEN];
	cr_assert_eq(kw_hsm_gcm_encrypt(sess, active(KW_KEY_PEPPER), NULL, 0, msg, 3, iv, ct),
	             KW_ERR_INVALID);
}

/* ---- revival --------------------------------------------------------- */

static void exercise(const char *when)
{
	unsigned char mac[KW_HMAC_LEN], sig[KW_ECDSA_SIG_LEN], iv[KW_GCM_IV_LEN], ct[4 + KW_GCM_TAG_LEN],
	    pt[4];
	cr_assert_eq(kw_hsm_hmac(sess, active(KW_KEY_PEPPER), (const unsigned char *)"abcd", 4, mac), KW_OK,
	             "%s", when);
	cr_assert_eq(
	    kw_hsm_gcm_encrypt(sess, active(KW_KEY_KEK), NULL, 0, (const unsigned char *)"abcd", 4, iv, ct),
	    KW_OK, "%s", when);
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, active(KW_KEY_KEK), iv, NULL, 0, ct, sizeof(ct), pt), KW_OK,
	             "%s", when);
	cr_assert_eq(kw_hsm_ecdsa_sign(sess, active(KW_KEY_JWT), (const unsigned char *)"abcd", 4, sig),
	             KW_OK, "%s", when);
}

Test(hsm, revive_after_session_closed)
{
	kw_hsm_stats before, after;
	exercise("before");
	kw_hsm_stats_get(hsm, &before);
	kw_hsm_test_kill_session(sess, false);
	unsigned char mac[KW_HMAC_LEN];
	cr_assert_eq(kw_hsm_hmac(sess, active(KW_KEY_AUDIT), (const unsigned char *)"row", 3, mac), KW_OK);
	kw_hsm_stats_get(hsm, &after);
	cr_assert_eq(after.revived_sessions, before.revived_sessions + 1);
	exercise("after close");
	kw_hsm_test_kill_session(sess, false);
	exercise("after second close");
	kw_hsm_stats_get(hsm, &after);
	cr_assert_eq(after.revived_sessions, before.revived_sessions + 2);
	cr_assert_eq(kw_hsm_session_ping(sess), KW_OK);
}

Test(hsm, revive_after_logout)
{
	kw_hsm_stats before, after;
	exercise("before");
	kw_hsm_stats_get(hsm, &before);
	kw_hsm_test_kill_session(sess, true);
	unsigned char sig[KW_ECDSA_SIG_LEN];
	cr_assert_eq(kw_hsm_ecdsa_sign(sess, active(KW_KEY_JWT), (const unsigned char *)"m", 1, sig), KW_OK);
	kw_hsm_stats_get(hsm, &after);
	cr_assert_gt(after.revived_sessions, before.revived_sessions);
	exercise("after logout");
	/* Another session opened afterwards is logged in as well. */
	kw_hsm_session *s2 = NULL;
	cr_assert_eq(kw_hsm_session_open(hsm, &s2), KW_OK);
	unsigned char mac[KW_HMAC_LEN];
	cr_assert_eq(kw_hsm_hmac(s2, active(KW_KEY_PEPPER), (const unsigned char *)"x", 1, mac), KW_OK);
	kw_hsm_session_close(s2);
	/* Logged out again, a refresh must not lose the private keys. */
	kw_hsm_test_kill_session(sess, true);
	cr_assert_eq(kw_hsm_keys_refresh(hsm), KW_OK);
	active(KW_KEY_KEK);
	exercise("after logout and refresh");
}

/* ---- session copies -------------------------------------------------- */

/* Each session works on its own session-object copy of a token key: as
 * secret as the original, never a token object, and the same key. */
Test(hsm, session_copies_stay_secret_and_off_the_token)
{
	kw_hsm_key_info before[64], after[64], copies[8];
	size_t nb = 0, na = 0, nc = 0;
	cr_assert_eq(kw_hsm_key_list(sess, before, 64, &nb), KW_OK);
	kw_hsm_session *s2 = NULL;
	cr_assert_eq(kw_hsm_session_open(hsm, &s2), KW_OK);
	cr_assert_eq(kw_hsm_test_session_copies(s2, copies, 8, &nc), KW_OK);
	cr_assert_eq(nc, 0);

	unsigned char iv[KW_GCM_IV_LEN], ct[5 + KW_GCM_TAG_LEN], pt[5], sig[KW_ECDSA_SIG_LEN];
	unsigned char mac1[KW_HMAC_LEN], mac2[KW_HMAC_LEN];
	cr_assert_eq(
	    kw_hsm_gcm_encrypt(s2, active(KW_KEY_KEK), NULL, 0, (const unsigned char *)"hello", 5, iv, ct),
	    KW_OK);
	cr_assert_eq(kw_hsm_ecdsa_sign(s2, active(KW_KEY_JWT), (const unsigned char *)"m", 1, sig), KW_OK);
	cr_assert_eq(kw_hsm_hmac(s2, active(KW_KEY_PEPPER), (const unsigned char *)"x", 1, mac1), KW_OK);
	/* The other session, on its own copy, has the same keys. */
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, active(KW_KEY_KEK), iv, NULL, 0, ct, sizeof(ct), pt), KW_OK);
	cr_assert_eq(memcmp(pt, "hello", 5), 0);
	cr_assert_eq(kw_hsm_hmac(sess, active(KW_KEY_PEPPER), (const unsigned char *)"x", 1, mac2), KW_OK);
	cr_assert_eq(CRYPTO_memcmp(mac1, mac2, KW_HMAC_LEN), 0);

	cr_assert_eq(kw_hsm_test_session_copies(s2, copies, 8, &nc), KW_OK);
	cr_assert_eq(nc, 3, "copies: %zu", nc);
	bool seen[KW_KEY_FAMILY_COUNT] = {false};
	for (size_t i = 0; i < nc; i++) {
		seen[copies[i].family] = true;
		cr_assert(copies[i].sensitive && !copies[i].extractable && copies[i].never_extractable &&
		              copies[i].always_sensitive,
		          "copy of %s", copies[i].label);
	}
	cr_assert(seen[KW_KEY_KEK] && seen[KW_KEY_JWT] && seen[KW_KEY_PEPPER]);
	/* Using a key again reuses its copy. */
	cr_assert_eq(kw_hsm_gcm_decrypt(s2, active(KW_KEY_KEK), iv, NULL, 0, ct, sizeof(ct), pt), KW_OK);
	cr_assert_eq(kw_hsm_test_session_copies(s2, copies, 8, &nc), KW_OK);
	cr_assert_eq(nc, 3);
	/* Nothing was added to the token. */
	cr_assert_eq(kw_hsm_key_list(sess, after, 64, &na), KW_OK);
	cr_assert_eq(na, nb);
	kw_hsm_session_close(s2);
}

/* A logout ends every private session object of the application, copies
 * included: whichever session notices first, every session must go on
 * with the same keys, never naming a dead copy. */
static void logout_seen_by(bool other_first)
{
	kw_hsm_session *s2 = NULL;
	cr_assert_eq(kw_hsm_session_open(hsm, &s2), KW_OK);
	unsigned char iv[KW_GCM_IV_LEN], ct[5 + KW_GCM_TAG_LEN], pt[5];
	unsigned char mac1[KW_HMAC_LEN], mac2[KW_HMAC_LEN], sig[KW_ECDSA_SIG_LEN];
	cr_assert_eq(kw_hsm_hmac(s2, active(KW_KEY_PEPPER), (const unsigned char *)"x", 1, mac1), KW_OK);
	cr_assert_eq(
	    kw_hsm_gcm_encrypt(s2, active(KW_KEY_KEK), NULL, 0, (const unsigned char *)"hello", 5, iv, ct),
	    KW_OK);
	size_t before = 0, after = 9;
	cr_assert_eq(kw_hsm_test_count_session_objects(s2, &before), KW_OK);
	cr_assert_geq(before, 2);

	kw_hsm_test_kill_session(sess, true);
	if (other_first)
		cr_assert_eq(kw_hsm_ecdsa_sign(sess, active(KW_KEY_JWT), (const unsigned char *)"m", 1, sig),
		             KW_OK);
	cr_assert_eq(kw_hsm_hmac(s2, active(KW_KEY_PEPPER), (const unsigned char *)"x", 1, mac2), KW_OK);
	cr_assert_eq(CRYPTO_memcmp(mac1, mac2, KW_HMAC_LEN), 0, "another key after the logout");
	cr_assert_eq(kw_hsm_gcm_decrypt(s2, active(KW_KEY_KEK), iv, NULL, 0, ct, sizeof(ct), pt), KW_OK);
	cr_assert_eq(memcmp(pt, "hello", 5), 0);
	cr_assert_eq(kw_hsm_ecdsa_sign(sess, active(KW_KEY_JWT), (const unsigned char *)"m", 1, sig), KW_OK);
	/* The copies were made again, not left behind twice. */
	kw_hsm_key_info copies[8];
	size_t nc = 0;
	cr_assert_eq(kw_hsm_test_session_copies(s2, copies, 8, &nc), KW_OK);
	cr_assert_eq(nc, 2);
	cr_assert_eq(kw_hsm_test_count_session_objects(s2, &after), KW_OK);
	cr_assert_leq(after, before + 1, "session objects %zu -> %zu", before, after);
	kw_hsm_session_close(s2);
}

Test(hsm, session_copies_after_a_logout_seen_elsewhere_first)
{
	logout_seen_by(true);
}

Test(hsm, session_copies_after_a_logout_seen_here_first)
{
	logout_seen_by(false);
}

static bool has_copy(kw_hsm_session *s, kw_key_family f, uint32_t v)
{
	kw_hsm_key_info copies[8];
	size_t n = 0;
	cr_assert_eq(kw_hsm_test_session_copies(s, copies, 8, &n), KW_OK);
	for (size_t i = 0; i < n; i++)
		if (copies[i].family == f && copies[i].version == v)
			return true;
	return false;
}

/* A key destroyed through this kw_hsm cannot be used through a copy: the
 * table is consulted first, and the copy itself is destroyed. */
Test(hsm_scratch, session_copies_follow_the_key_table)
{
	char pin[1024];
	scratch_token("kwt-copies", pin, sizeof(pin));
	kw_hsm *h = NULL;
	cr_assert_eq(open_with("pkcs11:token=kwt-copies", pin, 0, &h), KW_OK);
	kw_hsm_session *s = NULL, *s2 = NULL;
	cr_assert_eq(kw_hsm_session_open(h, &s), KW_OK);
	cr_assert_eq(kw_hsm_session_open(h, &s2), KW_OK);
	int created = -1;
	cr_assert_eq(kw_hsm_token_init(s, &created), KW_OK);

	const kw_hsm_key *k1 = NULL, *k2 = NULL;
	cr_assert_eq(kw_hsm_key_active(h, KW_KEY_KEK, &k1), KW_OK);
	uint32_t v = kw_hsm_key_version(k1);
	cr_assert_eq(kw_hsm_key_generate(s, KW_KEY_KEK, v + 1), KW_OK);
	cr_assert_eq(kw_hsm_key_active(h, KW_KEY_KEK, &k2), KW_OK);
	cr_assert_eq(kw_hsm_key_version(k2), v + 1);

	unsigned char iv[KW_GCM_IV_LEN], ct[5 + KW_GCM_TAG_LEN], pt[5];
	cr_assert_eq(kw_hsm_gcm_encrypt(s2, k1, NULL, 0, (const unsigned char *)"hello", 5, iv, ct), KW_OK);
	cr_assert_eq(kw_hsm_gcm_encrypt(s2, k2, NULL, 0, (const unsigned char *)"hello", 5, iv, ct), KW_OK);
	cr_assert(has_copy(s2, KW_KEY_KEK, v) && has_copy(s2, KW_KEY_KEK, v + 1));

	unsigned char iv2[KW_GCM_IV_LEN], ct2[5 + KW_GCM_TAG_LEN];
	size_t objs_before = 0, objs_after = 0;
	cr_assert_eq(kw_hsm_test_count_session_objects(s, &objs_before), KW_OK);
	cr_assert_eq(kw_hsm_key_destroy(s, KW_KEY_KEK, v + 1), KW_OK);
	/* The next operation of s2, on any key, destroys the copy of the
	 * key that went and keeps the others. */
	cr_assert_eq(kw_hsm_gcm_encrypt(s2, k1, NULL, 0, (const unsigned char *)"hello", 5, iv2, ct2), KW_OK);
	cr_assert(!has_copy(s2, KW_KEY_KEK, v + 1), "the copy of a destroyed key survived");
	cr_assert(has_copy(s2, KW_KEY_KEK, v), "the copy of a live key was dropped");
	/* ... in the token, not only in our bookkeeping. */
	cr_assert_eq(kw_hsm_test_count_session_objects(s, &objs_after), KW_OK);
	cr_assert_eq(objs_after, objs_before - 1);
	cr_assert_eq(kw_hsm_gcm_decrypt(s2, k2, iv, NULL, 0, ct, sizeof(ct), pt), KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_hsm_gcm_encrypt(s2, k2, NULL, 0, (const unsigned char *)"hello", 5, iv, ct),
	             KW_ERR_NOT_FOUND);
	cr_assert(!has_copy(s2, KW_KEY_KEK, v + 1));
	cr_assert_eq(kw_hsm_gcm_decrypt(s2, k1, iv2, NULL, 0, ct2, sizeof(ct2), pt), KW_OK);

	/* Made again under the same label, it is a new token object: a new copy. */
	cr_assert_eq(kw_hsm_key_generate(s, KW_KEY_KEK, v + 1), KW_OK);
	cr_assert_eq(kw_hsm_key_active(h, KW_KEY_KEK, &k2), KW_OK);
	cr_assert_eq(kw_hsm_gcm_encrypt(s2, k2, NULL, 0, (const unsigned char *)"hello", 5, iv, ct), KW_OK);
	cr_assert(has_copy(s2, KW_KEY_KEK, v + 1));
	cr_assert_eq(kw_hsm_key_destroy(s, KW_KEY_KEK, v + 1), KW_OK);
	cr_assert_eq(kw_hsm_gcm_decrypt(s2, k2, iv, NULL, 0, ct, sizeof(ct), pt), KW_ERR_NOT_FOUND);
	cr_assert(!has_copy(s2, KW_KEY_KEK, v + 1));

	/* Destroyed by someone else (here a second kw_hsm, as keywardctl
	 * would be), a key stays usable through a copy until this kw_hsm
	 * re-reads the token's keys: the window docs/operations.md names. */
	cr_assert_eq(kw_hsm_key_generate(s, KW_KEY_KEK, v + 1), KW_OK);
	cr_assert_eq(kw_hsm_key_active(h, KW_KEY_KEK, &k2), KW_OK);
	cr_assert_eq(kw_hsm_gcm_encrypt(s2, k2, NULL, 0, (const unsigned char *)"hello", 5, iv, ct), KW_OK);
	kw_hsm *other = NULL;
	kw_hsm_session *so = NULL;
	cr_assert_eq(open_with("pkcs11:token=kwt-copies", pin, 0, &other), KW_OK);
	cr_assert_eq(kw_hsm_session_open(other, &so), KW_OK);
	cr_assert_eq(kw_hsm_key_destroy(so, KW_KEY_KEK, v + 1), KW_OK);
	kw_hsm_session_close(so);
	cr_assert_eq(kw_hsm_gcm_decrypt(s2, k2, iv, NULL, 0, ct, sizeof(ct), pt), KW_OK);
	cr_assert_eq(kw_hsm_keys_refresh(h), KW_OK);
	cr_assert_eq(kw_hsm_gcm_decrypt(s2, k2, iv, NULL, 0, ct, sizeof(ct), pt), KW_ERR_NOT_FOUND);
	cr_assert(!has_copy(s2, KW_KEY_KEK, v + 1));

	/* An idle session loses its copy of a retired key at once when swept
	 * (keywardd sweeps every idle worker when the key table changes),
	 * without waiting for an operation of its own. */
	cr_assert_eq(kw_hsm_key_generate(s, KW_KEY_KEK, v + 1), KW_OK);
	cr_assert_eq(kw_hsm_key_active(h, KW_KEY_KEK, &k2), KW_OK);
	cr_assert_eq(kw_hsm_gcm_encrypt(s2, k2, NULL, 0, (const unsigned char *)"hello", 5, iv, ct), KW_OK);
	cr_assert(has_copy(s2, KW_KEY_KEK, v + 1));
	size_t idle_before = 0, idle_after = 0;
	cr_assert_eq(kw_hsm_test_count_session_objects(s, &idle_before), KW_OK);
	cr_assert_eq(kw_hsm_key_destroy(s, KW_KEY_KEK, v + 1), KW_OK);
	kw_hsm_session_sweep(s2);
	cr_assert(!has_copy(s2, KW_KEY_KEK, v + 1), "the idle copy of a retired key survived the sweep");
	cr_assert_eq(kw_hsm_test_count_session_objects(s, &idle_after), KW_OK);
	cr_assert_eq(idle_after, idle_before - 1, "the copy is still in the token");

	kw_hsm_session_close(s2);
	kw_hsm_session_close(s);
	kw_hsm_close(h);
	kw_hsm_close(other);
}

/* With token_objects_only every operation names the token object. */
Test(hsm_scratch, token_objects_only_makes_no_copies)
{
	char pin[1024];
	scratch_token("kwt-copies", pin, sizeof(pin));
	kw_hsm_options opt = {
	    .module_path = kwt_env("KEYWARD_HSM_MODULE"),
	    .token_uri = "pkcs11:token=kwt-copies",
	    .pin_file = pin,
	    .token_objects_only = true,
	};
	kw_hsm *h = NULL;
	cr_assert_eq(kw_hsm_open(&opt, &h), KW_OK);
	kw_hsm_session *s = NULL;
	cr_assert_eq(kw_hsm_session_open(h, &s), KW_OK);
	int created = -1;
	cr_assert_eq(kw_hsm_token_init(s, &created), KW_OK);
	const kw_hsm_key *k = NULL;
	cr_assert_eq(kw_hsm_key_active(h, KW_KEY_KEK, &k), KW_OK);
	unsigned char iv[KW_GCM_IV_LEN], ct[5 + KW_GCM_TAG_LEN], pt[5];
	cr_assert_eq(kw_hsm_gcm_encrypt(s, k, NULL, 0, (const unsigned char *)"hello", 5, iv, ct), KW_OK);
	cr_assert_eq(kw_hsm_gcm_decrypt(s, k, iv, NULL, 0, ct, sizeof(ct), pt), KW_OK);
	kw_hsm_key_info copies[8];
	size_t n = 9;
	cr_assert_eq(kw_hsm_test_session_copies(s, copies, 8, &n), KW_OK);
	cr_assert_eq(n, 0);
	kw_hsm_session_close(s);
	kw_hsm_close(h);
}

/* ---- errors at open -------------------------------------------------- */

Test(hsm_scratch, uri_without_match_or_ambiguous)
{
	char pin[1024];
	scratch_token("kwt-scratch", pin, sizeof(pin));
	kw_hsm *h = NULL;
	const char *pin_file = kwt_env("KEYWARD_HSM_PIN_SOURCE");
	cr_assert_eq(open_with("pkcs11:token=no-such-token-here", pin_file, 0, &h), KW_ERR_NOT_FOUND);
	cr_assert_null(h);
	cr_assert_eq(open_with("https://example.com/", pin_file, 0, &h), KW_ERR_CONFIG);
	/* Both the test token and the scratch token are SoftHSM tokens. */
	cr_assert_eq(open_with("pkcs11:model=SoftHSM%20v2", pin_file, 0, &h), KW_ERR_CONFIG);
	cr_assert_null(h);
}

Test(hsm_scratch, pin_file_missing)
{
	kw_hsm *h = NULL;
	kw_err err = open_with(kwt_env("KEYWARD_HSM_URI"), "/nonexistent/keyward/user.pin", 0, &h);
	cr_assert_eq(err, KW_ERR_CONFIG, "%s", kw_err_str(err));
	cr_assert_null(h);
}

Test(hsm_scratch, wrong_pin_is_refused_once)
{
	char pin[1024], wrong[1100];
	scratch_token("kwt-pin", pin, sizeof(pin));
	snprintf(wrong, sizeof(wrong), "%s.wrong", pin);
	FILE *f = fopen(wrong, "w");
	cr_assert_not_null(f);
	fputs("definitely-not-the-pin\n", f);
	fclose(f);
	kw_hsm *h = NULL;
	cr_assert_eq(open_with("pkcs11:token=kwt-pin", wrong, 0, &h), KW_ERR_PIN);
	cr_assert_null(h);
	remove(wrong);
	/* The right PIN still works: one refusal did not lock the token. */
	cr_assert_eq(open_with("pkcs11:token=kwt-pin", pin, 0, &h), KW_OK);
	kw_hsm_close(h);
}

Test(hsm_scratch, session_cap)
{
	kw_hsm *h = NULL;
	cr_assert_eq(open_with(kwt_env("KEYWARD_HSM_URI"), kwt_env("KEYWARD_HSM_PIN_SOURCE"), 2, &h), KW_OK);
	kw_hsm_session *a = NULL, *b = NULL, *c = NULL;
	cr_assert_eq(kw_hsm_session_open(h, &a), KW_OK);
	cr_assert_eq(kw_hsm_session_open(h, &b), KW_OK);
	cr_assert_eq(kw_hsm_session_open(h, &c), KW_ERR_BUSY);
	cr_assert_null(c);
	kw_hsm_session_close(a);
	cr_assert_eq(kw_hsm_session_open(h, &c), KW_OK);
	cr_assert_eq(kw_hsm_session_ping(c), KW_OK);
	kw_hsm_session_close(b);
	kw_hsm_session_close(c);
	kw_hsm_close(h);
}

/* ---- rotation (scratch token) ---------------------------------------- */

Test(hsm_scratch, rotation_generate_get_destroy)
{
	char pin[1024];
	scratch_token("kwt-scratch", pin, sizeof(pin));
	kw_hsm *h = NULL;
	cr_assert_eq(open_with("pkcs11:token=kwt-scratch", pin, 0, &h), KW_OK);
	kw_hsm_session *s = NULL;
	cr_assert_eq(kw_hsm_session_open(h, &s), KW_OK);
	int created = -1;
	cr_assert_eq(kw_hsm_token_init(s, &created), KW_OK);
	cr_assert(created == 0 || created == KW_KEY_FAMILY_COUNT, "created %d", created);
	cr_assert_eq(kw_hsm_token_init(s, &created), KW_OK);
	cr_assert_eq(created, 0);

	for (int f = 0; f < KW_KEY_FAMILY_COUNT; f++) {
		const kw_hsm_key *old = NULL, *cur = NULL, *again = NULL;
		cr_assert_eq(kw_hsm_key_active(h, (kw_key_family)f, &old), KW_OK);
		uint32_t v = kw_hsm_key_version(old);
		cr_assert_eq(kw_hsm_key_generate(s, (kw_key_family)f, v + 1), KW_OK);
		cr_assert_eq(kw_hsm_key_generate(s, (kw_key_family)f, v + 1), KW_ERR_EXISTS);
		cr_assert_eq(kw_hsm_key_active(h, (kw_key_family)f, &cur), KW_OK);
		cr_assert_eq(kw_hsm_key_version(cur), v + 1);
		cr_assert_eq(kw_hsm_key_get(h, (kw_key_family)f, v, &again), KW_OK);
		cr_assert_eq(again, old);
	}
	/* The new keys carry the same attributes as the first ones. */
	kw_hsm_key_info infos[64];
	size_t n = 0;
	cr_assert_eq(kw_hsm_key_list(s, infos, 64, &n), KW_OK);
	for (size_t i = 0; i < n; i++) {
		if (!infos[i].is_private_half)
			continue;
		cr_assert(infos[i].sensitive && !infos[i].extractable && infos[i].never_extractable, "%s",
		          infos[i].label);
	}

	const kw_hsm_key *k1 = NULL, *k2 = NULL;
	cr_assert_eq(kw_hsm_key_active(h, KW_KEY_KEK, &k2), KW_OK);
	uint32_t v2 = kw_hsm_key_version(k2);
	cr_assert_eq(kw_hsm_key_get(h, KW_KEY_KEK, v2 - 1, &k1), KW_OK);
	unsigned char iv1[KW_GCM_IV_LEN], iv2[KW_GCM_IV_LEN], c1[5 + KW_GCM_TAG_LEN], c2[5 + KW_GCM_TAG_LEN],
	    p[5];
	cr_assert_eq(kw_hsm_gcm_encrypt(s, k1, NULL, 0, (const unsigned char *)"hello", 5, iv1, c1), KW_OK);
	cr_assert_eq(kw_hsm_gcm_encrypt(s, k2, NULL, 0, (const unsigned char *)"hello", 5, iv2, c2), KW_OK);
	/* Blobs stay bound to the KEK version that made them. */
	cr_assert_eq(kw_hsm_gcm_decrypt(s, k2, iv1, NULL, 0, c1, sizeof(c1), p), KW_ERR_VERIFY);
	cr_assert_eq(kw_hsm_gcm_decrypt(s, k1, iv1, NULL, 0, c1, sizeof(c1), p), KW_OK);
	cr_assert_eq(kw_hsm_gcm_decrypt(s, k2, iv2, NULL, 0, c2, sizeof(c2), p), KW_OK);

	/* Retire the new versions again, so every run starts from the same state. */
	for (int f = 0; f < KW_KEY_FAMILY_COUNT; f++) {
		const kw_hsm_key *cur = NULL, *prev = NULL, *gone = NULL;
		cr_assert_eq(kw_hsm_key_active(h, (kw_key_family)f, &cur), KW_OK);
		uint32_t v = kw_hsm_key_version(cur);
		cr_assert_eq(kw_hsm_key_destroy(s, (kw_key_family)f, v), KW_OK);
		cr_assert_eq(kw_hsm_key_destroy(s, (kw_key_family)f, v), KW_ERR_NOT_FOUND);
		cr_assert_eq(kw_hsm_key_get(h, (kw_key_family)f, v, &gone), KW_ERR_NOT_FOUND);
		cr_assert_eq(kw_hsm_key_active(h, (kw_key_family)f, &prev), KW_OK);
		cr_assert_eq(kw_hsm_key_version(prev), v - 1);
		/* The pointer of the destroyed key stays valid but unusable. */
		cr_assert_eq(kw_hsm_key_version(cur), v);
	}
	cr_assert_eq(kw_hsm_gcm_encrypt(s, k2, NULL, 0, (const unsigned char *)"hello", 5, iv2, c2),
	             KW_ERR_NOT_FOUND);
	cr_assert_eq(kw_hsm_gcm_decrypt(s, k1, iv1, NULL, 0, c1, sizeof(c1), p), KW_OK);
	kw_hsm_session_close(s);
	kw_hsm_close(h);
}

/* ---- stats and concurrency ------------------------------------------- */

Test(hsm, stats_count_operations)
{
	kw_hsm_stats before, after;
	kw_hsm_stats_get(hsm, &before);
	unsigned char buf[16], mac[KW_HMAC_LEN];
	cr_assert_eq(kw_hsm_random(sess, buf, sizeof(buf)), KW_OK);
	cr_assert_eq(kw_hsm_hmac(sess, active(KW_KEY_PEPPER), buf, sizeof(buf), mac), KW_OK);
	unsigned char iv[KW_GCM_IV_LEN] = {0}, ct[KW_GCM_TAG_LEN] = {0}, pt[1];
	cr_assert_eq(kw_hsm_gcm_decrypt(sess, active(KW_KEY_KEK), iv, NULL, 0, ct, sizeof(ct), pt),
	             KW_ERR_VERIFY);
	kw_hsm_stats_get(hsm, &after);
	cr_assert_eq(after.count[KW_HSM_OP_RANDOM], before.count[KW_HSM_OP_RANDOM] + 1);
	cr_assert_eq(after.count[KW_HSM_OP_SIGN_HMAC], before.count[KW_HSM_OP_SIGN_HMAC] + 1);
	cr_assert_eq(after.count[KW_HSM_OP_DECRYPT], before.count[KW_HSM_OP_DECRYPT] + 1);
	cr_assert_eq(after.errors[KW_HSM_OP_DECRYPT], before.errors[KW_HSM_OP_DECRYPT] + 1);
	cr_assert_eq(after.errors[KW_HSM_OP_SIGN_HMAC], before.errors[KW_HSM_OP_SIGN_HMAC]);
	cr_assert_geq(after.usec[KW_HSM_OP_SIGN_HMAC], before.usec[KW_HSM_OP_SIGN_HMAC]);
	cr_assert_str_eq(kw_hsm_op_name(KW_HSM_OP_RANDOM), "random");
	cr_assert_str_eq(kw_hsm_op_name(KW_HSM_OP_SIGN_ECDSA), "ecdsa_sign");
}

typedef struct worker_arg {
	int id;
	int failures;
	kw_err first;
} worker_arg;

static void *worker(void *p)
{
	worker_arg *w = p;
	kw_hsm_session *s = NULL;
	kw_err err = kw_hsm_session_open(hsm, &s);
	if (err != KW_OK) {
		w->failures++;
		w->first = err;
		return NULL;
	}
	const kw_hsm_key *pepper = NULL, *kek = NULL;
	if (kw_hsm_key_active(hsm, KW_KEY_PEPPER, &pepper) != KW_OK ||
	    kw_hsm_key_active(hsm, KW_KEY_KEK, &kek) != KW_OK)
		w->failures++;
	for (int i = 0; i < 200 && w->failures == 0; i++) {
		unsigned char msg[32], mac[KW_HMAC_LEN], mac2[KW_HMAC_LEN], iv[KW_GCM_IV_LEN],
		    ct[sizeof(msg) + KW_GCM_TAG_LEN], back[sizeof(msg)];
		snprintf((char *)msg, sizeof(msg), "worker %d message %d", w->id, i);
		err = kw_hsm_hmac(s, pepper, msg, sizeof(msg), mac);
		if (err == KW_OK)
			err = kw_hsm_hmac(s, pepper, msg, sizeof(msg), mac2);
		if (err == KW_OK && memcmp(mac, mac2, sizeof(mac)) != 0)
			err = KW_ERR_INTERNAL;
		if (err == KW_OK)
			err = kw_hsm_gcm_encrypt(s, kek, mac, sizeof(mac), msg, sizeof(msg), iv, ct);
		if (err == KW_OK)
			err = kw_hsm_gcm_decrypt(s, kek, iv, mac, sizeof(mac), ct, sizeof(ct), back);
		if (err == KW_OK && memcmp(back, msg, sizeof(msg)) != 0)
			err = KW_ERR_INTERNAL;
		if (err != KW_OK) {
			w->failures++;
			w->first = err;
		}
	}
	kw_hsm_session_close(s);
	return NULL;
}

Test(hsm, concurrent_sessions)
{
	pthread_t t[4];
	worker_arg args[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (worker_arg){.id = i, .failures = 0, .first = KW_OK};
		cr_assert_eq(pthread_create(&t[i], NULL, worker, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(args[i].failures, 0, "worker %d: %s", i, kw_err_str(args[i].first));
	/* A refresh while workers run must not disturb them. */
	cr_assert_eq(kw_hsm_keys_refresh(hsm), KW_OK);
}

Test(hsm, session_keys_are_private_to_tests)
{
	static const unsigned char k[32] = {1, 2, 3};
	const kw_hsm_key *key = NULL;
	cr_assert_eq(kw_hsm_test_import_key(sess, KW_KEY_JWT, k, sizeof(k), &key), KW_ERR_INVALID);
	cr_assert_eq(kw_hsm_test_import_key(sess, KW_KEY_KEK, k, 7, &key), KW_ERR_INVALID);
	cr_assert_null(key);
	cr_assert_eq(kw_hsm_test_import_key(sess, KW_KEY_AUDIT, k, sizeof(k), &key), KW_OK);
	cr_assert_eq(kw_hsm_key_family(key), KW_KEY_AUDIT);
	/* Imported keys never show up among the token's keys. */
	kw_hsm_key_info infos[128];
	size_t n = 0;
	cr_assert_eq(kw_hsm_key_list(sess, infos, 128, &n), KW_OK);
	for (size_t i = 0; i < n; i++)
		cr_assert(strncmp(infos[i].label, "keyward/", 8) == 0);
}
