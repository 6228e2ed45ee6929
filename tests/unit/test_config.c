/* Unit tests: the INI loader and environment overrides. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/core/config.h"

static kw_config cfg;
static char err[256];

extern char **environ;

static void fresh(void)
{
	/* Defaults are tested without the caller's KEYWARD_* overrides. */
	for (int again = 1; again;) {
		again = 0;
		for (char **e = environ; *e; e++) {
			if (strncmp(*e, "KEYWARD_", 8) == 0) {
				char name[128];
				snprintf(name, sizeof(name), "%.*s", (int)(strchr(*e, '=') - *e), *e);
				unsetenv(name);
				again = 1;
				break;
			}
		}
	}
	cr_assert_eq(kw_config_load(&cfg, NULL, err, sizeof(err)), KW_OK, "%s", err);
}

static void drop(void)
{
	kw_config_free(&cfg);
}

TestSuite(config, .init = fresh, .fini = drop);

Test(config, defaults_are_safe)
{
	cr_assert_eq(cfg.development, false, "production is the default mode");
	cr_assert_str_eq(cfg.listen, "127.0.0.1:8080");
	cr_assert_eq(cfg.allow_insecure_http, false);
	cr_assert_eq(cfg.max_body, 1048576);
	cr_assert_eq(cfg.max_headers, 65536);
	cr_assert_str_eq(cfg.hsm_pin_source, "");
}

Test(config, parses_sections_comments_quotes)
{
	const char text[] =
	    "# comment\n; another\nmode = development\n\n[http]\nlisten = \"[::1]:9000\"\n"
	    "workers=7\n  allow_insecure_http = yes  \n[hsm]\nuri = pkcs11:token=abc;serial=1\n";
	cr_assert_eq(kw_config_parse(&cfg, text, strlen(text), err, sizeof(err)), KW_OK, "%s", err);
	cr_assert(cfg.development);
	cr_assert_str_eq(cfg.listen, "[::1]:9000");
	cr_assert_eq(cfg.workers, 7);
	cr_assert(cfg.allow_insecure_http);
	cr_assert_str_eq(cfg.hsm_uri, "pkcs11:token=abc;serial=1");
}

Test(config, unknown_key_names_the_line)
{
	const char text[] = "[http]\nlisten = 1.2.3.4:1\nlsiten = oops\n";
	cr_assert_eq(kw_config_parse(&cfg, text, strlen(text), err, sizeof(err)), KW_ERR_CONFIG);
	cr_assert(strstr(err, "line 3") && strstr(err, "http.lsiten"), "%s", err);
}

Test(config, bad_values_refused)
{
	const char *bad[] = {"mode = staging\n",
	                     "[http]\nworkers = -1\n",
	                     "[http]\nworkers = 9x\n",
	                     "[http]\nmax_body = 0\n",
	                     "[http]\nallow_insecure_http = maybe\n",
	                     "[http\nlisten = x\n",
	                     "just text\n",
	                     "[http]\nworkers = 99999999999999999999\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(kw_config_parse(&cfg, bad[i], strlen(bad[i]), err, sizeof(err)), KW_ERR_CONFIG,
		             "accepted: %s", bad[i]);
}

Test(config, nul_byte_refused)
{
	const char text[] = "[http]\nlisten = a\0b\n";
	cr_assert_eq(kw_config_parse(&cfg, text, sizeof(text) - 1, err, sizeof(err)), KW_ERR_CONFIG);
}

Test(config, environment_overrides_file)
{
	char path[] = "/tmp/kwcfgXXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	fputs("[http]\nlisten = 127.0.0.1:1111\nworkers = 3\n", f);
	fclose(f);
	setenv("KEYWARD_HTTP_LISTEN", "127.0.0.1:2222", 1);
	kw_config c2;
	cr_assert_eq(kw_config_load(&c2, path, err, sizeof(err)), KW_OK, "%s", err);
	cr_assert_str_eq(c2.listen, "127.0.0.1:2222");
	cr_assert_eq(c2.workers, 3);
	kw_config_free(&c2);
	setenv("KEYWARD_MODE", "bogus", 1);
	cr_assert_eq(kw_config_load(&c2, path, err, sizeof(err)), KW_ERR_CONFIG);
	cr_assert(strstr(err, "KEYWARD_MODE"), "%s", err);
	kw_config_free(&c2);
	unsetenv("KEYWARD_MODE");
	unsetenv("KEYWARD_HTTP_LISTEN");
	unlink(path);
}

Test(config, missing_file_is_an_error)
{
	kw_config c2;
	cr_assert_eq(kw_config_load(&c2, "/nonexistent/keywardd.conf", err, sizeof(err)), KW_ERR_CONFIG);
	kw_config_free(&c2);
}
