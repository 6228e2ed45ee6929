/* Integration: ES256 tokens signed in the SoftHSM token verify with the
 * public key read back from it, and every alteration is refused. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "keyward/auth/jwt.h"
#include "kwtest.h"

static kw_hsm *hsm;
static kw_hsm_session *s;
static kw_jwt_key pub;
static const kw_hsm_key *k;

static void setup(void)
{
	hsm = kwt_hsm_open();
	cr_assert_eq(kw_hsm_session_open(hsm, &s), KW_OK);
	cr_assert_eq(kw_hsm_key_active(hsm, KW_KEY_JWT, &k), KW_OK);
	cr_assert_eq(kw_jwt_key_from_hsm(hsm, k, &pub), KW_OK);
}

static void teardown(void)
{
	kw_hsm_session_close(s);
	kw_hsm_close(hsm);
}

TestSuite(jwt_hsm, .init = setup, .fini = teardown);

static char *sign(void)
{
	json_t *c = json_pack("{s:s, s:s, s:i}", "sub", "user-1", "tid", "t-1", "exp", 2000000000);
	char *tok = NULL;
	cr_assert_eq(kw_jwt_sign(s, k, pub.kid, c, &tok), KW_OK);
	json_decref(c);
	return tok;
}

Test(jwt_hsm, sign_then_verify)
{
	char *tok = sign();
	json_t *claims = NULL;
	cr_assert_eq(kw_jwt_verify(tok, strlen(tok), &pub, 1, &claims), KW_OK);
	cr_assert_str_eq(json_string_value(json_object_get(claims, "sub")), "user-1");
	json_decref(claims);
	/* Two signatures of the same claims differ (ECDSA is randomized) and both verify. */
	char *tok2 = sign();
	cr_assert_str_neq(tok, tok2);
	cr_assert_eq(kw_jwt_verify(tok2, strlen(tok2), &pub, 1, &claims), KW_OK);
	json_decref(claims);
	free(tok);
	free(tok2);
}

Test(jwt_hsm, every_alteration_is_refused)
{
	char *tok = sign();
	size_t n = strlen(tok);
	int refused = 0, tried = 0;
	for (size_t i = 0; i < n; i += 3) {
		if (tok[i] == '.')
			continue;
		char saved = tok[i];
		tok[i] = saved == 'A' ? 'B' : 'A';
		json_t *claims = NULL;
		kw_err err = kw_jwt_verify(tok, n, &pub, 1, &claims);
		tried++;
		refused += err != KW_OK;
		json_decref(claims);
		tok[i] = saved;
	}
	cr_assert_eq(refused, tried, "%d of %d altered tokens verified", tried - refused, tried);
	free(tok);
}

Test(jwt_hsm, other_key_does_not_verify)
{
	char *tok = sign();
	kw_jwt_key other = pub;
	other.point[40] ^= 1; /* not even on the curve, or another key */
	json_t *claims = NULL;
	cr_assert_neq(kw_jwt_verify(tok, strlen(tok), &other, 1, &claims), KW_OK);
	free(tok);
}

/* An independent JOSE implementation (PyJWT, from Debian) verifies our
 * token with nothing but our JWKS. */
Test(jwt_hsm, independent_library_verifies_with_jwks)
{
	char *tok = sign();
	char *jwks = kw_jwks_json(&pub, 1);
	char dir[] = "/tmp/kwjwtXXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	char path[128], cmd[1024];
	snprintf(path, sizeof(path), "%s/token", dir);
	FILE *f = fopen(path, "w");
	fputs(tok, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/jwks.json", dir);
	f = fopen(path, "w");
	fputs(jwks, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd),
	         "/usr/bin/python3 -c 'import jwt, json, sys\n"
	         "d = sys.argv[1]\n"
	         "keys = json.load(open(d + \"/jwks.json\"))[\"keys\"]\n"
	         "tok = open(d + \"/token\").read()\n"
	         "kid = jwt.get_unverified_header(tok)[\"kid\"]\n"
	         "k = [jwt.PyJWK(x) for x in keys if x[\"kid\"] == kid][0]\n"
	         "c = jwt.decode(tok, key=k.key, algorithms=[\"ES256\"])\n"
	         "assert c[\"sub\"] == \"user-1\", c\n"
	         "' %s",
	         dir);
	cr_assert_eq(system(cmd), 0, "PyJWT refused our token");
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
	free(jwks);
	free(tok);
}
