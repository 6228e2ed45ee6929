/* secret.c — locked, undumpable, wiped buffers for keys and PINs. */
#include "keyward/core/secret.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyward/core/log.h"

struct kw_secret {
	unsigned char *data;
	size_t len;    /* logical length */
	size_t maplen; /* page-rounded mapping */
};

/* Single pages given back, wiped, still locked and out of core dumps, for
 * the next secret of at most a page. The hot paths (an unwrap per vault
 * fetch) would otherwise map, lock, unlock and unmap a page per request,
 * and every munmap in a threaded process interrupts the other CPUs to
 * flush their TLBs. Bounded: past KW_SECRET_SPARE pages, freeing unmaps. */
#define KW_SECRET_SPARE 64
static pthread_mutex_t spare_mu = PTHREAD_MUTEX_INITIALIZER;
static void *spare[KW_SECRET_SPARE];
static size_t nspare;

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE); /* from the aux vector: no system call */
}

static void *spare_take(void)
{
	void *p = NULL;
	pthread_mutex_lock(&spare_mu);
	if (nspare > 0)
		p = spare[--nspare];
	pthread_mutex_unlock(&spare_mu);
	return p;
}

static bool spare_give(void *p)
{
	bool kept = false;
	pthread_mutex_lock(&spare_mu);
	if (nspare < KW_SECRET_SPARE) {
		spare[nspare++] = p;
		kept = true;
	}
	pthread_mutex_unlock(&spare_mu);
	return kept;
}

kw_secret *kw_secret_new(size_t len)
{
	if (len == 0)
		kw_misuse("kw_secret_new: zero length");
	size_t page = page_size();
	size_t maplen = (len + page - 1) & ~(page - 1);
	kw_secret *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	void *p = maplen == page ? spare_take() : NULL;
	if (p != NULL) {
		memset(p, 0, maplen); /* wiped when given back; zero-filled as promised */
	} else {
		p = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			free(s);
			return NULL;
		}
		/* mlock may fail under a low RLIMIT_MEMLOCK; the page is still
		 * kept out of core dumps, and the unit file raises the limit. */
		(void)mlock(p, maplen);
		(void)madvise(p, maplen, MADV_DONTDUMP);
	}
	s->data = p;
	s->len = len;
	s->maplen = maplen;
	return s;
}

unsigned char *kw_secret_data(kw_secret *s)
{
	return s->data;
}

size_t kw_secret_len(const kw_secret *s)
{
	return s->len;
}

void kw_secret_truncate(kw_secret *s, size_t len)
{
	if (len > s->len)
		kw_misuse("kw_secret_truncate: cannot grow");
	OPENSSL_cleanse(s->data + len, s->len - len);
	s->len = len;
}

void kw_secret_free(kw_secret *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s->data, s->maplen);
	if (s->maplen != page_size() || !spare_give(s->data)) {
		munlock(s->data, s->maplen);
		munmap(s->data, s->maplen);
	}
	free(s);
}

kw_err kw_secret_read_file(const char *path, kw_secret **out)
{
	kw_err err = KW_ERR_IO;
	kw_secret *s = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return KW_ERR_NOT_FOUND;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > 4096) {
		err = KW_ERR_INVALID;
		goto done;
	}
	s = kw_secret_new((size_t)st.st_size);
	if (s == NULL) {
		err = KW_ERR_NOMEM;
		goto done;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, s->data + got, (size_t)st.st_size - got);
		if (r <= 0)
			goto done;
		got += (size_t)r;
	}
	size_t len = got;
	if (len > 0 && s->data[len - 1] == '\n')
		len--;
	if (len > 0 && s->data[len - 1] == '\r')
		len--;
	if (len == 0) {
		err = KW_ERR_INVALID;
		goto done;
	}
	kw_secret_truncate(s, len);
	*out = s;
	s = NULL;
	err = KW_OK;
done:
	kw_secret_free(s);
	close(fd);
	return err;
}

kw_err kw_secure_heap_init(void)
{
	if (CRYPTO_secure_malloc_initialized())
		return KW_OK;
	/* 64 KiB in blocks of at least 32 bytes: subkey copies are 32. */
	int rc = CRYPTO_secure_malloc_init(64 * 1024, 32);
	if (rc == 0)
		return KW_ERR_INTERNAL;
	if (rc == 2)
		kw_warn("secure heap: could not lock it in memory (RLIMIT_MEMLOCK?): HMAC keys may be "
		        "swapped out");
	return KW_OK;
}
