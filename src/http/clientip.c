/* clientip.c — CIDR lists and the X-Forwarded-For walk. A list may also
 * name Unix-socket peers by uid ("unix:33"): the identity keywardd gives a
 * client on its socket (SO_PEERCRED). */
#include "keyward/http/clientip.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kw_cidr {
	int family; /* AF_INET, AF_INET6, or AF_UNIX: a Unix-socket peer's uid (4 bytes) */
	unsigned char addr[16];
	int bits;
} kw_cidr;

struct kw_cidr_list {
	size_t n;
	kw_cidr items[];
};

static bool parse_ip(const char *s, int *family, unsigned char addr[16])
{
	if (inet_pton(AF_INET, s, addr) == 1) {
		*family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, addr) == 1) {
		*family = AF_INET6;
		return true;
	}
	return false;
}

/* An address, or a Unix-socket peer "unix:<uid>" (its uid, big-endian). */
static bool parse_peer(const char *s, int *family, unsigned char addr[16])
{
	if (strncmp(s, "unix:", 5) != 0)
		return parse_ip(s, family, addr);
	const char *d = s + 5;
	size_t n = strspn(d, "0123456789");
	if (n == 0 || n > 10 || d[n] != '\0')
		return false;
	unsigned long long uid = strtoull(d, NULL, 10);
	if (uid > UINT32_MAX)
		return false;
	memset(addr, 0, 16);
	for (int i = 0; i < 4; i++)
		addr[i] = (unsigned char)(uid >> (24 - 8 * i));
	*family = AF_UNIX;
	return true;
}

kw_err kw_cidr_list_parse(const char *spec, kw_cidr_list **out)
{
	/* Items end at a comma or a space: at most one more than those. */
	size_t cap = 1;
	for (const char *p = spec; *p; p++)
		cap += *p == ',' || *p == ' ';
	kw_cidr_list *l = calloc(1, sizeof(*l) + cap * sizeof(kw_cidr));
	if (l == NULL)
		return KW_ERR_NOMEM;
	const char *p = spec;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		char item[64];
		size_t n = 0;
		while (p[n] && p[n] != ',' && p[n] != ' ')
			n++;
		if (n >= sizeof(item))
			goto bad;
		memcpy(item, p, n);
		item[n] = '\0';
		p += n;
		kw_cidr *c = &l->items[l->n];
		char *slash = strchr(item, '/');
		if (slash)
			*slash = '\0';
		if (!parse_peer(item, &c->family, c->addr) || (slash && c->family == AF_UNIX))
			goto bad;
		int max = c->family == AF_INET6 ? 128 : 32;
		c->bits = max;
		if (slash) {
			char *end;
			long b = strtol(slash + 1, &end, 10);
			if (*end != '\0' || slash[1] == '\0' || b < 0 || b > max)
				goto bad;
			c->bits = (int)b;
		}
		l->n++;
	}
	*out = l;
	return KW_OK;
bad:
	free(l);
	return KW_ERR_INVALID;
}

void kw_cidr_list_free(kw_cidr_list *l)
{
	free(l);
}

static bool cidr_match(const kw_cidr *c, int family, const unsigned char *addr)
{
	if (c->family != family)
		return false;
	int full = c->bits / 8, rest = c->bits % 8;
	if (memcmp(c->addr, addr, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (c->addr[full] & mask) == (addr[full] & mask);
}

bool kw_cidr_list_contains(const kw_cidr_list *l, const char *ip)
{
	int family;
	unsigned char addr[16];
	if (l == NULL || !parse_peer(ip, &family, addr))
		return false;
	for (size_t i = 0; i < l->n; i++)
		if (cidr_match(&l->items[i], family, addr))
			return true;
	return false;
}

void kw_client_ip(const kw_cidr_list *trusted, const char *peer, const char *xff, char *out, size_t cap)
{
	snprintf(out, cap, "%s", peer);
	if (xff == NULL || trusted == NULL || trusted->n == 0 || !kw_cidr_list_contains(trusted, peer))
		return;
	/* Walk from the right: each hop was added by the proxy in front of it. */
	size_t end = strlen(xff);
	while (end > 0) {
		size_t start = end;
		while (start > 0 && xff[start - 1] != ',')
			start--;
		size_t a = start, b = end;
		while (a < b && isspace((unsigned char)xff[a]))
			a++;
		while (b > a && isspace((unsigned char)xff[b - 1]))
			b--;
		char hop[64];
		int family;
		unsigned char addr[16];
		if (b - a == 0 || b - a >= sizeof(hop))
			return;
		memcpy(hop, xff + a, b - a);
		hop[b - a] = '\0';
		if (!parse_ip(hop, &family, addr))
			return;
		snprintf(out, cap, "%s", hop);
		if (!kw_cidr_list_contains(trusted, hop))
			return;
		end = start > 0 ? start - 1 : 0;
	}
}

void kw_client_bucket(const char *ip, int v6_prefix, char *out, size_t cap)
{
	unsigned char a[16];
	if (v6_prefix <= 0 || v6_prefix >= 128 || inet_pton(AF_INET6, ip, a) != 1) {
		snprintf(out, cap, "%s", ip);
		return;
	}
	for (int bit = v6_prefix; bit < 128; bit++)
		a[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
	char text[INET6_ADDRSTRLEN];
	if (inet_ntop(AF_INET6, a, text, sizeof(text)) == NULL)
		snprintf(out, cap, "%s", ip);
	else
		snprintf(out, cap, "%s/%d", text, v6_prefix);
}
