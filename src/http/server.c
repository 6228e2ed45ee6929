/* server.c — I/O threads, listeners, dispatch and replies.
 *
 * Each I/O thread owns an event_base and one evhttp per listener kind (TCP,
 * optionally TLS, and a Unix socket), all accepting on dup()s of the same
 * listening sockets. The request callback copies the request into a kw_call
 * and either answers it inline (cheap routes) or hands it to the worker
 * pool; the worker's result comes back through a per-loop list and a wake
 * event, and the reply is sent on the loop that owns the request. evhttp
 * objects are never touched from another thread.
 *
 * Every response, evhttp's own error pages included, is JSON with an
 * X-Request-Id: libevent 2.1 has no error-page hook, so this file defines
 * evhttp_send_error, which the dynamic linker binds in place of libevent's
 * (libevent calls it through its PLT). */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h> /* major/minor, headers_size: see evhttp_send_error */
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <event2/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "keyward/core/log.h"
#include "keyward/http/clientip.h"
#include "keyward/http/http.h"
#include "keyward/http/metrics.h"

#define KW_MAX_HTTP_PER_LOOP 3

typedef struct kw_loop kw_loop;

/* One request from arrival to reply; owned by its loop. */
typedef struct kw_pending {
	kw_call call;
	struct evhttp_request *ereq;
	kw_loop *loop;
	int route;
	struct timespec start;
	struct kw_pending *next;
} kw_pending;

struct kw_loop {
	kw_server *srv;
	int index;
	pthread_t thread;
	bool started;
	struct event_base *base;
	struct evhttp *http[KW_MAX_HTTP_PER_LOOP];
	struct evhttp_bound_socket *bound[KW_MAX_HTTP_PER_LOOP];
	int nhttp;
	struct event *wake;
	pthread_mutex_t lock;
	kw_pending *done; /* guarded by lock: finished on a worker */
};

/* For evhttp_send_error, which has no context argument. */
static atomic_size_t g_max_headers = 65536;

struct kw_server {
	kw_server_opts o; /* the configuration, trusted proxies, pool, app and route table */
	int nloops;
	kw_loop *loops;
	int tcp_fd, unix_fd, admin_fd; /* admin_fd: http.admin_listen, the admin routes alone */
	bool has_admin;                /* an admin listener was configured */
	SSL_CTX *ssl;
	atomic_long in_flight;
	atomic_bool draining;
};

static const char *reason_phrase(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	default:
		return "Status";
	}
}

static double elapsed_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void wipe_str(char *s)
{
	if (s != NULL)
		OPENSSL_cleanse(s, strlen(s));
}

void kw_request_wipe(kw_request *r)
{
	for (size_t i = 0; i < r->nheaders; i++)
		wipe_str(r->headers[i].value);
	wipe_str(r->query);
	wipe_str(r->target);
	if (r->body != NULL)
		OPENSSL_cleanse(r->body, r->body_len);
}

static void request_free(kw_request *r)
{
	/* A request may carry credentials (Authorization, a refresh token, a
	 * signature): its copies are wiped before they are freed. */
	kw_request_wipe(r);
	for (size_t i = 0; i < r->nheaders; i++) {
		free(r->headers[i].name);
		free(r->headers[i].value);
	}
	free(r->headers);
	free(r->path);
	free(r->query);
	free(r->target);
	free(r->body);
}

static void response_free(kw_response *r)
{
	for (size_t i = 0; i < r->nheaders; i++) {
		free(r->headers[i].name);
		free(r->headers[i].value);
	}
	/* Bodies may carry a credential shown once (a new API key). */
	if (r->body)
		OPENSSL_cleanse(r->body, r->body_len);
	free(r->body);
}

static void body_sent(const void *data, size_t len, void *extra)
{
	(void)extra;
	OPENSSL_cleanse((void *)data, len);
	free((void *)data);
}

static void pending_free(kw_pending *p)
{
	request_free(&p->call.req);
	response_free(&p->call.resp);
	free(p);
}

/* Sends p's response on its loop and frees p. Loop thread only. */
static void send_reply(kw_pending *p)
{
	kw_server *srv = p->loop->srv;
	kw_response *r = &p->call.resp;
	if (r->status == 0)
		kw_respond_error(&p->call, 500, "internal", "the handler produced no answer");
	if (r->body == NULL && r->status >= 400)
		r->status = 500; /* error body could not be built: out of memory */
	struct evkeyvalq *oh = evhttp_request_get_output_headers(p->ereq);
	evhttp_add_header(oh, "X-Request-Id", p->call.req.request_id);
	evhttp_add_header(oh, "Content-Type", r->content_type ? r->content_type : "application/json");
	bool cache_control = false;
	for (size_t i = 0; i < r->nheaders; i++)
		cache_control |= strcasecmp(r->headers[i].name, "Cache-Control") == 0;
	if (!cache_control)
		evhttp_add_header(oh, "Cache-Control", "no-store");
	evhttp_add_header(oh, "X-Content-Type-Options", "nosniff");
	for (size_t i = 0; i < r->nheaders; i++)
		evhttp_add_header(oh, r->headers[i].name, r->headers[i].value);
	if (atomic_load(&srv->draining))
		evhttp_add_header(oh, "Connection", "close");
	/* The body is handed over by reference, not copied, so the one copy
	 * (which may hold a key or a credential) is wiped when it is sent. */
	if (r->body_len > 0 && evbuffer_add_reference(evhttp_request_get_output_buffer(p->ereq), r->body,
	                                              r->body_len, body_sent, NULL) == 0)
		r->body = NULL;
	evhttp_send_reply(p->ereq, r->status, reason_phrase(r->status), NULL);
	kw_metrics_observe(p->route, r->status, elapsed_since(&p->start));
	atomic_fetch_sub(&srv->in_flight, 1);
	pending_free(p);
}

/* Worker thread: queue p for its loop and wake the loop. */
static void on_worker_done(kw_call *call, void *arg)
{
	kw_pending *p = arg;
	(void)call;
	kw_loop *loop = p->loop;
	pthread_mutex_lock(&loop->lock);
	p->next = loop->done;
	loop->done = p;
	pthread_mutex_unlock(&loop->lock);
	event_active(loop->wake, EV_READ, 0);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	kw_loop *loop = arg;
	(void)fd;
	(void)what;
	pthread_mutex_lock(&loop->lock);
	kw_pending *list = loop->done;
	loop->done = NULL;
	pthread_mutex_unlock(&loop->lock);
	while (list) {
		kw_pending *next = list->next;
		send_reply(list);
		list = next;
	}
}

static const char *method_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	case EVHTTP_REQ_TRACE:
		return "TRACE";
	case EVHTTP_REQ_CONNECT:
		return "CONNECT";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	}
	return "UNKNOWN";
}

static void peer_of(struct evhttp_request *ereq, char *out, size_t cap)
{
	snprintf(out, cap, "unknown");
	struct evhttp_connection *conn = evhttp_request_get_connection(ereq);
	const struct sockaddr *sa = conn ? evhttp_connection_get_addr(conn) : NULL;
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
	else if (sa->sa_family == AF_UNIX) {
		/* Each local user its own identity (budgets, audit rows): the
		 * uid of the process on the other end of the socket. */
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
		evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
		if (fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
			snprintf(out, cap, "unix:%u", (unsigned)cred.uid);
		else
			snprintf(out, cap, "unix");
	}
}

/* Copies what a handler may need off the evhttp request. Returns 0, or an
 * HTTP status to refuse with. */
static int copy_request(kw_server *srv, struct evhttp_request *ereq, kw_request *req)
{
	const kw_config *cfg = srv->o.cfg;
	req->method = method_name(evhttp_request_get_command(ereq));
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ereq);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	const char *target = evhttp_request_get_uri(ereq);
	req->path = strdup(path && *path ? path : "/");
	req->query = query ? strdup(query) : NULL;
	req->target = strdup(target ? target : "");
	if (req->path == NULL || (query && req->query == NULL) || req->target == NULL)
		return 500;

	struct evkeyvalq *ih = evhttp_request_get_input_headers(ereq);
	size_t n = 0, total = 0;
	for (struct evkeyval *kv = ih->tqh_first; kv; kv = kv->next.tqe_next) {
		n++;
		total += strlen(kv->key) + strlen(kv->value) + 4;
	}
	if (total > cfg->max_headers)
		return 431;
	req->headers = calloc(n ? n : 1, sizeof(*req->headers));
	if (req->headers == NULL)
		return 500;
	for (struct evkeyval *kv = ih->tqh_first; kv; kv = kv->next.tqe_next) {
		kw_header *h = &req->headers[req->nheaders];
		h->name = strdup(kv->key);
		h->value = strdup(kv->value);
		if (h->name == NULL || h->value == NULL) {
			free(h->name);
			free(h->value);
			return 500;
		}
		req->nheaders++;
	}

	struct evbuffer *in = evhttp_request_get_input_buffer(ereq);
	size_t blen = evbuffer_get_length(in);
	if (blen > cfg->max_body)
		return 413;
	if (blen > 0) {
		req->body = malloc(blen + 1);
		if (req->body == NULL)
			return 500;
		evbuffer_remove(in, req->body, blen);
		req->body[blen] = '\0'; /* convenience for text parsers; not counted */
		req->body_len = blen;
	}
	return 0;
}

/* Every line of a header, joined with ", " as RFC 9110 (5.3) says a
 * recipient may: a proxy that adds its own X-Forwarded-For line must not
 * leave the client's line to decide the address. malloc'd; NULL if the
 * header is absent (or out of memory: then no line is believed). */
static char *joined_header(struct evkeyvalq *headers, const char *name)
{
	size_t len = 0, lines = 0;
	for (struct evkeyval *h = headers->tqh_first; h != NULL; h = h->next.tqe_next)
		if (strcasecmp(h->key, name) == 0) {
			len += strlen(h->value) + 2;
			lines++;
		}
	if (lines == 0)
		return NULL;
	char *out = malloc(len + 1), *at = out;
	if (out == NULL)
		return NULL;
	for (struct evkeyval *h = headers->tqh_first; h != NULL; h = h->next.tqe_next)
		if (strcasecmp(h->key, name) == 0)
			at += sprintf(at, "%s%s", at == out ? "" : ", ", h->value);
	return out;
}

static void handle_request(struct evhttp_request *ereq, kw_loop *loop, bool admin);

static void on_request(struct evhttp_request *ereq, void *arg)
{
	handle_request(ereq, arg, false);
}

static void on_admin_request(struct evhttp_request *ereq, void *arg)
{
	handle_request(ereq, arg, true);
}

/* Whether a route is served where the request arrived: with an admin
 * listener, the admin routes there and only there. */
static bool served_here(const kw_server *srv, const kw_route *r, bool admin)
{
	return !srv->has_admin || r->admin == admin;
}

static void handle_request(struct evhttp_request *ereq, kw_loop *loop, bool admin)
{
	kw_server *srv = loop->srv;
	kw_pending *p = calloc(1, sizeof(*p));
	if (p == NULL) {
		evhttp_send_reply(ereq, 503, "Service Unavailable", NULL);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &p->start);
	atomic_fetch_add(&srv->in_flight, 1);
	p->ereq = ereq;
	p->loop = loop;
	p->route = -1;
	p->call.app = srv->o.app;

	const char *rid = evhttp_find_header(evhttp_request_get_input_headers(ereq), "X-Request-Id");
	if (rid && kw_request_id_valid(rid))
		snprintf(p->call.req.request_id, sizeof(p->call.req.request_id), "%s", rid);
	else
		kw_request_id_new(p->call.req.request_id);
	peer_of(ereq, p->call.req.peer_ip, sizeof(p->call.req.peer_ip));
	char *xff = joined_header(evhttp_request_get_input_headers(ereq), "X-Forwarded-For");
	kw_client_ip(srv->o.trusted, p->call.req.peer_ip, xff, p->call.req.client_ip,
	             sizeof(p->call.req.client_ip));
	free(xff);

	int refuse = copy_request(srv, ereq, &p->call.req);
	if (refuse == 431) {
		kw_respond_error(&p->call, 431, "headers_too_large", "request headers exceed the limit");
	} else if (refuse == 413) {
		kw_respond_error(&p->call, 413, "payload_too_large", "request body exceeds the limit");
	} else if (refuse != 0) {
		kw_respond_error(&p->call, 500, "internal", "out of memory");
	} else {
		bool other_method = false;
		kw_request *req = &p->call.req;
		p->route = kw_route_match(srv->o.routes, srv->o.nroutes, req->method, req->path,
		                          req->path_param, sizeof(req->path_param), &other_method);
		if (p->route >= 0 && !served_here(srv, &srv->o.routes[p->route], admin)) {
			p->route = -1; /* served on the other listener: not found on this one */
			other_method = false;
		}
		if (p->route < 0 && other_method) {
			kw_respond_error(&p->call, 405, "method_not_allowed",
			                 "method not allowed on this path");
		} else if (p->route < 0) {
			kw_respond_error(&p->call, 404, "not_found", "no such route");
		} else {
			p->call.route = p->route;
			p->call.def = &srv->o.routes[p->route];
			bool inline_done = false;
			if (!p->call.def->on_worker) {
				if (p->call.def->fn(&p->call) == KW_CALL_KEPT)
					kw_misuse("an I/O-thread route kept its call");
				inline_done = p->call.defer == NULL; /* else: finish on a worker */
			}
			if (!inline_done) {
				if (kw_pool_submit(srv->o.pool, &p->call, on_worker_done, p) == KW_OK)
					return; /* on_worker_done brings it back */
				kw_metrics_rejected_busy();
				kw_respond_error(&p->call, 503, "overloaded",
				                 "the service is at capacity; retry shortly");
				kw_respond_header(&p->call, "Retry-After", "1");
			}
		}
	}
	send_reply(p);
}

/* Replaces libevent's HTML error page (see the file comment). Called by
 * libevent on a malformed request line, oversize headers or body, or a
 * method it does not parse. */
__attribute__((visibility("default"))) void evhttp_send_error(struct evhttp_request *req, int error,
                                                              const char *reason);
void evhttp_send_error(struct evhttp_request *req, int error, const char *reason)
{
	(void)reason;
	char rid[129];
	struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
	const char *in_rid = evhttp_find_header(ih, "X-Request-Id");
	if (in_rid && kw_request_id_valid(in_rid))
		snprintf(rid, sizeof(rid), "%s", in_rid);
	else
		kw_request_id_new(rid);
	const char *code = "malformed_request", *msg = "the request could not be parsed";
	/* An unparsable request line leaves the version at 0.0; answer 1.1. */
	if (req->major != 1) {
		req->major = 1;
		req->minor = 1;
	}
	/* libevent reports oversize headers as a parse error (400): tell them
	 * apart by what it counted, or by what is still unread. */
	size_t unread = 0;
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
	if (bev)
		unread = evbuffer_get_length(bufferevent_get_input(bev));
	size_t max_headers = atomic_load(&g_max_headers);
	bool headers_over = req->headers_size > max_headers || unread > max_headers;
	if ((error == 400 || error == 413) && headers_over) {
		error = 431;
		code = "headers_too_large";
		msg = "request headers exceed the limit";
	} else if (error == 413) {
		code = "payload_too_large";
		msg = "request body exceeds the limit";
	} else if (error == 501) {
		code = "method_not_implemented";
		msg = "method not implemented";
	} else if (error == 404) {
		code = "not_found";
		msg = "no such route";
	} else if (error < 400 || error > 599) {
		error = 400;
	}
	char body[512];
	snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\",\"request_id\":\"%s\"}", code, msg,
	         rid);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	evhttp_add_header(oh, "Connection", "close");
	evhttp_add_header(oh, "Content-Type", "application/json");
	evhttp_add_header(oh, "Cache-Control", "no-store");
	evhttp_add_header(oh, "X-Request-Id", rid);
	evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
	kw_metrics_observe(-1, error, 0.0);
	evhttp_send_reply(req, error, reason_phrase(error), NULL);
}

static struct bufferevent *tls_bevcb(struct event_base *base, void *arg)
{
	SSL *ssl = SSL_new((SSL_CTX *)arg);
	/* Returning NULL would make libevent serve this connection in clear
	 * text on the TLS port: fail closed instead. */
	if (ssl == NULL)
		kw_misuse("SSL_new failed; refusing to serve the TLS listener in clear text");
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                      BEV_OPT_CLOSE_ON_FREE);
}

static void *loop_main(void *arg)
{
	kw_loop *loop = arg;
	/* While draining, a loop may have no registered event at all (no
	 * listener, connections waiting on workers): it must keep running
	 * until kw_server_drain breaks it, or the replies are never sent. */
	event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static bool addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

/* "host:port" or "[v6]:port" -> an address, checked against the policy:
 * development mode only on loopback; plain HTTP on another address only
 * with allow_insecure_http. The caller frees *out with freeaddrinfo. */
static kw_err resolve_listen(const kw_config *cfg, const char *spec, bool tls, struct addrinfo **out,
                             char *errbuf, size_t errlen)
{
	char host[256];
	const char *port;
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (close == NULL || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host))
			goto bad;
		memcpy(host, spec + 1, (size_t)(close - spec - 1));
		host[close - spec - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(spec, ':');
		if (colon == NULL || (size_t)(colon - spec) >= sizeof(host))
			goto bad;
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
		port = colon + 1;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *ai = NULL;
	if (*port == '\0' || getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL)
		goto bad;
	bool loopback = addr_is_loopback(ai->ai_addr);
	if (!loopback && cfg->development) {
		snprintf(errbuf, errlen, "development mode refuses the non-loopback listener %s", spec);
		freeaddrinfo(ai);
		return KW_ERR_CONFIG;
	}
	if (!loopback && !tls && !cfg->allow_insecure_http) {
		snprintf(errbuf, errlen,
		         "plain HTTP on non-loopback %s refused: configure [tls] or set allow_insecure_http "
		         "= true",
		         spec);
		freeaddrinfo(ai);
		return KW_ERR_CONFIG;
	}
	*out = ai;
	return KW_OK;
bad:
	snprintf(errbuf, errlen, "bad listen address %s (want host:port)", spec);
	return KW_ERR_CONFIG;
}

kw_err kw_server_validate(const kw_config *cfg, char *errbuf, size_t errlen)
{
	if (cfg->listen[0] == '\0' && cfg->unix_socket[0] == '\0') {
		snprintf(errbuf, errlen, "no listener: set http.listen or http.unix_socket");
		return KW_ERR_CONFIG;
	}
	if ((cfg->tls_cert[0] != '\0') != (cfg->tls_key[0] != '\0')) {
		snprintf(errbuf, errlen, "tls.cert and tls.key must be set together");
		return KW_ERR_CONFIG;
	}
	struct addrinfo *ai = NULL;
	kw_err err = cfg->listen[0]
	                 ? resolve_listen(cfg, cfg->listen, cfg->tls_cert[0] != '\0', &ai, errbuf, errlen)
	                 : KW_OK;
	if (ai)
		freeaddrinfo(ai);
	ai = NULL;
	/* The admin listener speaks plain HTTP: loopback, unless allowed. */
	if (err == KW_OK && cfg->admin_listen[0])
		err = resolve_listen(cfg, cfg->admin_listen, false, &ai, errbuf, errlen);
	if (ai)
		freeaddrinfo(ai);
	return err;
}

static kw_err listen_tcp(kw_server *srv, const char *spec, bool tls, int *out, char *errbuf, size_t errlen)
{
	struct addrinfo *ai = NULL;
	kw_err err = resolve_listen(srv->o.cfg, spec, tls, &ai, errbuf, errlen);
	if (err != KW_OK)
		return err;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0 ||
	    evutil_make_socket_nonblocking(fd) != 0) {
		snprintf(errbuf, errlen, "cannot listen on %s: %s", spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return KW_ERR_IO;
	}
	freeaddrinfo(ai);
	*out = fd;
	return KW_OK;
}

static kw_err listen_unix(kw_server *srv, const char *path, char *errbuf, size_t errlen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(errbuf, errlen, "unix socket path too long");
		return KW_ERR_CONFIG;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1); /* length checked above */
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* rw for owner and group only (chmod, not umask: other threads run). */
	int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	if (rc == 0)
		rc = chmod(path, 0660);
	if (rc != 0 || listen(fd, 1024) != 0 || evutil_make_socket_nonblocking(fd) != 0) {
		snprintf(errbuf, errlen, "cannot listen on unix:%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return KW_ERR_IO;
	}
	srv->unix_fd = fd;
	return KW_OK;
}

#define KW_TLS12_CIPHERS                                                                                     \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"           \
	"ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
#define KW_TLS13_SUITES "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"

static kw_err tls_setup(kw_server *srv, char *errbuf, size_t errlen)
{
	const kw_config *cfg = srv->o.cfg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(errbuf, errlen, "cannot load TLS certificate %s or key %s", cfg->tls_cert,
		         cfg->tls_key);
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return KW_ERR_CONFIG;
	}
	/* TLS 1.2 and 1.3 only, AEAD ciphers with forward secrecy only (no CBC,
	 * no static RSA key exchange); the server's order. */
	if (SSL_CTX_set_cipher_list(ctx, KW_TLS12_CIPHERS) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, KW_TLS13_SUITES) != 1) {
		snprintf(errbuf, errlen, "the TLS cipher list is not supported by this OpenSSL");
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return KW_ERR_CONFIG;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	srv->ssl = ctx;
	return KW_OK;
}

static struct evhttp *loop_http(kw_loop *loop, int fd, bool tls, bool admin)
{
	const kw_config *cfg = loop->srv->o.cfg;
	struct evhttp *http = evhttp_new(loop->base);
	if (http == NULL)
		return NULL;
	evhttp_set_gencb(http, admin ? on_admin_request : on_request, loop);
	evhttp_set_max_headers_size(http, (ev_ssize_t)cfg->max_headers);
	evhttp_set_max_body_size(http, (ev_ssize_t)cfg->max_body);
	evhttp_set_timeout(http, 60);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	                                     EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD |
	                                     EVHTTP_REQ_OPTIONS);
	if (tls)
		evhttp_set_bevcb(http, tls_bevcb, loop->srv->ssl);
	int dfd = dup(fd);
	struct evhttp_bound_socket *b = dfd < 0 ? NULL : evhttp_accept_socket_with_handle(http, dfd);
	if (b == NULL) {
		if (dfd >= 0)
			close(dfd);
		evhttp_free(http);
		return NULL;
	}
	loop->bound[loop->nhttp] = b;
	loop->http[loop->nhttp++] = http;
	return http;
}

kw_err kw_server_start(const kw_server_opts *opts, kw_server **out, char *errbuf, size_t errlen)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, (void (*)(void))evthread_use_pthreads);
	const kw_config *cfg = opts->cfg;
	kw_err err = KW_OK;
	kw_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return KW_ERR_NOMEM;
	srv->o = *opts;
	kw_metrics_set_routes(opts->routes, opts->nroutes);
	atomic_store(&g_max_headers, cfg->max_headers);
	srv->tcp_fd = srv->unix_fd = srv->admin_fd = -1;
	if ((err = kw_server_validate(cfg, errbuf, errlen)) != KW_OK)
		goto fail;
	if (cfg->tls_cert[0] && (err = tls_setup(srv, errbuf, errlen)) != KW_OK)
		goto fail;
	if (cfg->listen[0] &&
	    (err = listen_tcp(srv, cfg->listen, srv->ssl != NULL, &srv->tcp_fd, errbuf, errlen)) != KW_OK)
		goto fail;
	if (cfg->admin_listen[0] &&
	    (err = listen_tcp(srv, cfg->admin_listen, false, &srv->admin_fd, errbuf, errlen)) != KW_OK)
		goto fail;
	srv->has_admin = srv->admin_fd >= 0;
	if (cfg->unix_socket[0] && (err = listen_unix(srv, cfg->unix_socket, errbuf, errlen)) != KW_OK)
		goto fail;

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	srv->nloops = cfg->io_threads > 0 ? cfg->io_threads : (int)(ncpu > 0 ? ncpu : 1);
	srv->loops = calloc((size_t)srv->nloops, sizeof(*srv->loops));
	if (srv->loops == NULL) {
		err = KW_ERR_NOMEM;
		goto fail;
	}
	for (int i = 0; i < srv->nloops; i++) {
		kw_loop *loop = &srv->loops[i];
		loop->srv = srv;
		loop->index = i;
		pthread_mutex_init(&loop->lock, NULL);
		/* The changelist folds evhttp's many enable/disable calls within one
		 * loop pass into at most one epoll_ctl per descriptor. */
		struct event_config *ecfg = event_config_new();
		if (ecfg)
			event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
		loop->base = ecfg ? event_base_new_with_config(ecfg) : NULL;
		if (ecfg)
			event_config_free(ecfg);
		loop->wake = loop->base ? event_new(loop->base, -1, EV_READ, on_wake, loop) : NULL;
		if (loop->wake == NULL ||
		    (srv->tcp_fd >= 0 && !loop_http(loop, srv->tcp_fd, srv->ssl != NULL, false)) ||
		    (srv->unix_fd >= 0 && !loop_http(loop, srv->unix_fd, false, false)) ||
		    (srv->admin_fd >= 0 && !loop_http(loop, srv->admin_fd, false, true))) {
			snprintf(errbuf, errlen, "cannot set up I/O thread %d", i);
			err = KW_ERR_NOMEM;
			goto fail;
		}
	}
	for (int i = 0; i < srv->nloops; i++) {
		if (pthread_create(&srv->loops[i].thread, NULL, loop_main, &srv->loops[i]) != 0) {
			snprintf(errbuf, errlen, "cannot start I/O thread %d", i);
			err = KW_ERR_NOMEM;
			goto fail;
		}
		srv->loops[i].started = true;
	}
	*out = srv;
	return KW_OK;
fail:
	kw_server_free(srv);
	return err;
}

long kw_server_in_flight(kw_server *srv)
{
	return atomic_load(&srv->in_flight);
}

static void stop_accepting(evutil_socket_t fd, short what, void *arg)
{
	kw_loop *loop = arg;
	(void)fd;
	(void)what;
	for (int i = 0; i < loop->nhttp; i++) {
		if (loop->bound[i]) {
			evhttp_del_accept_socket(loop->http[i], loop->bound[i]);
			loop->bound[i] = NULL;
		}
	}
}

int kw_server_drain(kw_server *srv, int drain_ms)
{
	atomic_store(&srv->draining, true);
	for (int i = 0; i < srv->nloops; i++)
		if (srv->loops[i].base)
			event_base_once(srv->loops[i].base, -1, EV_TIMEOUT, stop_accepting, &srv->loops[i],
			                NULL);
	/* Close our own copies too, so that once every loop has dropped its
	 * dup the kernel refuses new connections instead of queueing them. */
	if (srv->tcp_fd >= 0)
		close(srv->tcp_fd);
	srv->tcp_fd = -1;
	if (srv->admin_fd >= 0)
		close(srv->admin_fd);
	srv->admin_fd = -1;
	if (srv->unix_fd >= 0) {
		close(srv->unix_fd);
		unlink(srv->o.cfg->unix_socket);
	}
	srv->unix_fd = -1;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* Done when nothing has been in flight for a quiet period: a reply
	 * queued by evhttp_send_reply still has to be written, and a request
	 * already sent on an open connection is read only on a later pass. */
	struct timespec quiet;
	clock_gettime(CLOCK_MONOTONIC, &quiet);
	while (elapsed_since(&t0) * 1000.0 < drain_ms) {
		if (atomic_load(&srv->in_flight) > 0)
			clock_gettime(CLOCK_MONOTONIC, &quiet);
		else if (elapsed_since(&quiet) >= 0.25)
			break;
		struct timespec nap = {0, 5 * 1000 * 1000};
		nanosleep(&nap, NULL);
	}
	long left = atomic_load(&srv->in_flight);
	for (int i = 0; i < srv->nloops; i++)
		if (srv->loops[i].base)
			event_base_loopbreak(srv->loops[i].base);
	for (int i = 0; i < srv->nloops; i++) {
		if (srv->loops[i].started) {
			pthread_join(srv->loops[i].thread, NULL);
			srv->loops[i].started = false;
		}
	}
	return (int)left;
}

/* Call after kw_server_drain and after the worker pool has stopped. */
void kw_server_free(kw_server *srv)
{
	if (srv == NULL)
		return;
	for (int i = 0; srv->loops && i < srv->nloops; i++) {
		kw_loop *loop = &srv->loops[i];
		if (loop->started) {
			event_base_loopbreak(loop->base);
			pthread_join(loop->thread, NULL);
		}
		for (int h = 0; h < loop->nhttp; h++)
			evhttp_free(loop->http[h]);
		kw_pending *p = loop->done;
		while (p) { /* finished after the drain gave up: their connections are gone */
			kw_pending *next = p->next;
			pending_free(p);
			p = next;
		}
		if (loop->wake)
			event_free(loop->wake);
		if (loop->base)
			event_base_free(loop->base);
		pthread_mutex_destroy(&loop->lock);
	}
	free(srv->loops);
	if (srv->tcp_fd >= 0)
		close(srv->tcp_fd);
	if (srv->admin_fd >= 0)
		close(srv->admin_fd);
	if (srv->unix_fd >= 0) {
		close(srv->unix_fd);
		if (srv->o.cfg->unix_socket[0])
			unlink(srv->o.cfg->unix_socket);
	}
	SSL_CTX_free(srv->ssl);
	free(srv);
}
