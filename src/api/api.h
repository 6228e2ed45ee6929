/* api.h — handler declarations for the route table in routes.c. */
#ifndef KEYWARD_API_H
#define KEYWARD_API_H

#include "keyward/http.h"

void kw_api_healthz(kw_call *call);
void kw_api_readyz(kw_call *call);
void kw_api_metrics(kw_call *call);
void kw_api_keys_create(kw_call *call);
void kw_api_keys_list(kw_call *call);
void kw_api_keys_revoke(kw_call *call);

#endif
