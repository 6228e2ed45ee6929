/* migrate.h — migrations/NNNN_name.{up,down}.sql, recorded with checksums.
 *
 * Each migration runs in its own transaction together with its row in
 * schema_migrations(version, name, checksum, applied_at). An applied
 * migration whose file changed is an error (KW_ERR_CONFLICT): history is
 * never rewritten silently. */
#ifndef KEYWARD_MIGRATE_H
#define KEYWARD_MIGRATE_H

#include <stdio.h>

#include "keyward/core/error.h"
#include "keyward/db/db.h"

/* The schema version this build of keywardd expects at boot. */
#define KW_SCHEMA_VERSION 14

/* Applies every pending migration in order; *applied = how many. */
KW_MUST_CHECK kw_err kw_migrate_up(kw_db *db, const char *dir, int *applied);
/* Reverts the newest `steps` applied migrations. */
KW_MUST_CHECK kw_err kw_migrate_down(kw_db *db, const char *dir, int steps);
/* Writes one line per migration: version, name, applied|pending|changed. */
KW_MUST_CHECK kw_err kw_migrate_status(kw_db *db, const char *dir, FILE *out);
/* Highest applied version (0 when none, or no schema_migrations table). */
KW_MUST_CHECK kw_err kw_migrate_current(kw_db *db, int *version);

#endif
