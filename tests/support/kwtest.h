/* kwtest.h — fixtures shared by the integration and black-box tiers.
 *
 * Every fixture talks to real parts: the SoftHSM token named by
 * KEYWARD_HSM_MODULE / KEYWARD_HSM_URI / KEYWARD_HSM_PIN_SOURCE (with
 * SOFTHSM2_CONF), and the PostgreSQL cluster at KEYWARD_PG_ADMIN (a
 * superuser conninfo). scripts/dev.sh test provisions both. A missing variable
 * fails the test: nothing is skipped silently. */
#ifndef KWTEST_H
#define KWTEST_H

#include <stddef.h>

#include "keyward/db/db.h"
#include "keyward/hsm/hsm.h"

/* getenv() that fails the current test when the variable is unset. */
const char *kwt_env(const char *name);

/* Opens the test token and makes sure every key family has version 1. */
kw_hsm *kwt_hsm_open(void);

/* A fresh database with every migration applied. `admin` connects as the
 * cluster superuser (schema owner), `app` as a login role that is a member
 * of keyward_app and so is subject to RLS. */
typedef struct kwt_db {
	char name[64];
	char admin[512];
	char app[512];
} kwt_db;
void kwt_db_create(kwt_db *out);
void kwt_db_drop(const kwt_db *db);
/* Runs SQL as the superuser on db (for tampering and inspection). Fails
 * the test on error. Returns the first column of the first row, malloc'd,
 * or NULL when the statement returns no rows. */
char *kwt_db_admin_sql(const kwt_db *db, const char *sql);

#endif
