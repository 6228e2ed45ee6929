/* log.c — timestamped single-line logging, safe from any thread.
 *
 * Lines go to stderr (which systemd sends to the journal, so each line
 * starts with a <N> syslog priority prefix there) or to a file reopened on
 * SIGHUP. Formatting happens into a stack buffer, then one write(2), so
 * lines from different threads never interleave. */
#include "keyward/core/log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = KW_LOG_INFO;
static atomic_int log_fd = 2;
static atomic_bool log_journal;

void kw_log_set_level(kw_log_level level)
{
	atomic_store(&log_level, (int)level);
}

bool kw_log_parse_level(const char *s, kw_log_level *out)
{
	static const struct {
		const char *name;
		kw_log_level level;
	} names[] = {{"err", KW_LOG_ERR},
	             {"error", KW_LOG_ERR},
	             {"warn", KW_LOG_WARN},
	             {"info", KW_LOG_INFO},
	             {"debug", KW_LOG_DEBUG}};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i].name) == 0) {
			*out = names[i].level;
			return true;
		}
	}
	return false;
}

int kw_log_open(const char *path)
{
	if (path == NULL || path[0] == '\0') {
		int old = atomic_exchange(&log_fd, 2);
		if (old > 2)
			close(old);
		/* Under systemd, stderr is the journal: use its priority prefix. */
		atomic_store(&log_journal, getenv("JOURNAL_STREAM") != NULL);
		return 0;
	}
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	int old = atomic_exchange(&log_fd, fd);
	if (old > 2)
		close(old);
	atomic_store(&log_journal, false);
	return 0;
}

__attribute__((format(printf, 2, 0))) static void emit(kw_log_level level, const char *fmt, va_list ap)
{
	static const char *names[] = {[KW_LOG_ERR] = "ERROR",
	                              [KW_LOG_WARN] = "WARN",
	                              [KW_LOG_NOTICE] = "NOTICE",
	                              [KW_LOG_INFO] = "INFO",
	                              [KW_LOG_DEBUG] = "DEBUG"};
	char line[2048];
	size_t n = 0;
	if (atomic_load(&log_journal)) {
		n = (size_t)snprintf(line, sizeof(line), "<%d>%s ", (int)level, names[level]);
	} else {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000,
		                      names[level]);
	}
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	if (m < 0)
		return;
	n += (size_t)m;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	/* A log line is one line: fold any newline a message smuggled in. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	ssize_t w = write(atomic_load(&log_fd), line, n);
	(void)w;
}

void kw_log(kw_log_level level, const char *fmt, ...)
{
	if ((int)level > atomic_load(&log_level))
		return;
	va_list ap;
	va_start(ap, fmt);
	emit(level, fmt, ap);
	va_end(ap);
}

void kw_log_always(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit(KW_LOG_NOTICE, fmt, ap);
	va_end(ap);
}
