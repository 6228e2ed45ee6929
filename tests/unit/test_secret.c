/* test_secret.c — locked secret buffers: zero-filled, wiped, reusable. */
#include <criterion/criterion.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward/core/secret.h"

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

Test(secret, new_is_zero_filled_even_when_a_page_is_reused)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	/* Fill, free and re-allocate many times: spare pages come back
	 * wiped, whatever the previous holder left in them. */
	for (int round = 0; round < 200; round++) {
		size_t len = 1 + (size_t)round * 37 % page;
		kw_secret *s = kw_secret_new(len);
		cr_assert_not_null(s);
		cr_assert_eq(kw_secret_len(s), len);
		cr_assert(all_zero(kw_secret_data(s), page), "round %d: a reused page was not wiped", round);
		memset(kw_secret_data(s), 0xA5, page);
		kw_secret_free(s);
	}
}

Test(secret, many_at_once_and_larger_than_a_page)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	enum { N = 150 }; /* more than the spare pages kept */
	kw_secret *s[N];
	for (int i = 0; i < N; i++) {
		s[i] = kw_secret_new(i % 3 == 0 ? 3 * page + 1 : 64);
		cr_assert_not_null(s[i]);
		cr_assert(all_zero(kw_secret_data(s[i]), kw_secret_len(s[i])));
		memset(kw_secret_data(s[i]), i & 0xff, kw_secret_len(s[i]));
	}
	/* Distinct buffers: nobody shares a page. */
	for (int i = 0; i < N; i++)
		for (size_t k = 0; k < kw_secret_len(s[i]); k++)
			cr_assert_eq(kw_secret_data(s[i])[k], (unsigned char)(i & 0xff));
	for (int i = 0; i < N; i++)
		kw_secret_free(s[i]);
	kw_secret *t = kw_secret_new(3 * page + 1);
	cr_assert(all_zero(kw_secret_data(t), kw_secret_len(t)));
	kw_secret_free(t);
}

Test(secret, truncate_wipes_the_tail)
{
	kw_secret *s = kw_secret_new(32);
	memset(kw_secret_data(s), 0x5A, 32);
	kw_secret_truncate(s, 8);
	cr_assert_eq(kw_secret_len(s), 8);
	cr_assert(all_zero(kw_secret_data(s) + 8, 24));
	kw_secret_free(s);
	kw_secret_free(NULL);
}

/* What OpenSSL keeps of an HMAC key (the subkeys of kw_hsm_subkey_hmac)
 * comes from its secure heap once it is set up. */
Test(secret, openssl_secure_heap_holds_its_key_copies)
{
	cr_assert_eq(kw_secure_heap_init(), KW_OK);
	cr_assert(CRYPTO_secure_malloc_initialized());
	cr_assert_eq(kw_secure_heap_init(), KW_OK, "a second call is harmless");
	void *p = OPENSSL_secure_malloc(32);
	cr_assert_not_null(p);
	cr_assert(CRYPTO_secure_allocated(p));
	OPENSSL_secure_clear_free(p, 32);
	/* HMAC keyed from the secure heap's world still computes RFC 4231 case 2. */
	unsigned char mac[32];
	size_t ml = 0;
	cr_assert_not_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, "Jefe", 4,
	                             (const unsigned char *)"what do ya want for nothing?", 28, mac,
	                             sizeof(mac), &ml));
	cr_assert_eq(mac[0], 0x5b);
	cr_assert_eq(mac[31], 0x43);
}
