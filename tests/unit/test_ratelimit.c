/* Unit tests: token buckets and the client-address walk. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "keyward/http/clientip.h"
#include "keyward/http/ratelimit.h"

Test(ratelimit, bucket_drains_and_refills)
{
	kw_ratelimit *rl = kw_ratelimit_new(1024);
	kw_rl_result r;
	for (int i = 0; i < 60; i++) {
		kw_ratelimit_take(rl, "k", 60, 100.0, &r);
		cr_assert(r.allowed, "request %d refused", i);
		cr_assert_eq(r.remaining, 59 - i);
		cr_assert_eq(r.limit, 60);
	}
	kw_ratelimit_take(rl, "k", 60, 100.0, &r);
	cr_assert_not(r.allowed);
	cr_assert_eq(r.retry_after, 1);
	cr_assert_eq(r.reset_s, 60);
	kw_ratelimit_take(rl, "k", 60, 101.01, &r); /* one token a second */
	cr_assert(r.allowed);
	kw_ratelimit_take(rl, "other", 60, 101.01, &r);
	cr_assert(r.allowed && r.remaining == 59, "keys share a bucket");
	kw_ratelimit_free(rl);
}

Test(ratelimit, peek_does_not_spend)
{
	kw_ratelimit *rl = kw_ratelimit_new(64);
	kw_rl_result r;
	for (int i = 0; i < 10; i++)
		kw_ratelimit_peek(rl, "p", 1, 5.0, &r);
	cr_assert(r.allowed);
	kw_ratelimit_take(rl, "p", 1, 5.0, &r);
	cr_assert(r.allowed);
	kw_ratelimit_peek(rl, "p", 1, 5.0, &r);
	cr_assert_not(r.allowed);
	cr_assert_eq(r.retry_after, 60);
	kw_ratelimit_free(rl);
}

Test(ratelimit, bounded_under_a_flood_of_keys)
{
	kw_ratelimit *rl = kw_ratelimit_new(1024);
	kw_rl_result r;
	char key[32];
	for (int i = 0; i < 200000; i++) {
		snprintf(key, sizeof(key), "ip:10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		kw_ratelimit_take(rl, key, 1000, 1.0 + i * 1e-6, &r);
		cr_assert(r.allowed);
	}
	kw_ratelimit_free(rl);
}

Test(clientip, cidr_lists)
{
	kw_cidr_list *l;
	cr_assert_eq(kw_cidr_list_parse("10.0.0.0/8, 192.168.1.1 ,::1, 2001:db8::/32", &l), KW_OK);
	cr_assert(kw_cidr_list_contains(l, "10.200.3.4"));
	cr_assert(kw_cidr_list_contains(l, "192.168.1.1"));
	cr_assert_not(kw_cidr_list_contains(l, "192.168.1.2"));
	cr_assert(kw_cidr_list_contains(l, "::1"));
	cr_assert(kw_cidr_list_contains(l, "2001:db8:1::5"));
	cr_assert_not(kw_cidr_list_contains(l, "11.0.0.1"));
	cr_assert_not(kw_cidr_list_contains(l, "garbage"));
	kw_cidr_list_free(l);
	const char *bad[] = {"10.0.0.0/33", "host.example", "1.2.3.4/", "1.2.3.4/-1", "::1/129"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(kw_cidr_list_parse(bad[i], &l), KW_ERR_INVALID, "accepted %s", bad[i]);
	/* Found by fuzz_clientip: items separated by spaces only. */
	cr_assert_eq(kw_cidr_list_parse("1.1.1.1 2.2.2.2 3.3.3.3", &l), KW_OK);
	cr_assert(kw_cidr_list_contains(l, "3.3.3.3"));
	kw_cidr_list_free(l);
	cr_assert_eq(kw_cidr_list_parse("", &l), KW_OK);
	cr_assert_not(kw_cidr_list_contains(l, "127.0.0.1"));
	kw_cidr_list_free(l);
}

Test(clientip, forwarded_for_walk)
{
	kw_cidr_list *t;
	cr_assert_eq(kw_cidr_list_parse("127.0.0.1, 10.0.0.0/8", &t), KW_OK);
	char out[64];
	kw_client_ip(t, "127.0.0.1", "203.0.113.7", out, sizeof(out));
	cr_assert_str_eq(out, "203.0.113.7");
	/* The right-most untrusted hop wins; a spoofed left part is ignored. */
	kw_client_ip(t, "127.0.0.1", "1.1.1.1, 203.0.113.7, 10.1.2.3", out, sizeof(out));
	cr_assert_str_eq(out, "203.0.113.7");
	/* Untrusted peer: header ignored. */
	kw_client_ip(t, "198.51.100.1", "203.0.113.7", out, sizeof(out));
	cr_assert_str_eq(out, "198.51.100.1");
	/* Garbage stops the walk at the last good hop. */
	kw_client_ip(t, "127.0.0.1", "203.0.113.7, <script>", out, sizeof(out));
	cr_assert_str_eq(out, "127.0.0.1");
	kw_client_ip(t, "127.0.0.1", "", out, sizeof(out));
	cr_assert_str_eq(out, "127.0.0.1");
	kw_client_ip(t, "127.0.0.1", ",,,", out, sizeof(out));
	cr_assert_str_eq(out, "127.0.0.1");
	kw_client_ip(NULL, "127.0.0.1", "203.0.113.7", out, sizeof(out));
	cr_assert_str_eq(out, "127.0.0.1");
	kw_cidr_list_free(t);
}

Test(ratelimit, keys_up_to_127_bytes_are_told_apart)
{
	kw_ratelimit *rl = kw_ratelimit_new(1024);
	char a[128], b[128];
	memset(a, 'a', 127);
	a[127] = '\0';
	memcpy(b, a, sizeof(a));
	b[126] = 'b';
	kw_rl_result r;
	for (int i = 0; i < 3; i++) {
		kw_ratelimit_take(rl, a, 3, 100.0, &r);
		cr_assert(r.allowed);
	}
	kw_ratelimit_take(rl, a, 3, 100.0, &r);
	cr_assert_not(r.allowed, "a 127-byte key was never limited");
	kw_ratelimit_take(rl, b, 3, 100.0, &r);
	cr_assert(r.allowed);
	kw_ratelimit_free(rl);
}

/* A flood of fresh keys cannot evict a drained bucket (and so reset a
 * failure budget): a new key takes the fullest slot, never the drained
 * one, however long ago it was touched. */
Test(ratelimit, a_flood_cannot_evict_a_drained_bucket)
{
	kw_ratelimit *rl = kw_ratelimit_new(16);
	kw_rl_result r;
	double now = 1000.0;
	for (int i = 0; i < 21; i++)
		kw_ratelimit_take(rl, "fail:victim", 20, now, &r);
	cr_assert_not(r.allowed, "drained");
	char key[64];
	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "nonce:flood-%d", i);
		kw_ratelimit_take(rl, key, 20, now + 0.00001 * i, &r);
	}
	kw_ratelimit_peek(rl, "fail:victim", 20, now + 0.3, &r);
	cr_assert_not(r.allowed, "the flood evicted the drained bucket: its budget is full again");
	kw_ratelimit_free(rl);
}

Test(clientip, ipv6_clients_share_a_budget_per_prefix)
{
	char out[80];
	kw_client_bucket("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, out, sizeof(out));
	cr_assert_str_eq(out, "2001:db8:1:2::/64");
	kw_client_bucket("2001:db8:1:2::1", 64, out, sizeof(out));
	cr_assert_str_eq(out, "2001:db8:1:2::/64");
	kw_client_bucket("2001:db8:1:3::1", 64, out, sizeof(out));
	cr_assert_str_eq(out, "2001:db8:1:3::/64");
	kw_client_bucket("2001:db8:1:2:aaaa::1", 128, out, sizeof(out));
	cr_assert_str_eq(out, "2001:db8:1:2:aaaa::1", "128: every address its own");
	kw_client_bucket("2001:db8:ffff:ffff::1", 48, out, sizeof(out));
	cr_assert_str_eq(out, "2001:db8:ffff::/48");
	kw_client_bucket("192.0.2.7", 64, out, sizeof(out));
	cr_assert_str_eq(out, "192.0.2.7");
	kw_client_bucket("unix:1000", 64, out, sizeof(out));
	cr_assert_str_eq(out, "unix:1000");
}

Test(clientip, unix_socket_peers_in_lists)
{
	kw_cidr_list *l = NULL;
	cr_assert_eq(kw_cidr_list_parse("127.0.0.1, unix:33", &l), KW_OK);
	cr_assert(kw_cidr_list_contains(l, "unix:33"));
	cr_assert_not(kw_cidr_list_contains(l, "unix:0"));
	cr_assert_not(kw_cidr_list_contains(l, "unix"));
	char out[64];
	kw_client_ip(l, "unix:33", "203.0.113.5", out, sizeof(out));
	cr_assert_str_eq(out, "203.0.113.5");
	kw_client_ip(l, "unix:0", "203.0.113.5", out, sizeof(out));
	cr_assert_str_eq(out, "unix:0");
	kw_cidr_list_free(l);
	cr_assert_eq(kw_cidr_list_parse("unix:33/8", &l), KW_ERR_INVALID);
	cr_assert_eq(kw_cidr_list_parse("unix:", &l), KW_ERR_INVALID);
	cr_assert_eq(kw_cidr_list_parse("unix:-1", &l), KW_ERR_INVALID);
	cr_assert_eq(kw_cidr_list_parse("unix:99999999999", &l), KW_ERR_INVALID);
}
