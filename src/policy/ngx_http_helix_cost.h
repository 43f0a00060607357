/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_COST_H_INCLUDED_
#define _NGX_HTTP_HELIX_COST_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"


/* what a call used, as providers bill it */

typedef struct {
    int64_t                     prompt;         /* cached ones included */
    int64_t                     cached;         /* of them: cache reads */
    int64_t                     cache_write;    /* of them: cache writes */
    int64_t                     output;
} ngx_http_helix_usage_t;


#define NGX_HTTP_HELIX_MONEY_LEN  (NGX_INT64_LEN + 2)


ngx_http_helix_price_t *ngx_http_helix_cost_price(
    ngx_http_helix_main_conf_t *hmcf, ngx_str_t *provider, ngx_str_t *model);
int64_t ngx_http_helix_cost(ngx_http_helix_price_t *pr,
    ngx_http_helix_usage_t *u);
int64_t ngx_http_helix_cost_estimate(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *model, int64_t prompt, int64_t output);
u_char *ngx_http_helix_cost_format(u_char *p, int64_t micro);
void ngx_http_helix_cost_cached_text(ngx_uint_t type, u_char *p, size_t len,
    ngx_http_helix_usage_t *u);
void ngx_http_helix_cost_cached_json(ngx_uint_t type, json_t *usage,
    ngx_http_helix_usage_t *u);


#endif /* _NGX_HTTP_HELIX_COST_H_INCLUDED_ */
