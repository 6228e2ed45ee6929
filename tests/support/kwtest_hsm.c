/* kwtest_hsm.c — the environment and the HSM fixture of the test tiers.
 *
 * The token is the one scripts/dev.sh test provisions (SoftHSM, with
 * SOFTHSM2_CONF); a missing variable fails the test instead of skipping. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "kwtest.h"

const char *kwt_env(const char *name)
{
	const char *v = getenv(name);
	if (v == NULL || v[0] == '\0')
		cr_assert_fail("%s is not set; run scripts/dev.sh test", name);
	return v;
}

kw_hsm *kwt_hsm_open(void)
{
	kw_hsm_options opt = {
	    .module_path = kwt_env("KEYWARD_HSM_MODULE"),
	    .token_uri = kwt_env("KEYWARD_HSM_URI"),
	    .pin_file = kwt_env("KEYWARD_HSM_PIN_SOURCE"),
	    .max_sessions = 0,
	};
	(void)kwt_env("SOFTHSM2_CONF");
	kw_hsm *hsm = NULL;
	kw_err err = kw_hsm_open(&opt, &hsm);
	cr_assert_eq(err, KW_OK, "kw_hsm_open: %s", kw_err_str(err));
	kw_hsm_session *s = NULL;
	err = kw_hsm_session_open(hsm, &s);
	cr_assert_eq(err, KW_OK, "kw_hsm_session_open: %s", kw_err_str(err));
	int created = 0;
	err = kw_hsm_token_init(s, &created);
	cr_assert_eq(err, KW_OK, "kw_hsm_token_init: %s", kw_err_str(err));
	kw_hsm_session_close(s);
	return hsm;
}
