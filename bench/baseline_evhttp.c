/* baseline_evhttp — the smallest single-threaded evhttp server answering
 * "ok": the yardstick bench/run.sh measures keywardd's /healthz against. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>

static void ok(struct evhttp_request *req, void *arg)
{
	(void)arg;
	evbuffer_add(evhttp_request_get_output_buffer(req), "ok", 2);
	evhttp_send_reply(req, 200, "OK", NULL);
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 18081;
	struct event_base *base = event_base_new();
	struct evhttp *http = evhttp_new(base);
	evhttp_set_gencb(http, ok, NULL);
	if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)port) != 0) {
		fprintf(stderr, "cannot bind 127.0.0.1:%d\n", port);
		return 1;
	}
	event_base_dispatch(base);
	return 0;
}
