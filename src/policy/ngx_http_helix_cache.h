/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_CACHE_H_INCLUDED_
#define _NGX_HTTP_HELIX_CACHE_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"


#define NGX_HTTP_HELIX_CACHE_HASH_LEN  32


typedef struct {
    ngx_uint_t                  entries;
    size_t                      bytes;
    uint64_t                    hits;
    uint64_t                    misses;
    uint64_t                    evictions;
} ngx_http_helix_cache_stats_t;


ngx_int_t ngx_http_helix_cache_init_zone(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf);

ngx_int_t ngx_http_helix_cache_hash(ngx_pool_t *pool, ngx_uint_t endpoint,
    ngx_str_t *scope, json_t *req, u_char *hash);
ngx_int_t ngx_http_helix_cache_key(ngx_pool_t *pool, ngx_uint_t endpoint,
    ngx_str_t *provider, ngx_str_t *model, u_char *hash, ngx_str_t *key);

ngx_int_t ngx_http_helix_cache_lookup(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *key, ngx_pool_t *pool, ngx_str_t *provider, ngx_str_t *body,
    ngx_http_helix_answer_meta_t *meta);
ngx_int_t ngx_http_helix_cache_claim(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *key, ngx_uint_t policy, ngx_msec_t wait);
void ngx_http_helix_cache_unclaim(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *key);
void ngx_http_helix_cache_store(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *key, ngx_uint_t policy, ngx_str_t *provider, ngx_str_t *body,
    ngx_log_t *log);

#define NGX_HTTP_HELIX_CACHE_ALIAS_LEN  16     /* an md5 */

ngx_int_t ngx_http_helix_cache_alias(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t endpoint, ngx_uint_t policy, ngx_str_t *scope, ngx_str_t *raw,
    ngx_str_t *alias);
ngx_int_t ngx_http_helix_cache_lookup_alias(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *alias, ngx_pool_t *pool, ngx_str_t *key, ngx_str_t *provider,
    ngx_str_t *body, ngx_http_helix_answer_meta_t *meta);
void ngx_http_helix_cache_store_alias(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *alias, ngx_str_t *key);

ngx_uint_t ngx_http_helix_cache_clear(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *pattern);
ngx_uint_t ngx_http_helix_cache_cleanup(ngx_http_helix_main_conf_t *hmcf);
void ngx_http_helix_cache_stats(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_cache_stats_t *st);

ngx_uint_t ngx_http_helix_cache_warm_claim(ngx_http_helix_main_conf_t *hmcf);

ngx_int_t ngx_http_helix_cache_policy(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *name);


#endif /* _NGX_HTTP_HELIX_CACHE_H_INCLUDED_ */
