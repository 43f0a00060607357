/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_BUDGET_H_INCLUDED_
#define _NGX_HTTP_HELIX_BUDGET_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"


/* called once a reservation (or a status) waited for Redis */
typedef void (*ngx_http_helix_budget_pt)(ngx_http_request_t *r);


/* one budget as it stands, for GET /v1/admin/keys/{name} */

typedef struct {
    ngx_str_t                       id;         /* "k:<name>", "t:<...>" */
    ngx_http_helix_budget_conf_t   *conf;
    int64_t                         spent;      /* micro-units */
    time_t                          start;      /* of the period, UTC */
    time_t                          reset;      /* the next one's */
} ngx_http_helix_budget_state_t;


ngx_int_t ngx_http_helix_budget_init_zone(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf);

/*
 * The gateway's hooks, beside the rate limits' (same contract):
 * reserve: before the first provider call, the dearest cost the call
 * may have (prompt estimate and max_tokens); NGX_OK go on; NGX_AGAIN
 * waiting for Redis, then "resume"; NGX_DONE a 429 was sent.
 * charge: a provider's answer, its usage priced; it settles the
 * reservation, or (items of a batch or an ensemble) adds to the spend.
 * raw: the provider's answer for its cached counts, or NULL (a stream:
 * stream_usage gave them).  saved: a cache hit, what it would have cost.
 */
ngx_int_t ngx_http_helix_budget_reserve(ngx_http_request_t *r,
    size_t prompt_tokens, json_t *req, ngx_http_helix_budget_pt resume);
void ngx_http_helix_budget_charge(ngx_http_request_t *r,
    ngx_http_helix_provider_t *p, ngx_str_t *model, uint64_t prompt,
    uint64_t completion, ngx_str_t *raw);
void ngx_http_helix_budget_stream_usage(ngx_http_request_t *r,
    ngx_uint_t type, json_t *usage);
void ngx_http_helix_budget_saved(ngx_http_request_t *r, ngx_str_t *provider,
    ngx_str_t *model, ngx_str_t *answer);

/* the cost of a request's calls so far, -1 if none was priced */
int64_t ngx_http_helix_budget_cost(ngx_http_request_t *r);

/* a key's budgets (Redis's figure when it answers): NGX_OK, NGX_AGAIN */
ngx_int_t ngx_http_helix_budget_status(ngx_http_request_t *r,
    ngx_http_helix_api_key_t *key, ngx_http_helix_budget_pt done);
ngx_uint_t ngx_http_helix_budget_states(ngx_http_request_t *r,
    ngx_http_helix_budget_state_t *state);


extern ngx_module_t  ngx_http_helix_budget_module;


#endif /* _NGX_HTTP_HELIX_BUDGET_H_INCLUDED_ */
