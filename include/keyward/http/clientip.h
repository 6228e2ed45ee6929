/* clientip.h — who the client is, behind trusted proxies only.
 *
 * X-Forwarded-For is believed only when the TCP peer is a configured
 * proxy; then the address taken is the right-most one that is not itself
 * a trusted proxy. Anything unparsable ends the walk. */
#ifndef KEYWARD_CLIENTIP_H
#define KEYWARD_CLIENTIP_H

#include <stdbool.h>
#include <stddef.h>

#include "keyward/core/error.h"

typedef struct kw_cidr_list kw_cidr_list;

/* "10.0.0.1, 192.168.0.0/16, ::1, unix:33" -> list (empty spec: empty
 * list); "unix:<uid>" is a Unix-socket peer running as that uid. */
KW_MUST_CHECK kw_err kw_cidr_list_parse(const char *spec, kw_cidr_list **out);
void kw_cidr_list_free(kw_cidr_list *l);
bool kw_cidr_list_contains(const kw_cidr_list *l, const char *ip);
/* Writes the client address (at most cap bytes) for a request from peer
 * carrying the given X-Forwarded-For (NULL if absent). */
void kw_client_ip(const kw_cidr_list *trusted, const char *peer, const char *xff, char *out, size_t cap);
/* The rate-limit identity of a client address: an IPv6 address is cut to
 * its first v6_prefix bits ("2001:db8:1:2::/64": one host owns a /64 and
 * would otherwise have 2^64 budgets); anything else is itself. */
void kw_client_bucket(const char *ip, int v6_prefix, char *out, size_t cap);

#endif
