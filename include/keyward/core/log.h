/* log.h — one line per event to stderr (journald under systemd) or a file.
 *
 * Never pass a secret, PIN, token or plaintext key to these functions: log
 * lines are assumed to be read by operators and shipped off the host. */
#ifndef KEYWARD_LOG_H
#define KEYWARD_LOG_H

#include <stdbool.h>

typedef enum kw_log_level {
	KW_LOG_ERR = 3,
	KW_LOG_WARN = 4,
	KW_LOG_NOTICE = 5, /* kw_log_always only */
	KW_LOG_INFO = 6,
	KW_LOG_DEBUG = 7,
} kw_log_level;

void kw_log_set_level(kw_log_level level);
/* "err", "warn", "info", "debug"; false for anything else. */
bool kw_log_parse_level(const char *s, kw_log_level *out);
/* NULL path logs to stderr. Thread-safe; also used on SIGHUP to reopen. */
int kw_log_open(const char *path);
void kw_log(kw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A NOTICE line whatever the level: for records that must reach the log
 * (audit checkpoints). */
void kw_log_always(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define kw_err_log(...) kw_log(KW_LOG_ERR, __VA_ARGS__)
#define kw_warn(...)    kw_log(KW_LOG_WARN, __VA_ARGS__)
#define kw_info(...)    kw_log(KW_LOG_INFO, __VA_ARGS__)
#define kw_debug(...)   kw_log(KW_LOG_DEBUG, __VA_ARGS__)

#endif
