/*
 * Copyright (C) helix authors
 *
 * helix.yaml -> ngx_http_helix_main_conf_t.  The file is read once per
 * configuration cycle, so a reload re-reads it and a broken file leaves
 * the running cycle (and its configuration) untouched.
 */


#include <yaml.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_yaml.h"
#include "ngx_http_helix_secret.h"


#define NGX_HTTP_HELIX_YAML_PATH  256


typedef struct {
    ngx_conf_t                   *cf;
    ngx_str_t                    *file;
    yaml_document_t              *doc;
    size_t                        path_len;
    u_char                        path[NGX_HTTP_HELIX_YAML_PATH];
} ngx_http_helix_yaml_ctx_t;


typedef struct ngx_http_helix_yaml_key_s  ngx_http_helix_yaml_key_t;

typedef ngx_int_t (*ngx_http_helix_yaml_set_pt)(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);

struct ngx_http_helix_yaml_key_s {
    ngx_str_t                     name;
    ngx_http_helix_yaml_set_pt    set;
    size_t                        offset;
    const void                   *post;
};


typedef struct {
    ngx_str_t                     name;
    ngx_uint_t                    value;
} ngx_http_helix_yaml_enum_t;


static void ngx_http_helix_yaml_log(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_uint_t level, yaml_node_t *node, const char *fmt, ...);
static void ngx_http_helix_yaml_log_line(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_uint_t level, ngx_uint_t line, const char *fmt, ...);
static void ngx_http_helix_yaml_vlog(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_uint_t level, ngx_uint_t line, const char *fmt, va_list args);
static size_t ngx_http_helix_yaml_push(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_str_t *name, ngx_uint_t index);
static ngx_int_t ngx_http_helix_yaml_map(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *table);
static ngx_int_t ngx_http_helix_yaml_scalar(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, ngx_str_t *value);
static ngx_int_t ngx_http_helix_yaml_expand(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, u_char *p, size_t len, ngx_str_t *value);
static ngx_int_t ngx_http_helix_yaml_is_null(yaml_node_t *node);

static ngx_int_t ngx_http_helix_yaml_set_map(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_flag(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_uint(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_count(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_percent(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_msec(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_size(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_str(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_enum(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_str_list(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_cidr_list(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_notice(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_gone(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_secret(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_host(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_nodes(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_l2(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_block(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_policies(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_providers(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_seq(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_metrics(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);

static ngx_int_t ngx_http_helix_yaml_validate(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_main_conf_t *hmcf);
static ngx_int_t ngx_http_helix_yaml_stores(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_main_conf_t *hmcf);
static ngx_int_t ngx_http_helix_yaml_store_breaker(
    ngx_http_helix_yaml_ctx_t *ctx, const char *block, ngx_uint_t failures,
    ngx_msec_t backoff, ngx_msec_t max_backoff);
static ngx_int_t ngx_http_helix_yaml_sentinels(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_redis_conf_t *rc);
static ngx_int_t ngx_http_helix_yaml_db_hosts(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_database_conf_t *db);
static ngx_int_t ngx_http_helix_yaml_resolve(ngx_http_helix_yaml_ctx_t *ctx,
    const char *key, ngx_str_t *host, ngx_uint_t port, ngx_str_t *addr);
static ngx_int_t ngx_http_helix_yaml_validate_tasks(
    ngx_http_helix_yaml_ctx_t *ctx, ngx_http_helix_main_conf_t *hmcf);
static ngx_int_t ngx_http_helix_yaml_set_money(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_budget(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_set_prices(
    ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node, void *base,
    const ngx_http_helix_yaml_key_t *key);
static ngx_int_t ngx_http_helix_yaml_validate_costs(
    ngx_http_helix_yaml_ctx_t *ctx, ngx_http_helix_main_conf_t *hmcf);
static ngx_int_t ngx_http_helix_provider_infer_type(ngx_str_t *name);


#define ngx_helix_key(name, set, type, field, post)                          \
    { ngx_string(name), set, offsetof(type, field), post }

#define ngx_helix_key_null  { ngx_null_string, NULL, 0, NULL }

#define MC  ngx_http_helix_main_conf_t


static const char  ngx_http_helix_no_nginx_memory[] =
    "it has no meaning inside nginx (there is no Go heap); memory is "
    "bounded by the shared memory zone sizes in nginx.conf and by "
    "worker_processes";

static const char  ngx_http_helix_no_nginx_cpu[] =
    "it has no meaning inside nginx; set worker_processes (\"auto\" uses "
    "every CPU) in nginx.conf";

static const char  ngx_http_helix_loopback_moved[] =
    "is no longer read: the module's own calls (tasks, warming) go to the "
    "address of \"helix_loopback\" in nginx.conf (as "
    "\"helix_loopback 127.0.0.1:8080;\" in http{})";

static const char  ngx_http_helix_server_timeout[] =
    "server timeouts are nginx's own: set client_header_timeout and "
    "client_body_timeout (read), send_timeout (write) and "
    "keepalive_timeout (idle) in nginx.conf; the value is kept for the "
    "module's own use only";


static const ngx_http_helix_yaml_enum_t  ngx_http_helix_provider_types[] = {
    { ngx_string("openai"), NGX_HTTP_HELIX_OPENAI },
    { ngx_string("anthropic"), NGX_HTTP_HELIX_ANTHROPIC },
    { ngx_string("gemini"), NGX_HTTP_HELIX_GEMINI },
    { ngx_null_string, 0 }
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_l1[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  cache.l1_enabled, NULL),
    ngx_helix_key("max_size", ngx_http_helix_yaml_set_uint, MC,
                  cache.l1_max_size, NULL),
    ngx_helix_key("ttl", ngx_http_helix_yaml_set_msec, MC,
                  cache.l1_ttl, NULL),
    ngx_helix_key("eviction", ngx_http_helix_yaml_set_str, MC,
                  cache.l1_eviction, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_l2[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  cache.l2_enabled, NULL),
    ngx_helix_key("secret", ngx_http_helix_yaml_set_secret, MC,
                  cache.l2_secret, NULL),
    ngx_helix_key("host", ngx_http_helix_yaml_set_host, MC,
                  redis, NULL),
    ngx_helix_key("port", ngx_http_helix_yaml_set_uint, MC,
                  redis.port, NULL),
    ngx_helix_key("username", ngx_http_helix_yaml_set_str, MC,
                  redis.username, NULL),
    ngx_helix_key("password", ngx_http_helix_yaml_set_str, MC,
                  redis.password, NULL),
    ngx_helix_key("db", ngx_http_helix_yaml_set_uint, MC,
                  redis.db, NULL),
    ngx_helix_key("pool_size", ngx_http_helix_yaml_set_uint, MC,
                  redis.pool_size, NULL),
    ngx_helix_key("max_retries", ngx_http_helix_yaml_set_uint, MC,
                  redis.max_retries, NULL),
    ngx_helix_key("timeout", ngx_http_helix_yaml_set_msec, MC,
                  redis.timeout, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_policy[] = {
    ngx_helix_key("ttl", ngx_http_helix_yaml_set_msec,
                  ngx_http_helix_cache_policy_t, ttl, NULL),
    ngx_helix_key("max_size", ngx_http_helix_yaml_set_uint,
                  ngx_http_helix_cache_policy_t, max_size, NULL),
    ngx_helix_key("shared", ngx_http_helix_yaml_set_flag,
                  ngx_http_helix_cache_policy_t, shared, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_warm_query[] = {
    ngx_helix_key("prompt", ngx_http_helix_yaml_set_str,
                  ngx_http_helix_warm_query_t, prompt, NULL),
    ngx_helix_key("model", ngx_http_helix_yaml_set_str,
                  ngx_http_helix_warm_query_t, model, NULL),
    ngx_helix_key("providers", ngx_http_helix_yaml_set_str_list,
                  ngx_http_helix_warm_query_t, providers, NULL),
    ngx_helix_key("tenant", ngx_http_helix_yaml_set_str,
                  ngx_http_helix_warm_query_t, tenant, NULL),
    ngx_helix_key_null
};


typedef struct {
    size_t                              array;     /* offset of array */
    size_t                              line;      /* offset in element */
    const ngx_http_helix_yaml_key_t    *table;
} ngx_http_helix_yaml_seq_t;


static const ngx_http_helix_yaml_seq_t  ngx_http_helix_yaml_warm_seq = {
    offsetof(MC, cache.warming_queries),
    offsetof(ngx_http_helix_warm_query_t, line),
    ngx_http_helix_yaml_warm_query
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_warming[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  cache.warming_enabled, NULL),
    ngx_helix_key("on_startup", ngx_http_helix_yaml_set_flag, MC,
                  cache.warming_on_startup, NULL),
    { ngx_string("endpoint"), ngx_http_helix_yaml_set_gone, 0,
      ngx_http_helix_loopback_moved },
    { ngx_string("queries"), ngx_http_helix_yaml_set_seq, 0,
      &ngx_http_helix_yaml_warm_seq },
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_cache[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  cache.enabled, NULL),
    { ngx_string("l1"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_l1 },
    { ngx_string("l2"), ngx_http_helix_yaml_set_l2, 0,
      ngx_http_helix_yaml_l2 },
    { ngx_string("policies"), ngx_http_helix_yaml_set_policies, 0, NULL },
    { ngx_string("warming"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_warming },
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_redis_pool[] = {
    ngx_helix_key("size", ngx_http_helix_yaml_set_uint, MC,
                  redis.pool_size, NULL),
    ngx_helix_key("min_idle", ngx_http_helix_yaml_set_uint, MC,
                  redis.min_idle, NULL),
    ngx_helix_key("max_retries", ngx_http_helix_yaml_set_uint, MC,
                  redis.max_retries, NULL),
    ngx_helix_key("timeout", ngx_http_helix_yaml_set_msec, MC,
                  redis.timeout, NULL),
    ngx_helix_key("idle_timeout", ngx_http_helix_yaml_set_msec, MC,
                  redis.idle_timeout, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_redis_breaker[] = {
    ngx_helix_key("failures", ngx_http_helix_yaml_set_uint, MC,
                  redis.breaker_failures, NULL),
    ngx_helix_key("backoff", ngx_http_helix_yaml_set_msec, MC,
                  redis.breaker_backoff, NULL),
    ngx_helix_key("max_backoff", ngx_http_helix_yaml_set_msec, MC,
                  redis.breaker_max_backoff, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_sentinel[] = {
    ngx_helix_key("master_name", ngx_http_helix_yaml_set_str, MC,
                  redis.sentinel_master, NULL),
    ngx_helix_key("nodes", ngx_http_helix_yaml_set_nodes, MC,
                  redis.sentinel_nodes, NULL),
    ngx_helix_key("password", ngx_http_helix_yaml_set_str, MC,
                  redis.sentinel_password, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_redis[] = {
    ngx_helix_key("host", ngx_http_helix_yaml_set_host, MC, redis, NULL),
    ngx_helix_key("port", ngx_http_helix_yaml_set_uint, MC,
                  redis.port, NULL),
    ngx_helix_key("username", ngx_http_helix_yaml_set_str, MC,
                  redis.username, NULL),
    ngx_helix_key("password", ngx_http_helix_yaml_set_str, MC,
                  redis.password, NULL),
    ngx_helix_key("db", ngx_http_helix_yaml_set_uint, MC, redis.db, NULL),
    ngx_helix_key("pool_size", ngx_http_helix_yaml_set_uint, MC,
                  redis.pool_size, NULL),
    { ngx_string("pool"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_redis_pool },
    { ngx_string("breaker"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_redis_breaker },
    { ngx_string("sentinel"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_sentinel },
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_db_pool[] = {
    ngx_helix_key("max_open", ngx_http_helix_yaml_set_uint, MC,
                  database.max_open, NULL),
    ngx_helix_key("max_idle", ngx_http_helix_yaml_set_uint, MC,
                  database.max_idle, NULL),
    ngx_helix_key("max_lifetime", ngx_http_helix_yaml_set_msec, MC,
                  database.max_lifetime, NULL),
    ngx_helix_key("max_idle_time", ngx_http_helix_yaml_set_msec, MC,
                  database.max_idle_time, NULL),
    ngx_helix_key("health_check", ngx_http_helix_yaml_set_msec, MC,
                  database.health_check, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_db_query[] = {
    ngx_helix_key("slow_query_log", ngx_http_helix_yaml_set_flag, MC,
                  database.slow_query_log, NULL),
    ngx_helix_key("slow_query_threshold", ngx_http_helix_yaml_set_msec, MC,
                  database.slow_query_threshold, NULL),
    ngx_helix_key("statement_cache", ngx_http_helix_yaml_set_uint, MC,
                  database.statement_cache, NULL),
    ngx_helix_key("prepared_statements", ngx_http_helix_yaml_set_flag, MC,
                  database.prepared_statements, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_db_log[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  database.log_enabled, NULL),
    ngx_helix_key("buffer", ngx_http_helix_yaml_set_size, MC,
                  database.log_buffer, NULL),
    ngx_helix_key("batch", ngx_http_helix_yaml_set_uint, MC,
                  database.log_batch, NULL),
    ngx_helix_key("flush_interval", ngx_http_helix_yaml_set_msec, MC,
                  database.log_flush, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_db_breaker[] = {
    ngx_helix_key("failures", ngx_http_helix_yaml_set_uint, MC,
                  database.breaker_failures, NULL),
    ngx_helix_key("backoff", ngx_http_helix_yaml_set_msec, MC,
                  database.breaker_backoff, NULL),
    ngx_helix_key("max_backoff", ngx_http_helix_yaml_set_msec, MC,
                  database.breaker_max_backoff, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_database[] = {
    ngx_helix_key("host", ngx_http_helix_yaml_set_str, MC,
                  database.host, NULL),
    ngx_helix_key("hosts", ngx_http_helix_yaml_set_nodes, MC,
                  database.hosts, NULL),
    ngx_helix_key("target_session_attrs", ngx_http_helix_yaml_set_str, MC,
                  database.target_session_attrs, NULL),
    ngx_helix_key("port", ngx_http_helix_yaml_set_uint, MC,
                  database.port, NULL),
    ngx_helix_key("name", ngx_http_helix_yaml_set_str, MC,
                  database.name, NULL),
    ngx_helix_key("user", ngx_http_helix_yaml_set_str, MC,
                  database.user, NULL),
    ngx_helix_key("password", ngx_http_helix_yaml_set_str, MC,
                  database.password, NULL),
    ngx_helix_key("sslmode", ngx_http_helix_yaml_set_str, MC,
                  database.sslmode, NULL),
    { ngx_string("pool"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_db_pool },
    { ngx_string("query"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_db_query },
    { ngx_string("completion_log"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_db_log },
    { ngx_string("breaker"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_db_breaker },
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_http_pool[] = {
    ngx_helix_key("max_connections", ngx_http_helix_yaml_set_uint, MC,
                  http_client.max_connections, NULL),
    ngx_helix_key("max_idle_connections", ngx_http_helix_yaml_set_uint, MC,
                  http_client.max_idle_connections, NULL),
    ngx_helix_key("idle_timeout", ngx_http_helix_yaml_set_msec, MC,
                  http_client.idle_timeout, NULL),
    ngx_helix_key("timeout", ngx_http_helix_yaml_set_msec, MC,
                  http_client.timeout, NULL),
    ngx_helix_key("keep_alive", ngx_http_helix_yaml_set_flag, MC,
                  http_client.keep_alive, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_http_client[] = {
    { ngx_string("pool"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_http_pool },
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_parallel[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  parallel_enabled, NULL),
    ngx_helix_key("max_concurrent", ngx_http_helix_yaml_set_uint, MC,
                  parallel_max_concurrent, NULL),
    ngx_helix_key("per_provider", ngx_http_helix_yaml_set_uint, MC,
                  parallel_per_provider, NULL),
    ngx_helix_key("queue_size", ngx_http_helix_yaml_set_uint, MC,
                  parallel_queue_size, NULL),
    ngx_helix_key("queue_timeout", ngx_http_helix_yaml_set_msec, MC,
                  parallel_queue_timeout, NULL),
    ngx_helix_key_null
};


#define BC  ngx_http_helix_breaker_conf_t

static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_breaker[] = {
    ngx_helix_key("failure_threshold", ngx_http_helix_yaml_set_uint, BC,
                  failure_threshold, NULL),
    ngx_helix_key("failure_ratio", ngx_http_helix_yaml_set_percent, BC,
                  failure_ratio, NULL),
    ngx_helix_key("min_requests", ngx_http_helix_yaml_set_uint, BC,
                  min_requests, NULL),
    ngx_helix_key("window", ngx_http_helix_yaml_set_msec, BC, window, NULL),
    ngx_helix_key("cooldown", ngx_http_helix_yaml_set_msec, BC,
                  cooldown, NULL),
    ngx_helix_key("half_open_requests", ngx_http_helix_yaml_set_uint, BC,
                  half_open_requests, NULL),
    ngx_helix_key_null
};


#define PR  ngx_http_helix_provider_t

static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_provider[] = {
    ngx_helix_key("type", ngx_http_helix_yaml_set_enum, PR, type,
                  ngx_http_helix_provider_types),
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, PR,
                  enabled, NULL),
    ngx_helix_key("location", ngx_http_helix_yaml_set_str, PR,
                  location, NULL),
    ngx_helix_key("stream_location", ngx_http_helix_yaml_set_str, PR,
                  stream_location, NULL),
    ngx_helix_key("base_url", ngx_http_helix_yaml_set_str, PR,
                  base_url, NULL),
    ngx_helix_key("api_key", ngx_http_helix_yaml_set_str, PR,
                  api_key, NULL),
    ngx_helix_key("api_version", ngx_http_helix_yaml_set_str, PR,
                  api_version, NULL),
    ngx_helix_key("models", ngx_http_helix_yaml_set_str_list, PR,
                  models, NULL),
    ngx_helix_key("embedding_models", ngx_http_helix_yaml_set_str_list, PR,
                  embedding_models, NULL),
    ngx_helix_key("default_model", ngx_http_helix_yaml_set_str, PR,
                  default_model, NULL),
    ngx_helix_key("max_concurrent", ngx_http_helix_yaml_set_uint, PR,
                  max_concurrent, NULL),
    ngx_helix_key("timeout", ngx_http_helix_yaml_set_msec, PR,
                  timeout, NULL),
    ngx_helix_key("weight", ngx_http_helix_yaml_set_uint, PR,
                  weight, NULL),
    ngx_helix_key("circuit_breaker", ngx_http_helix_yaml_set_map, PR,
                  breaker, ngx_http_helix_yaml_breaker),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_ensemble[] = {
    ngx_helix_key("parallel_execution", ngx_http_helix_yaml_set_flag, MC,
                  ensemble_parallel, NULL),
    ngx_helix_key("max_providers", ngx_http_helix_yaml_set_uint, MC,
                  ensemble_max_providers, NULL),
    ngx_helix_key("timeout", ngx_http_helix_yaml_set_msec, MC,
                  ensemble_timeout, NULL),
    ngx_helix_key("fail_fast", ngx_http_helix_yaml_set_flag, MC,
                  ensemble_fail_fast, NULL),
    ngx_helix_key("strategy", ngx_http_helix_yaml_set_str, MC,
                  ensemble_strategy, NULL),
    ngx_helix_key_null
};


/* debates: the most a request may ask for, bounded here */

static const ngx_uint_t  ngx_http_helix_yaml_max_rounds = 20;
static const ngx_uint_t  ngx_http_helix_yaml_max_participants = 16;

static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_debates[] = {
    ngx_helix_key("max_rounds", ngx_http_helix_yaml_set_count, MC,
                  debate_max_rounds, &ngx_http_helix_yaml_max_rounds),
    ngx_helix_key("max_participants", ngx_http_helix_yaml_set_count, MC,
                  debate_max_participants,
                  &ngx_http_helix_yaml_max_participants),
    ngx_helix_key("round_timeout", ngx_http_helix_yaml_set_msec, MC,
                  debate_timeout, NULL),
    ngx_helix_key("fail_fast", ngx_http_helix_yaml_set_flag, MC,
                  debate_fail_fast, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_streaming[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  streaming_enabled, NULL),
    ngx_helix_key("buffer_size", ngx_http_helix_yaml_set_size, MC,
                  streaming_buffer_size, NULL),
    ngx_helix_key("flush_interval", ngx_http_helix_yaml_set_msec, MC,
                  streaming_flush_interval, NULL),
    ngx_helix_key("compression", ngx_http_helix_yaml_set_str, MC,
                  streaming_compression, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_memory[] = {
    { ngx_string("max_heap"), ngx_http_helix_yaml_set_notice, 0,
      ngx_http_helix_no_nginx_memory },
    { ngx_string("gc_percent"), ngx_http_helix_yaml_set_notice, 0,
      ngx_http_helix_no_nginx_memory },
    { ngx_string("soft_limit"), ngx_http_helix_yaml_set_notice, 0,
      ngx_http_helix_no_nginx_memory },
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_cpu[] = {
    { ngx_string("gomaxprocs"), ngx_http_helix_yaml_set_notice, 0,
      ngx_http_helix_no_nginx_cpu },
    ngx_helix_key("worker_threads", ngx_http_helix_yaml_set_uint, MC,
                  worker_threads, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_requests[] = {
    ngx_helix_key("max_request_body", ngx_http_helix_yaml_set_size, MC,
                  max_request_body, NULL),
    ngx_helix_key("max_response_body", ngx_http_helix_yaml_set_size, MC,
                  max_response_body, NULL),
    ngx_helix_key("max_prompt_tokens", ngx_http_helix_yaml_set_uint, MC,
                  max_prompt_tokens, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_resources[] = {
    { ngx_string("memory"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_memory },
    { ngx_string("cpu"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_cpu },
    { ngx_string("requests"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_requests },
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_timeouts[] = {
    { ngx_string("read"), ngx_http_helix_yaml_set_notice,
      offsetof(MC, timeout_read), ngx_http_helix_server_timeout },
    { ngx_string("write"), ngx_http_helix_yaml_set_notice,
      offsetof(MC, timeout_write), ngx_http_helix_server_timeout },
    { ngx_string("idle"), ngx_http_helix_yaml_set_notice,
      offsetof(MC, timeout_idle), ngx_http_helix_server_timeout },
    ngx_helix_key("provider_default", ngx_http_helix_yaml_set_msec, MC,
                  timeout_provider, NULL),
    ngx_helix_key("provider_streaming", ngx_http_helix_yaml_set_msec, MC,
                  timeout_provider_streaming, NULL),
    ngx_helix_key("database", ngx_http_helix_yaml_set_msec, MC,
                  timeout_database, NULL),
    ngx_helix_key("cache", ngx_http_helix_yaml_set_msec, MC,
                  timeout_cache, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_alert[] = {
    ngx_helix_key("name", ngx_http_helix_yaml_set_str,
                  ngx_http_helix_alert_t, name, NULL),
    ngx_helix_key("condition", ngx_http_helix_yaml_set_str,
                  ngx_http_helix_alert_t, condition, NULL),
    ngx_helix_key("action", ngx_http_helix_yaml_set_str,
                  ngx_http_helix_alert_t, action, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_seq_t  ngx_http_helix_yaml_alert_seq = {
    offsetof(MC, alerts), offsetof(ngx_http_helix_alert_t, line),
    ngx_http_helix_yaml_alert
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_admin[] = {
    ngx_helix_key("token", ngx_http_helix_yaml_set_secret, MC,
                  admin_token, NULL),
    ngx_helix_key_null
};


#define AK  ngx_http_helix_api_key_t

static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_api_key[] = {
    ngx_helix_key("name", ngx_http_helix_yaml_set_str, AK, name, NULL),
    ngx_helix_key("key", ngx_http_helix_yaml_set_secret, AK, key, NULL),
    ngx_helix_key("tenant", ngx_http_helix_yaml_set_str, AK, tenant, NULL),
    ngx_helix_key("requests_per_minute", ngx_http_helix_yaml_set_uint, AK,
                  limits.requests_per_minute, NULL),
    ngx_helix_key("tokens_per_minute", ngx_http_helix_yaml_set_uint, AK,
                  limits.tokens_per_minute, NULL),
    ngx_helix_key("unlimited", ngx_http_helix_yaml_set_flag, AK,
                  unlimited, NULL),
    ngx_helix_key("max_task_priority", ngx_http_helix_yaml_set_uint, AK,
                  max_task_priority, NULL),
    ngx_helix_key("budget", ngx_http_helix_yaml_set_budget, AK, budget,
                  NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_tenant[] = {
    ngx_helix_key("name", ngx_http_helix_yaml_set_str,
                  ngx_http_helix_tenant_t, name, NULL),
    ngx_helix_key("budget", ngx_http_helix_yaml_set_budget,
                  ngx_http_helix_tenant_t, budget, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_seq_t  ngx_http_helix_yaml_tenant_seq = {
    offsetof(MC, tenants), offsetof(ngx_http_helix_tenant_t, line),
    ngx_http_helix_yaml_tenant
};


static const ngx_http_helix_yaml_enum_t  ngx_http_helix_yaml_periods[] = {
    { ngx_string("day"), NGX_HTTP_HELIX_BUDGET_DAY },
    { ngx_string("month"), NGX_HTTP_HELIX_BUDGET_MONTH },
    { ngx_null_string, 0 }
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_budget[] = {
    ngx_helix_key("amount", ngx_http_helix_yaml_set_money,
                  ngx_http_helix_budget_conf_t, amount, NULL),
    ngx_helix_key("period", ngx_http_helix_yaml_set_enum,
                  ngx_http_helix_budget_conf_t, period,
                  ngx_http_helix_yaml_periods),
    ngx_helix_key_null
};


#define PRICE  ngx_http_helix_price_t

static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_price[] = {
    ngx_helix_key("model", ngx_http_helix_yaml_set_str, PRICE, model, NULL),
    ngx_helix_key("provider", ngx_http_helix_yaml_set_str, PRICE, provider,
                  NULL),
    ngx_helix_key("input", ngx_http_helix_yaml_set_money, PRICE, input, NULL),
    ngx_helix_key("output", ngx_http_helix_yaml_set_money, PRICE, output,
                  NULL),
    ngx_helix_key("cached_input", ngx_http_helix_yaml_set_money, PRICE,
                  cached_input, NULL),
    ngx_helix_key("cache_write", ngx_http_helix_yaml_set_money, PRICE,
                  cache_write, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_pricing[] = {
    ngx_helix_key("currency", ngx_http_helix_yaml_set_str, MC, currency,
                  NULL),
    ngx_helix_key("cost_header", ngx_http_helix_yaml_set_flag, MC,
                  cost_header, NULL),
    { ngx_string("models"), ngx_http_helix_yaml_set_prices, 0, NULL },
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_seq_t  ngx_http_helix_yaml_api_key_seq = {
    offsetof(MC, api_keys), offsetof(ngx_http_helix_api_key_t, line),
    ngx_http_helix_yaml_api_key
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_auth[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  auth_enabled, NULL),
    { ngx_string("keys"), ngx_http_helix_yaml_set_seq, 0,
      &ngx_http_helix_yaml_api_key_seq },
    { ngx_string("tenants"), ngx_http_helix_yaml_set_seq, 0,
      &ngx_http_helix_yaml_tenant_seq },
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_rate_limit[] = {
    ngx_helix_key("requests_per_minute", ngx_http_helix_yaml_set_uint, MC,
                  default_limits.requests_per_minute, NULL),
    ngx_helix_key("tokens_per_minute", ngx_http_helix_yaml_set_uint, MC,
                  default_limits.tokens_per_minute, NULL),
    ngx_helix_key("window", ngx_http_helix_yaml_set_msec, MC,
                  limit_window, NULL),
    ngx_helix_key("default_max_tokens", ngx_http_helix_yaml_set_uint, MC,
                  limit_max_tokens, NULL),
    ngx_helix_key("global", ngx_http_helix_yaml_set_flag, MC,
                  limit_global, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_batch[] = {
    ngx_helix_key("max_requests", ngx_http_helix_yaml_set_uint, MC,
                  batch_max_requests, NULL),
    ngx_helix_key("max_concurrent", ngx_http_helix_yaml_set_uint, MC,
                  batch_max_concurrent, NULL),
    ngx_helix_key("max_texts", ngx_http_helix_yaml_set_uint, MC,
                  batch_max_texts, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_tasks[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  tasks.enabled, NULL),
    ngx_helix_key("concurrency", ngx_http_helix_yaml_set_uint, MC,
                  tasks.concurrency, NULL),
    ngx_helix_key("lease", ngx_http_helix_yaml_set_msec, MC,
                  tasks.lease, NULL),
    ngx_helix_key("poll_interval", ngx_http_helix_yaml_set_msec, MC,
                  tasks.poll_interval, NULL),
    ngx_helix_key("max_attempts", ngx_http_helix_yaml_set_uint, MC,
                  tasks.max_attempts, NULL),
    { ngx_string("endpoint"), ngx_http_helix_yaml_set_gone, 0,
      ngx_http_helix_loopback_moved },
    ngx_helix_key("timeout", ngx_http_helix_yaml_set_msec, MC,
                  tasks.timeout, NULL),
    ngx_helix_key("callback_retries", ngx_http_helix_yaml_set_uint, MC,
                  tasks.callback_retries, NULL),
    ngx_helix_key("callback_backoff", ngx_http_helix_yaml_set_msec, MC,
                  tasks.callback_backoff, NULL),
    ngx_helix_key("callback_timeout", ngx_http_helix_yaml_set_msec, MC,
                  tasks.callback_timeout, NULL),
    ngx_helix_key("callback_max_answer", ngx_http_helix_yaml_set_size, MC,
                  tasks.callback_max_answer, NULL),
    ngx_helix_key("callback_allow", ngx_http_helix_yaml_set_cidr_list, MC,
                  tasks.callback_allow, NULL),
    ngx_helix_key("callback_concurrency", ngx_http_helix_yaml_set_uint, MC,
                  tasks.callback_concurrency, NULL),
    ngx_helix_key("callback_secret", ngx_http_helix_yaml_set_str, MC,
                  tasks.callback_secret, NULL),
    ngx_helix_key("max_payload", ngx_http_helix_yaml_set_size, MC,
                  tasks.max_payload, NULL),
    ngx_helix_key("max_pending", ngx_http_helix_yaml_set_uint, MC,
                  tasks.max_pending, NULL),
    ngx_helix_key("max_priority", ngx_http_helix_yaml_set_uint, MC,
                  tasks.max_priority, NULL),
    ngx_helix_key("retention", ngx_http_helix_yaml_set_msec, MC,
                  tasks.retention, NULL),
    ngx_helix_key("purge_interval", ngx_http_helix_yaml_set_msec, MC,
                  tasks.purge_interval, NULL),
    ngx_helix_key("purge_batch", ngx_http_helix_yaml_set_uint, MC,
                  tasks.purge_batch, NULL),
    ngx_helix_key_null
};


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_root[] = {
    { ngx_string("cache"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_cache },
    { ngx_string("redis"), ngx_http_helix_yaml_set_block,
      offsetof(MC, redis.configured), ngx_http_helix_yaml_redis },
    { ngx_string("database"), ngx_http_helix_yaml_set_block,
      offsetof(MC, database.configured), ngx_http_helix_yaml_database },
    { ngx_string("http_client"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_http_client },
    { ngx_string("providers"), ngx_http_helix_yaml_set_providers, 0, NULL },
    { ngx_string("ensemble"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_ensemble },
    { ngx_string("debates"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_debates },
    { ngx_string("streaming"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_streaming },
    { ngx_string("resources"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_resources },
    { ngx_string("timeouts"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_timeouts },
    { ngx_string("metrics"), ngx_http_helix_yaml_set_metrics, 0, NULL },
    { ngx_string("alerts"), ngx_http_helix_yaml_set_seq, 0,
      &ngx_http_helix_yaml_alert_seq },
    { ngx_string("admin"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_admin },
    { ngx_string("auth"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_auth },
    { ngx_string("rate_limit"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_rate_limit },
    { ngx_string("batch"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_batch },
    { ngx_string("tasks"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_tasks },
    { ngx_string("pricing"), ngx_http_helix_yaml_set_map, 0,
      ngx_http_helix_yaml_pricing },
    ngx_helix_key_null
};


ngx_int_t
ngx_http_helix_yaml_defaults(ngx_pool_t *pool,
    ngx_http_helix_main_conf_t *hmcf)
{
    ngx_uint_t                      i;
    ngx_http_helix_cache_policy_t  *p;

    static ngx_http_helix_cache_policy_t  policies[] = {
        { ngx_string("completions"), 30 * 60 * 1000, 5000, 0, 0 },
        { ngx_string("embeddings"), 24 * 60 * 60 * 1000, 50000, 0, 0 },
        { ngx_string("debates"), 60 * 60 * 1000, 1000, 0, 0 }
    };

    if (ngx_array_init(&hmcf->cache.policies, pool, 4,
                       sizeof(ngx_http_helix_cache_policy_t))
        != NGX_OK
        || ngx_array_init(&hmcf->cache.warming_queries, pool, 4,
                          sizeof(ngx_http_helix_warm_query_t))
           != NGX_OK
        || ngx_array_init(&hmcf->providers, pool, 4,
                          sizeof(ngx_http_helix_provider_t))
           != NGX_OK
        || ngx_array_init(&hmcf->metrics, pool, 4, sizeof(ngx_str_t))
           != NGX_OK
        || ngx_array_init(&hmcf->alerts, pool, 4,
                          sizeof(ngx_http_helix_alert_t))
           != NGX_OK
        || ngx_array_init(&hmcf->api_keys, pool, 4,
                          sizeof(ngx_http_helix_api_key_t))
           != NGX_OK
        || ngx_array_init(&hmcf->prices, pool, 4,
                          sizeof(ngx_http_helix_price_t))
           != NGX_OK
        || ngx_array_init(&hmcf->tenants, pool, 4,
                          sizeof(ngx_http_helix_tenant_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
        p = ngx_array_push(&hmcf->cache.policies);
        if (p == NULL) {
            return NGX_ERROR;
        }

        *p = policies[i];
    }

    /* the guide's values, where the guide gives one */

    hmcf->cache.enabled = 1;
    hmcf->cache.l1_enabled = 1;
    hmcf->cache.l1_max_size = 10000;
    hmcf->cache.l1_ttl = 5 * 60 * 1000;
    ngx_str_set(&hmcf->cache.l1_eviction, "lru");
    hmcf->cache.l2_enabled = 0;
    hmcf->cache.warming_enabled = 0;
    hmcf->cache.warming_on_startup = 1;

    ngx_str_set(&hmcf->redis.host, "127.0.0.1");
    hmcf->redis.port = 6379;
    hmcf->redis.pool_size = 20;
    hmcf->redis.min_idle = 0;
    hmcf->redis.max_retries = 3;
    hmcf->redis.timeout = 5000;
    hmcf->redis.idle_timeout = 5 * 60 * 1000;
    hmcf->redis.breaker_failures = 3;
    hmcf->redis.breaker_backoff = 1000;
    hmcf->redis.breaker_max_backoff = 30 * 1000;

    ngx_str_set(&hmcf->database.host, "127.0.0.1");
    hmcf->database.port = 5432;
    ngx_str_set(&hmcf->database.name, "helixagent");
    ngx_str_set(&hmcf->database.user, "postgres");
    ngx_str_set(&hmcf->database.sslmode, "prefer");
    hmcf->database.max_open = 50;
    hmcf->database.max_idle = 10;
    hmcf->database.max_lifetime = 60 * 60 * 1000;
    hmcf->database.max_idle_time = 15 * 60 * 1000;
    hmcf->database.health_check = 30 * 1000;
    hmcf->database.slow_query_log = 1;
    hmcf->database.slow_query_threshold = 100;
    hmcf->database.statement_cache = 1000;
    hmcf->database.prepared_statements = 1;
    hmcf->database.log_enabled = 1;
    hmcf->database.log_buffer = 4 * 1024 * 1024;
    hmcf->database.log_batch = 500;
    hmcf->database.log_flush = 200;
    hmcf->database.breaker_failures = 3;
    hmcf->database.breaker_backoff = 1000;
    hmcf->database.breaker_max_backoff = 30 * 1000;

    hmcf->tasks.enabled = 1;
    hmcf->tasks.concurrency = 4;
    hmcf->tasks.lease = 60 * 1000;
    hmcf->tasks.poll_interval = 5 * 1000;
    hmcf->tasks.max_attempts = 3;
    hmcf->tasks.timeout = 300 * 1000;
    hmcf->tasks.callback_retries = 5;
    hmcf->tasks.callback_backoff = 1000;
    hmcf->tasks.callback_timeout = 10 * 1000;
    hmcf->tasks.callback_max_answer = 64 * 1024;
    hmcf->tasks.callback_concurrency = 16;
    hmcf->tasks.max_payload = 1024 * 1024;
    hmcf->tasks.max_pending = 100;
    hmcf->tasks.max_priority = 10;
    hmcf->tasks.retention = (ngx_msec_t) 7 * 24 * 60 * 60 * 1000;
    hmcf->tasks.purge_interval = 10 * 60 * 1000;
    hmcf->tasks.purge_batch = 1000;

    hmcf->http_client.max_connections = 100;
    hmcf->http_client.max_idle_connections = 20;
    hmcf->http_client.idle_timeout = 90 * 1000;
    hmcf->http_client.timeout = 30 * 1000;
    hmcf->http_client.keep_alive = 1;

    /* 0 means "no limit" for every concurrency figure */
    hmcf->parallel_enabled = 1;
    hmcf->parallel_max_concurrent = 0;
    hmcf->parallel_per_provider = 0;
    hmcf->parallel_queue_size = 1024;
    hmcf->parallel_queue_timeout = 30 * 1000;

    hmcf->breaker.failure_threshold = 5;
    hmcf->breaker.failure_ratio = 50;
    hmcf->breaker.min_requests = 10;
    hmcf->breaker.window = 60 * 1000;
    hmcf->breaker.cooldown = 30 * 1000;
    hmcf->breaker.half_open_requests = 1;

    hmcf->ensemble_parallel = 1;
    hmcf->ensemble_max_providers = 3;
    hmcf->ensemble_timeout = 30 * 1000;
    hmcf->ensemble_fail_fast = 0;
    ngx_str_set(&hmcf->ensemble_strategy, "majority");

    hmcf->debate_max_rounds = 5;
    hmcf->debate_max_participants = 5;
    hmcf->debate_timeout = 60 * 1000;
    hmcf->debate_fail_fast = 0;

    hmcf->streaming_enabled = 1;
    hmcf->streaming_buffer_size = 4096;
    hmcf->streaming_flush_interval = 100;
    ngx_str_set(&hmcf->streaming_compression, "none");

    hmcf->max_request_body = 10 * 1024 * 1024;
    hmcf->max_response_body = 50 * 1024 * 1024;
    hmcf->max_prompt_tokens = 100000;
    hmcf->worker_threads = 50;

    hmcf->timeout_read = 30 * 1000;
    hmcf->timeout_write = 60 * 1000;
    hmcf->timeout_idle = 120 * 1000;
    hmcf->timeout_provider = 60 * 1000;
    hmcf->timeout_provider_streaming = 300 * 1000;
    hmcf->timeout_database = 10 * 1000;
    hmcf->timeout_cache = 5 * 1000;

    hmcf->metrics_enabled = 1;

    hmcf->auth_enabled = 0;
    hmcf->limit_window = 60 * 1000;
    hmcf->limit_max_tokens = 1024;
    hmcf->limit_global = 1;

    ngx_str_set(&hmcf->currency, "USD");

    hmcf->batch_max_requests = 100;
    hmcf->batch_max_concurrent = 10;
    hmcf->batch_max_texts = 2048;

    return NGX_OK;
}


char *
ngx_http_helix_yaml_load(ngx_conf_t *cf, ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *file)
{
    FILE                       *fp;
    ngx_int_t                   rc;
    yaml_node_t                *root;
    yaml_parser_t               parser;
    yaml_document_t             doc;
    ngx_http_helix_yaml_ctx_t   ctx;

    fp = fopen((char *) file->data, "rb");
    if (fp == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "helix_config: cannot open \"%V\"", file);
        return NGX_CONF_ERROR;
    }

    if (!yaml_parser_initialize(&parser)) {
        fclose(fp);
        return NGX_CONF_ERROR;
    }

    yaml_parser_set_input_file(&parser, fp);

    if (!yaml_parser_load(&parser, &doc)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V:%uz:%uz: YAML syntax error: %s%s%s",
                           file, (size_t) parser.problem_mark.line + 1,
                           (size_t) parser.problem_mark.column + 1,
                           parser.problem ? parser.problem : "unknown",
                           parser.context ? " " : "",
                           parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        fclose(fp);
        return NGX_CONF_ERROR;
    }

    yaml_parser_delete(&parser);
    fclose(fp);

    ngx_memzero(&ctx, sizeof(ngx_http_helix_yaml_ctx_t));
    ctx.cf = cf;
    ctx.file = file;
    ctx.doc = &doc;

    root = yaml_document_get_root_node(&doc);

    if (root == NULL || ngx_http_helix_yaml_is_null(root)) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "%V is empty, using the defaults", file);
        rc = NGX_OK;

    } else {
        rc = ngx_http_helix_yaml_map(&ctx, root, hmcf,
                                     ngx_http_helix_yaml_root);
        if (rc == NGX_OK) {
            rc = ngx_http_helix_yaml_validate(&ctx, hmcf);
        }
    }

    yaml_document_delete(&doc);

    return rc == NGX_OK ? NGX_CONF_OK : NGX_CONF_ERROR;
}


static void
ngx_http_helix_yaml_log(ngx_http_helix_yaml_ctx_t *ctx, ngx_uint_t level,
    yaml_node_t *node, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    ngx_http_helix_yaml_vlog(ctx, level,
                             node ? node->start_mark.line + 1 : 0, fmt, args);
    va_end(args);
}


static void
ngx_http_helix_yaml_log_line(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_uint_t level, ngx_uint_t line, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    ngx_http_helix_yaml_vlog(ctx, level, line, fmt, args);
    va_end(args);
}


/* "helix.yaml:12: cache.l1.ttl: invalid duration ..." */

static void
ngx_http_helix_yaml_vlog(ngx_http_helix_yaml_ctx_t *ctx, ngx_uint_t level,
    ngx_uint_t line, const char *fmt, va_list args)
{
    u_char  *p, *last;
    u_char   msg[NGX_MAX_CONF_ERRSTR];

    last = msg + NGX_MAX_CONF_ERRSTR;

    if (line) {
        p = ngx_slprintf(msg, last, "%V:%ui: ", ctx->file, line);
    } else {
        p = ngx_slprintf(msg, last, "%V: ", ctx->file);
    }

    if (ctx->path_len) {
        p = ngx_slprintf(p, last, "%*s: ", ctx->path_len, ctx->path);
    }

    p = ngx_vslprintf(p, last, fmt, args);

    ngx_conf_log_error(level, ctx->cf, 0, "%*s", p - msg, msg);
}


static size_t
ngx_http_helix_yaml_push(ngx_http_helix_yaml_ctx_t *ctx, ngx_str_t *name,
    ngx_uint_t index)
{
    u_char  *p, *last;
    size_t   old;

    old = ctx->path_len;
    p = ctx->path + old;
    last = ctx->path + NGX_HTTP_HELIX_YAML_PATH;

    if (name) {
        p = ngx_slprintf(p, last, old ? ".%V" : "%V", name);

    } else {
        p = ngx_slprintf(p, last, "[%ui]", index);
    }

    ctx->path_len = p - ctx->path;

    return old;
}


static ngx_int_t
ngx_http_helix_yaml_is_null(yaml_node_t *node)
{
    u_char  *v;
    size_t   len;

    if (node->type != YAML_SCALAR_NODE
        || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    {
        return 0;
    }

    v = node->data.scalar.value;
    len = node->data.scalar.length;

    return len == 0
           || (len == 1 && v[0] == '~')
           || (len == 4 && ngx_strncasecmp(v, (u_char *) "null", 4) == 0);
}


static const char *
ngx_http_helix_yaml_type_name(yaml_node_t *node)
{
    switch (node->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    default:
        return "a single value";
    }
}


static ngx_int_t
ngx_http_helix_yaml_map(ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node,
    void *base, const ngx_http_helix_yaml_key_t *table)
{
    u_char                           *p, *last;
    size_t                            old;
    ngx_str_t                         name;
    yaml_node_t                      *k, *v, *k2;
    yaml_node_pair_t                 *pair, *prev;
    const ngx_http_helix_yaml_key_t  *key;
    u_char                            known[512];

    if (ngx_http_helix_yaml_is_null(node)) {
        return NGX_OK;
    }

    if (node->type != YAML_MAPPING_NODE) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a mapping of keys, got %s",
                                ngx_http_helix_yaml_type_name(node));
        return NGX_ERROR;
    }

    for (pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top;
         pair++)
    {
        k = yaml_document_get_node(ctx->doc, pair->key);
        v = yaml_document_get_node(ctx->doc, pair->value);

        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE) {
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, k,
                                    "keys must be plain names");
            return NGX_ERROR;
        }

        name.data = k->data.scalar.value;
        name.len = k->data.scalar.length;

        for (prev = node->data.mapping.pairs.start; prev < pair; prev++) {
            k2 = yaml_document_get_node(ctx->doc, prev->key);

            if (k2->type == YAML_SCALAR_NODE
                && k2->data.scalar.length == name.len
                && ngx_strncmp(k2->data.scalar.value, name.data, name.len)
                   == 0)
            {
                ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, k,
                                        "duplicate key \"%V\" (first at "
                                        "line %uz)", &name,
                                        (size_t) k2->start_mark.line + 1);
                return NGX_ERROR;
            }
        }

        for (key = table; key->name.len; key++) {
            if (key->name.len == name.len
                && ngx_strncmp(key->name.data, name.data, name.len) == 0)
            {
                break;
            }
        }

        if (key->name.len == 0) {
            p = known;
            last = known + sizeof(known);

            for (key = table; key->name.len; key++) {
                p = ngx_slprintf(p, last, "%s%V", p == known ? "" : ", ",
                                 &key->name);
            }

            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, k,
                                    "unknown key \"%V\" (known keys here: "
                                    "%*s)", &name, p - known, known);
            return NGX_ERROR;
        }

        old = ngx_http_helix_yaml_push(ctx, &name, 0);

        if (key->set(ctx, v, base, key) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->path_len = old;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_scalar(ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node,
    ngx_str_t *value)
{
    if (node->type != YAML_SCALAR_NODE) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a single value, got %s",
                                ngx_http_helix_yaml_type_name(node));
        return NGX_ERROR;
    }

    return ngx_http_helix_yaml_expand(ctx, node, node->data.scalar.value,
                                      node->data.scalar.length, value);
}


/*
 * "${VAR}" and "${VAR:-default}" come from the environment of the process
 * that reads the configuration (the master), as in the guide.
 */

static ngx_int_t
ngx_http_helix_yaml_expand(ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node,
    u_char *p, size_t len, ngx_str_t *value)
{
    u_char     *s, *end, *close, *colon, *d;
    size_t      size, nlen;
    char       *env;
    ngx_str_t   dflt;
    u_char      name[128];

    end = p + len;
    size = 0;

    /* two passes: measure, then copy */

    for (d = NULL; /* void */; d = value->data) {

        for (s = p; s < end; /* void */) {

            if (s + 1 < end && s[0] == '$' && s[1] == '{') {
                close = ngx_strlchr(s + 2, end, '}');

                if (close == NULL) {
                    ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                            "unterminated \"${\" in \"%*s\"",
                                            len, p);
                    return NGX_ERROR;
                }

                colon = ngx_strlchr(s + 2, close, ':');
                nlen = (colon ? colon : close) - (s + 2);

                if (nlen == 0 || nlen >= sizeof(name)
                    || (colon && (colon + 1 == close || colon[1] != '-')))
                {
                    ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                            "bad variable \"%*s\", write "
                                            "${NAME} or ${NAME:-default}",
                                            close - s + 1, s);
                    return NGX_ERROR;
                }

                ngx_memcpy(name, s + 2, nlen);
                name[nlen] = '\0';
                env = getenv((char *) name);

                if (env == NULL) {
                    if (colon == NULL) {
                        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                     "environment variable \"%s\" is not "
                                     "set (export it before starting nginx,"
                                     " or write ${%s:-default})",
                                     name, name);
                        return NGX_ERROR;
                    }

                    dflt.data = colon + 2;
                    dflt.len = close - dflt.data;

                } else {
                    dflt.data = (u_char *) env;
                    dflt.len = ngx_strlen(env);
                }

                if (d) {
                    d = ngx_cpymem(d, dflt.data, dflt.len);
                } else {
                    size += dflt.len;
                }

                s = close + 1;
                continue;
            }

            if (d) {
                *d++ = *s;
            } else {
                size++;
            }

            s++;
        }

        if (d) {
            *d = '\0';
            value->len = d - value->data;
            return NGX_OK;
        }

        value->data = ngx_pnalloc(ctx->cf->pool, size + 1);
        if (value->data == NULL) {
            return NGX_ERROR;
        }
    }
}


static ngx_int_t
ngx_http_helix_yaml_set_map(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    return ngx_http_helix_yaml_map(ctx, node, (u_char *) base + key->offset,
                                   key->post);
}


/* a block whose presence switches a feature on: "redis:", "database:" */

static ngx_int_t
ngx_http_helix_yaml_set_block(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    *(ngx_flag_t *) ((u_char *) base + key->offset) = 1;

    return ngx_http_helix_yaml_map(ctx, node, base, key->post);
}


static ngx_int_t
ngx_http_helix_yaml_set_l2(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_http_helix_main_conf_t  *hmcf = base;

    /* "l2:" present means L2 on unless it says "enabled: false" */
    hmcf->cache.l2_enabled = 1;

    if (ngx_http_helix_yaml_map(ctx, node, base, key->post) != NGX_OK) {
        return NGX_ERROR;
    }

    if (hmcf->cache.l2_enabled) {
        hmcf->redis.configured = 1;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_flag(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_str_t    v;
    ngx_flag_t  *fp;

    if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK) {
        return NGX_ERROR;
    }

    fp = (ngx_flag_t *) ((u_char *) base + key->offset);

    if ((v.len == 4 && ngx_strncasecmp(v.data, (u_char *) "true", 4) == 0)
        || (v.len == 3 && ngx_strncasecmp(v.data, (u_char *) "yes", 3) == 0)
        || (v.len == 2 && ngx_strncasecmp(v.data, (u_char *) "on", 2) == 0))
    {
        *fp = 1;
        return NGX_OK;
    }

    if ((v.len == 5 && ngx_strncasecmp(v.data, (u_char *) "false", 5) == 0)
        || (v.len == 2 && ngx_strncasecmp(v.data, (u_char *) "no", 2) == 0)
        || (v.len == 3 && ngx_strncasecmp(v.data, (u_char *) "off", 3) == 0))
    {
        *fp = 0;
        return NGX_OK;
    }

    ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                            "expected true or false, got \"%V\"", &v);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_helix_yaml_number(ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node,
    ngx_str_t *v, const char *what)
{
    if (v->len == 0) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "missing value, expected %s", what);
        return NGX_ERROR;
    }

    if (v->data[0] == '-') {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "must not be negative, got \"%V\"", v);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_uint(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_int_t   n;
    ngx_str_t   v;

    if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK
        || ngx_http_helix_yaml_number(ctx, node, &v, "a whole number")
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    n = ngx_atoi(v.data, v.len);
    if (n == NGX_ERROR) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a whole number, got \"%V\"", &v);
        return NGX_ERROR;
    }

    *(ngx_uint_t *) ((u_char *) base + key->offset) = (ngx_uint_t) n;

    return NGX_OK;
}


/* a whole number from 1 to the bound "post" points to */

static ngx_int_t
ngx_http_helix_yaml_set_count(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_uint_t  n, max;

    if (ngx_http_helix_yaml_set_uint(ctx, node, base, key) != NGX_OK) {
        return NGX_ERROR;
    }

    n = *(ngx_uint_t *) ((u_char *) base + key->offset);
    max = *(const ngx_uint_t *) key->post;

    if (n < 1 || n > max) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "must be from 1 to %ui, got %ui", max, n);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* "0.5" or "50%" -> 50 */

static ngx_int_t
ngx_http_helix_yaml_set_percent(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_int_t   n;
    ngx_str_t   v;

    if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK
        || ngx_http_helix_yaml_number(ctx, node, &v, "a ratio") != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (v.data[v.len - 1] == '%') {
        n = ngx_atoi(v.data, v.len - 1);

    } else {
        n = ngx_atofp(v.data, v.len, 2);
    }

    if (n == NGX_ERROR || n > 100) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a ratio between 0 and 1 (or a "
                                "percentage like \"50%%\"), got \"%V\"", &v);
        return NGX_ERROR;
    }

    *(ngx_uint_t *) ((u_char *) base + key->offset) = (ngx_uint_t) n;

    return NGX_OK;
}


/* Go-style durations: "100ms", "5m", "1h30m", "1.5s", "24h", "7d", "0" */

ngx_int_t
ngx_http_helix_parse_duration(u_char *p, size_t len, ngx_msec_t *ms)
{
    u_char    *end;
    uint64_t   total, n, frac, scale, unit;

    end = p + len;
    total = 0;

    if (len == 1 && p[0] == '0') {
        *ms = 0;
        return NGX_OK;
    }

    if (len == 0) {
        return NGX_ERROR;
    }

    while (p < end) {
        if (*p < '0' || *p > '9') {
            return NGX_ERROR;
        }

        for (n = 0; p < end && *p >= '0' && *p <= '9'; p++) {
            n = n * 10 + (*p - '0');
            if (n > 1000000000) {
                return NGX_ERROR;
            }
        }

        frac = 0;
        scale = 1;

        if (p < end && *p == '.') {
            for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
                if (scale < 1000) {
                    frac = frac * 10 + (*p - '0');
                    scale *= 10;
                }
            }
        }

        if (p + 1 < end && p[0] == 'm' && p[1] == 's') {
            unit = 1;
            p += 2;

        } else if (p < end && *p == 's') {
            unit = 1000;
            p++;

        } else if (p < end && *p == 'm') {
            unit = 60 * 1000;
            p++;

        } else if (p < end && *p == 'h') {
            unit = 60 * 60 * 1000;
            p++;

        } else if (p < end && *p == 'd') {
            unit = 24 * 60 * 60 * 1000;
            p++;

        } else {
            return NGX_ERROR;
        }

        total += n * unit + frac * unit / scale;

        if (total > NGX_MAX_INT32_VALUE) {
            return NGX_ERROR;
        }
    }

    *ms = (ngx_msec_t) total;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_msec(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_str_t    v;
    ngx_msec_t   ms;

    if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK
        || ngx_http_helix_yaml_number(ctx, node, &v, "a duration") != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_helix_parse_duration(v.data, v.len, &ms) != NGX_OK) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "invalid duration \"%V\" (write a number "
                                "with a unit: ms, s, m, h or d, e.g. "
                                "\"100ms\", \"5m\", \"1h30m\")", &v);
        return NGX_ERROR;
    }

    *(ngx_msec_t *) ((u_char *) base + key->offset) = ms;

    return NGX_OK;
}


/* sizes: "4096", "512k", "10MB", "4G", "1GiB"; units are powers of 1024 */

ngx_int_t
ngx_http_helix_parse_size(u_char *p, size_t len, size_t *size)
{
    u_char    *end, c;
    uint64_t   n, frac, scale, unit;

    end = p + len;
    n = 0;
    frac = 0;
    scale = 1;

    if (len == 0 || *p < '0' || *p > '9') {
        return NGX_ERROR;
    }

    for ( /* void */ ; p < end && *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');
        if (n > ((uint64_t) 1 << 40)) {
            return NGX_ERROR;
        }
    }

    if (p < end && *p == '.') {
        for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
            if (scale < 1000) {
                frac = frac * 10 + (*p - '0');
                scale *= 10;
            }
        }
    }

    while (p < end && *p == ' ') {
        p++;
    }

    unit = 1;

    if (p < end) {
        c = ngx_tolower(*p);

        switch (c) {
        case 'b':
            break;
        case 'k':
            unit = 1024;
            break;
        case 'm':
            unit = 1024 * 1024;
            break;
        case 'g':
            unit = 1024 * 1024 * 1024;
            break;
        case 't':
            unit = (uint64_t) 1024 * 1024 * 1024 * 1024;
            break;
        default:
            return NGX_ERROR;
        }

        p++;

        if (c != 'b') {
            if (p < end && (*p == 'i' || *p == 'I')) {
                p++;
                if (p == end) {
                    return NGX_ERROR;
                }
            }

            if (p < end && (*p == 'b' || *p == 'B')) {
                p++;
            }
        }

        if (p != end) {
            return NGX_ERROR;
        }
    }

    n = n * unit + frac * unit / scale;

    if (n > (uint64_t) NGX_MAX_SIZE_T_VALUE / 2) {
        return NGX_ERROR;
    }

    *size = (size_t) n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_size(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    size_t     size;
    ngx_str_t  v;

    if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK
        || ngx_http_helix_yaml_number(ctx, node, &v, "a size") != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_helix_parse_size(v.data, v.len, &size) != NGX_OK) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "invalid size \"%V\" (write bytes or a "
                                "number with K, M, G or T, e.g. \"4096\", "
                                "\"10MB\", \"4G\")", &v);
        return NGX_ERROR;
    }

    *(size_t *) ((u_char *) base + key->offset) = size;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_str(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    return ngx_http_helix_yaml_scalar(ctx, node,
                             (ngx_str_t *) ((u_char *) base + key->offset));
}


static ngx_int_t
ngx_http_helix_yaml_set_enum(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    u_char                            *p, *last;
    ngx_str_t                          v;
    const ngx_http_helix_yaml_enum_t  *e;
    u_char                             known[256];

    if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK) {
        return NGX_ERROR;
    }

    for (e = key->post; e->name.len; e++) {
        if (e->name.len == v.len
            && ngx_strncasecmp(e->name.data, v.data, v.len) == 0)
        {
            *(ngx_uint_t *) ((u_char *) base + key->offset) = e->value;
            return NGX_OK;
        }
    }

    p = known;
    last = known + sizeof(known);

    for (e = key->post; e->name.len; e++) {
        p = ngx_slprintf(p, last, "%s%V", p == known ? "" : ", ", &e->name);
    }

    ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                            "unknown value \"%V\" (expected one of: %*s)",
                            &v, p - known, known);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_helix_yaml_set_str_list(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    size_t         old;
    ngx_str_t         *s;
    ngx_array_t       *a;
    yaml_node_t       *item;
    yaml_node_item_t  *i;

    if (node->type != YAML_SEQUENCE_NODE) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a list, got %s (write "
                                "[\"a\", \"b\"] or one \"- item\" per line)",
                                ngx_http_helix_yaml_type_name(node));
        return NGX_ERROR;
    }

    a = (ngx_array_t *) ((u_char *) base + key->offset);

    /* arrays inside list items come zeroed from ngx_pcalloc() */

    if (a->elts == NULL
        && ngx_array_init(a, ctx->cf->pool, 4, sizeof(ngx_str_t)) != NGX_OK)
    {
        return NGX_ERROR;
    }

    a->nelts = 0;

    for (i = node->data.sequence.items.start;
         i < node->data.sequence.items.top;
         i++)
    {
        item = yaml_document_get_node(ctx->doc, *i);

        old = ngx_http_helix_yaml_push(ctx, NULL,
                                   i - node->data.sequence.items.start);

        s = ngx_array_push(a);
        if (s == NULL || ngx_http_helix_yaml_scalar(ctx, item, s) != NGX_OK) {
            return NGX_ERROR;
        }

        if (s->len == 0) {
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, item,
                                    "empty list item");
            return NGX_ERROR;
        }

        ctx->path_len = old;
    }

    return NGX_OK;
}


/*
 * Networks as CIDRs ("10.0.0.0/8", "fd00::/8", an address alone): a list,
 * or one value of them separated by commas or spaces, so that a single
 * ${VAR} can give them; empty is none.
 */

static ngx_int_t
ngx_http_helix_yaml_cidr(ngx_http_helix_yaml_ctx_t *ctx, yaml_node_t *node,
    ngx_str_t *v, ngx_array_t *a)
{
    u_char      *p, *last;
    ngx_str_t    one;
    ngx_cidr_t  *cidr;

    last = v->data + v->len;

    for (p = v->data; p < last; /* void */) {

        if (*p == ',' || *p == ' ' || *p == '\t') {
            p++;
            continue;
        }

        one.data = p;

        while (p < last && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }

        one.len = p - one.data;

        cidr = ngx_array_push(a);
        if (cidr == NULL) {
            return NGX_ERROR;
        }

        switch (ngx_ptocidr(&one, cidr)) {

        case NGX_OK:
            break;

        case NGX_DONE:
            ngx_http_helix_yaml_log(ctx, NGX_LOG_WARN, node,
                                    "low address bits of \"%V\" are "
                                    "meaningless", &one);
            break;

        default:
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                    "invalid network \"%V\" (write an "
                                    "address with a prefix length, e.g. "
                                    "\"10.0.0.0/8\" or \"fd00::/8\")",
                                    &one);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_cidr_list(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    size_t              old;
    ngx_str_t           v;
    ngx_array_t        *a;
    yaml_node_t        *item;
    yaml_node_item_t   *i;

    a = ngx_array_create(ctx->cf->pool, 4, sizeof(ngx_cidr_t));
    if (a == NULL) {
        return NGX_ERROR;
    }

    if (node->type != YAML_SEQUENCE_NODE) {
        if (ngx_http_helix_yaml_is_null(node)) {
            ngx_str_null(&v);

        } else if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ngx_http_helix_yaml_cidr(ctx, node, &v, a) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        for (i = node->data.sequence.items.start;
             i < node->data.sequence.items.top;
             i++)
        {
            item = yaml_document_get_node(ctx->doc, *i);

            old = ngx_http_helix_yaml_push(ctx, NULL,
                                       i - node->data.sequence.items.start);

            if (ngx_http_helix_yaml_scalar(ctx, item, &v) != NGX_OK
                || ngx_http_helix_yaml_cidr(ctx, item, &v, a) != NGX_OK)
            {
                return NGX_ERROR;
            }

            ctx->path_len = old;
        }
    }

    *(ngx_array_t **) ((u_char *) base + key->offset) = a->nelts ? a : NULL;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_notice(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_str_t  v;

    if (key->offset) {
        /* a server timeout: a valid duration, kept, with the nginx hint */
        if (ngx_http_helix_yaml_set_msec(ctx, node, base, key) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_helix_yaml_log(ctx, NGX_LOG_NOTICE, node, "accepted, but %s",
                            key->post);

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_gone(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node, "%s",
                            (const char *) key->post);
    return NGX_ERROR;
}


/* an API key or the admin token: long enough not to be guessed */

static ngx_int_t
ngx_http_helix_yaml_set_secret(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_str_t  *v;

    v = (ngx_str_t *) ((u_char *) base + key->offset);

    if (ngx_http_helix_yaml_scalar(ctx, node, v) != NGX_OK) {
        return NGX_ERROR;
    }

    /* an empty one is refused later, or means none */

    if (v->len && v->len < NGX_HTTP_HELIX_SECRET_MIN_LEN) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "too short: %uz characters, a secret needs "
                                "at least %d (make one with \"openssl rand "
                                "-hex 24\")", v->len,
                                NGX_HTTP_HELIX_SECRET_MIN_LEN);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * redis.sentinel.nodes, database.hosts: ["10.0.0.5:26379", "sentinel-b",
 * "[::1]:26380"]; without a port, the list's default (when resolved)
 */

static ngx_int_t
ngx_http_helix_yaml_set_nodes(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    size_t                        old;
    ngx_url_t                     u;
    ngx_str_t                     v;
    ngx_array_t                  *a;
    yaml_node_t                  *item;
    yaml_node_item_t             *i;
    ngx_http_helix_node_t  *n;

    if (node->type != YAML_SEQUENCE_NODE) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a list of \"host:port\", got %s",
                                ngx_http_helix_yaml_type_name(node));
        return NGX_ERROR;
    }

    a = (ngx_array_t *) ((u_char *) base + key->offset);

    if (ngx_array_init(a, ctx->cf->pool, 3,
                       sizeof(ngx_http_helix_node_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = node->data.sequence.items.start;
         i < node->data.sequence.items.top;
         i++)
    {
        item = yaml_document_get_node(ctx->doc, *i);

        old = ngx_http_helix_yaml_push(ctx, NULL,
                                       i - node->data.sequence.items.start);

        if (ngx_http_helix_yaml_scalar(ctx, item, &v) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));
        u.url = v;
        u.no_resolve = 1;

        if (v.len == 0 || ngx_parse_url(ctx->cf->pool, &u) != NGX_OK
            || u.host.len == 0 || u.uri.len || u.family == AF_UNIX)
        {
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, item,
                                    "invalid server \"%V\" (write "
                                    "\"host\" or \"host:port\")", &v);
            return NGX_ERROR;
        }

        n = ngx_array_push(a);
        if (n == NULL) {
            return NGX_ERROR;
        }

        n->name = v;
        n->port = u.no_port ? 0 : u.port;
        n->addr.len = 0;
        n->addr.data = NULL;

        /* a C string, for the lookup and the logs */
        n->host.len = u.host.len;
        n->host.data = ngx_pnalloc(ctx->cf->pool, u.host.len + 1);
        if (n->host.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(n->host.data, u.host.data, u.host.len);
        n->host.data[n->host.len] = '\0';

        ctx->path_len = old;
    }

    return NGX_OK;
}


/* "redis:6379", "10.0.0.5", "[::1]:6380" */

static ngx_int_t
ngx_http_helix_yaml_set_host(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    u_char                       *colon, *last;
    ngx_int_t                     port;
    ngx_str_t                     v;
    ngx_http_helix_redis_conf_t  *rc;

    rc = (ngx_http_helix_redis_conf_t *) ((u_char *) base + key->offset);

    if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK) {
        return NGX_ERROR;
    }

    if (v.len == 0) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "missing host name");
        return NGX_ERROR;
    }

    last = v.data + v.len;

    if (v.data[0] == '[') {
        colon = ngx_strlchr(v.data, last, ']');
        if (colon == NULL) {
            goto invalid;
        }

        rc->host.data = v.data + 1;
        rc->host.len = colon - v.data - 1;
        colon = (colon + 1 < last && colon[1] == ':') ? colon + 1 : NULL;

    } else {
        colon = ngx_strlchr(v.data, last, ':');
        rc->host.data = v.data;
        rc->host.len = colon ? (size_t) (colon - v.data) : v.len;
    }

    if (colon) {
        port = ngx_atoi(colon + 1, last - colon - 1);
        if (port < 1 || port > 65535) {
            goto invalid;
        }

        rc->port = port;
    }

    if (rc->host.len == 0) {
        goto invalid;
    }

    /* hiredis wants a C string */
    rc->host.data[rc->host.len] = '\0';

    return NGX_OK;

invalid:

    ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                            "invalid host \"%V\" (write \"host\" or "
                            "\"host:port\")", &v);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_helix_yaml_name_ok(ngx_str_t *name)
{
    size_t  i;

    if (name->len == 0 || name->len > 64) {
        return 0;
    }

    for (i = 0; i < name->len; i++) {
        if (!(isalnum(name->data[i]) || name->data[i] == '_'
              || name->data[i] == '-' || name->data[i] == '.'))
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_helix_yaml_set_policies(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    size_t                          old;
    ngx_str_t                       name;
    ngx_uint_t                      i;
    yaml_node_t                    *k, *v;
    yaml_node_pair_t               *pair;
    ngx_http_helix_main_conf_t     *hmcf = base;
    ngx_http_helix_cache_policy_t  *p;

    if (ngx_http_helix_yaml_is_null(node)) {
        return NGX_OK;
    }

    if (node->type != YAML_MAPPING_NODE) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a mapping of policy names, got %s",
                                ngx_http_helix_yaml_type_name(node));
        return NGX_ERROR;
    }

    for (pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top;
         pair++)
    {
        k = yaml_document_get_node(ctx->doc, pair->key);
        v = yaml_document_get_node(ctx->doc, pair->value);

        name.data = k->data.scalar.value;
        name.len = k->type == YAML_SCALAR_NODE ? k->data.scalar.length : 0;

        if (!ngx_http_helix_yaml_name_ok(&name)) {
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, k,
                                    "invalid policy name (use letters, "
                                    "digits, \"_\" and \"-\")");
            return NGX_ERROR;
        }

        p = hmcf->cache.policies.elts;

        for (i = 0; i < hmcf->cache.policies.nelts; i++) {
            if (p[i].name.len == name.len
                && ngx_strncmp(p[i].name.data, name.data, name.len) == 0)
            {
                break;
            }
        }

        if (i == hmcf->cache.policies.nelts) {
            p = ngx_array_push(&hmcf->cache.policies);
            if (p == NULL) {
                return NGX_ERROR;
            }

            ngx_memzero(p, sizeof(ngx_http_helix_cache_policy_t));

            p->name.data = ngx_pstrdup(ctx->cf->pool, &name);
            if (p->name.data == NULL) {
                return NGX_ERROR;
            }

            p->name.len = name.len;
            p->ttl = NGX_CONF_UNSET_MSEC;
            p->max_size = NGX_CONF_UNSET_UINT;

        } else {
            p = &p[i];
        }

        old = ngx_http_helix_yaml_push(ctx, &name, 0);

        if (ngx_http_helix_yaml_map(ctx, v, p, ngx_http_helix_yaml_policy)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->path_len = old;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_providers(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    size_t                       old;
    ngx_str_t                    name;
    ngx_uint_t                   i;
    yaml_node_t                 *k, *v;
    yaml_node_pair_t            *pair;
    ngx_http_helix_provider_t   *p;
    ngx_http_helix_main_conf_t  *hmcf = base;

    if (ngx_http_helix_yaml_is_null(node)) {
        return NGX_OK;
    }

    if (node->type != YAML_MAPPING_NODE) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a mapping of provider names, "
                                "got %s",
                                ngx_http_helix_yaml_type_name(node));
        return NGX_ERROR;
    }

    for (pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top;
         pair++)
    {
        k = yaml_document_get_node(ctx->doc, pair->key);
        v = yaml_document_get_node(ctx->doc, pair->value);

        name.data = k->data.scalar.value;
        name.len = k->type == YAML_SCALAR_NODE ? k->data.scalar.length : 0;

        old = ngx_http_helix_yaml_push(ctx, &name, 0);

        if (name.len == 8 && ngx_strncmp(name.data, "parallel", 8) == 0) {
            if (ngx_http_helix_yaml_map(ctx, v, hmcf,
                                        ngx_http_helix_yaml_parallel)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            ctx->path_len = old;
            continue;
        }

        if (name.len == 15
            && ngx_strncmp(name.data, "circuit_breaker", 15) == 0)
        {
            if (ngx_http_helix_yaml_map(ctx, v, &hmcf->breaker,
                                        ngx_http_helix_yaml_breaker)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            ctx->path_len = old;
            continue;
        }

        if (!ngx_http_helix_yaml_name_ok(&name)) {
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, k,
                                    "invalid provider name (use letters, "
                                    "digits, \".\", \"_\" and \"-\", at "
                                    "most 64)");
            return NGX_ERROR;
        }

        p = hmcf->providers.elts;

        for (i = 0; i < hmcf->providers.nelts; i++) {
            if (p[i].name.len == name.len
                && ngx_strncmp(p[i].name.data, name.data, name.len) == 0)
            {
                ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, k,
                                        "provider defined twice");
                return NGX_ERROR;
            }
        }

        p = ngx_array_push(&hmcf->providers);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(p, sizeof(ngx_http_helix_provider_t));

        p->name.data = ngx_pstrdup(ctx->cf->pool, &name);
        if (p->name.data == NULL) {
            return NGX_ERROR;
        }

        p->name.len = name.len;
        p->index = hmcf->providers.nelts - 1;
        p->type = NGX_CONF_UNSET_UINT;
        p->enabled = 1;
        p->timeout = NGX_CONF_UNSET_MSEC;
        p->weight = 1;
        p->line = k->start_mark.line + 1;
        p->breaker.failure_threshold = NGX_CONF_UNSET_UINT;
        p->breaker.failure_ratio = NGX_CONF_UNSET_UINT;
        p->breaker.min_requests = NGX_CONF_UNSET_UINT;
        p->breaker.window = NGX_CONF_UNSET_MSEC;
        p->breaker.cooldown = NGX_CONF_UNSET_MSEC;
        p->breaker.half_open_requests = NGX_CONF_UNSET_UINT;

        if (ngx_http_helix_yaml_map(ctx, v, p, ngx_http_helix_yaml_provider)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->path_len = old;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_set_seq(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    void                             *elt;
    size_t                            old;
    yaml_node_t                      *item;
    ngx_array_t                      *a;
    yaml_node_item_t                 *i;
    const ngx_http_helix_yaml_seq_t  *seq;

    if (ngx_http_helix_yaml_is_null(node)) {
        return NGX_OK;
    }

    if (node->type != YAML_SEQUENCE_NODE) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a list (one \"- ...\" per item), "
                                "got %s",
                                ngx_http_helix_yaml_type_name(node));
        return NGX_ERROR;
    }

    seq = key->post;
    a = (ngx_array_t *) ((u_char *) base + seq->array);

    for (i = node->data.sequence.items.start;
         i < node->data.sequence.items.top;
         i++)
    {
        item = yaml_document_get_node(ctx->doc, *i);

        old = ngx_http_helix_yaml_push(ctx, NULL,
                                   i - node->data.sequence.items.start);

        if (item->type != YAML_MAPPING_NODE) {
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, item,
                                    "expected a mapping of keys, got %s",
                                    ngx_http_helix_yaml_type_name(item));
            return NGX_ERROR;
        }

        elt = ngx_array_push(a);
        if (elt == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(elt, a->size);
        *(ngx_uint_t *) ((u_char *) elt + seq->line) =
                                                 item->start_mark.line + 1;

        if (ngx_http_helix_yaml_map(ctx, item, elt, seq->table) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->path_len = old;
    }

    return NGX_OK;
}


static const ngx_http_helix_yaml_key_t  ngx_http_helix_yaml_metrics[] = {
    ngx_helix_key("enabled", ngx_http_helix_yaml_set_flag, MC,
                  metrics_enabled, NULL),
    ngx_helix_key("names", ngx_http_helix_yaml_set_str_list, MC,
                  metrics, NULL),
    ngx_helix_key_null
};


/* the guide writes "metrics:" as a list of names; a mapping also works */

static ngx_int_t
ngx_http_helix_yaml_set_metrics(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_str_t                   *name;
    ngx_uint_t                   i;
    ngx_http_helix_main_conf_t  *hmcf = base;

    if (node->type == YAML_SEQUENCE_NODE) {
        if (ngx_http_helix_yaml_set_str_list(ctx, node, base,
                                             &ngx_http_helix_yaml_metrics[1])
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_http_helix_yaml_map(ctx, node, base,
                                       ngx_http_helix_yaml_metrics)
               != NGX_OK)
    {
        return NGX_ERROR;
    }

    name = hmcf->metrics.elts;

    for (i = 0; i < hmcf->metrics.nelts; i++) {
        if (name[i].len > 3 && ngx_strncmp(name[i].data, "go_", 3) == 0) {
            ngx_http_helix_yaml_log(ctx, NGX_LOG_NOTICE, node,
                                    "\"%V\" is a Go runtime metric and "
                                    "nginx has no Go runtime; the README "
                                    "lists the nginx equivalents",
                                    &name[i]);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_provider_infer_type(ngx_str_t *name)
{
    static const ngx_http_helix_yaml_enum_t  known[] = {
        { ngx_string("openai"), NGX_HTTP_HELIX_OPENAI },
        { ngx_string("deepseek"), NGX_HTTP_HELIX_OPENAI },
        { ngx_string("mistral"), NGX_HTTP_HELIX_OPENAI },
        { ngx_string("openrouter"), NGX_HTTP_HELIX_OPENAI },
        { ngx_string("ollama"), NGX_HTTP_HELIX_OPENAI },
        { ngx_string("vllm"), NGX_HTTP_HELIX_OPENAI },
        { ngx_string("anthropic"), NGX_HTTP_HELIX_ANTHROPIC },
        { ngx_string("claude"), NGX_HTTP_HELIX_ANTHROPIC },
        { ngx_string("gemini"), NGX_HTTP_HELIX_GEMINI },
        { ngx_string("google"), NGX_HTTP_HELIX_GEMINI },
        { ngx_null_string, 0 }
    };

    const ngx_http_helix_yaml_enum_t  *e;

    for (e = known; e->name.len; e++) {
        if (e->name.len == name->len
            && ngx_strncasecmp(e->name.data, name->data, name->len) == 0)
        {
            return e->value;
        }
    }

    return NGX_ERROR;
}


static void
ngx_http_helix_yaml_set_path(ngx_http_helix_yaml_ctx_t *ctx, const char *a,
    ngx_str_t *b, const char *c)
{
    u_char  *p;

    p = ngx_slprintf(ctx->path, ctx->path + NGX_HTTP_HELIX_YAML_PATH,
                     "%s%V%s", a, b, c);
    ctx->path_len = p - ctx->path;
}


static ngx_int_t
ngx_http_helix_yaml_validate(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_main_conf_t *hmcf)
{
    u_char                         *d;
    ngx_str_t                       empty = ngx_null_string;
    ngx_str_t                      *s;
    ngx_int_t                       type;
    ngx_uint_t                      i, j, k;
    ngx_http_helix_api_key_t       *key;
    ngx_http_helix_provider_t      *p;
    ngx_http_helix_warm_query_t    *q;
    ngx_http_helix_cache_policy_t  *pol;

    ngx_http_helix_yaml_set_path(ctx, "cache.l1.eviction", &empty, "");

    if (hmcf->cache.l1_eviction.len != 3
        || ngx_strncasecmp(hmcf->cache.l1_eviction.data, (u_char *) "lru", 3)
           != 0)
    {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "eviction \"%V\" is not supported (only "
                                "\"lru\")", &hmcf->cache.l1_eviction);
        return NGX_ERROR;
    }

    ngx_http_helix_yaml_set_path(ctx, "streaming.compression", &empty, "");

    s = &hmcf->streaming_compression;

    if (s->len == 0 || (s->len == 3 && ngx_strncmp(s->data, "off", 3) == 0)) {
        ngx_str_set(s, "none");
    }

    if (!(s->len == 4 && ngx_strncmp(s->data, "none", 4) == 0)
        && !(s->len == 4 && ngx_strncmp(s->data, "gzip", 4) == 0))
    {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "unknown compression \"%V\" (expected gzip "
                                "or none)", s);
        return NGX_ERROR;
    }

    ngx_http_helix_yaml_set_path(ctx, "ensemble.max_providers", &empty, "");

    if (hmcf->ensemble_max_providers == 0) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "must be at least 1");
        return NGX_ERROR;
    }

    ngx_http_helix_yaml_set_path(ctx, "ensemble.strategy", &empty, "");

    s = &hmcf->ensemble_strategy;

    if (!(s->len == 8 && ngx_strncmp(s->data, "majority", 8) == 0)
        && !(s->len == 6 && ngx_strncmp(s->data, "weight", 6) == 0))
    {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "unknown strategy \"%V\" (expected one of: "
                                "majority, weight)", s);
        return NGX_ERROR;
    }

    pol = hmcf->cache.policies.elts;

    for (i = 0; i < hmcf->cache.policies.nelts; i++) {
        if (pol[i].ttl == NGX_CONF_UNSET_MSEC) {
            pol[i].ttl = hmcf->cache.l1_ttl;
        }

        if (pol[i].max_size == NGX_CONF_UNSET_UINT) {
            pol[i].max_size = hmcf->cache.l1_max_size;
        }
    }

    p = hmcf->providers.elts;

    for (i = 0; i < hmcf->providers.nelts; i++) {
        ngx_http_helix_yaml_set_path(ctx, "providers.", &p[i].name, "");

        if (p[i].type == NGX_CONF_UNSET_UINT) {
            type = ngx_http_helix_provider_infer_type(&p[i].name);

            if (type == NGX_ERROR) {
                ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, p[i].line,
                                        "provider has no \"type\" (add "
                                        "type: openai, anthropic or gemini)");
                return NGX_ERROR;
            }

            p[i].type = type;
        }

        if (p[i].models.nelts == 0 && p[i].embedding_models.nelts == 0) {
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, p[i].line,
                                    "provider lists no models (add "
                                    "models: [...] or embedding_models: "
                                    "[...])");
            return NGX_ERROR;
        }

        if (p[i].location.len == 0) {
            p[i].location.len = sizeof("/_helix/") - 1 + p[i].name.len;
            p[i].location.data = ngx_pnalloc(ctx->cf->pool,
                                             p[i].location.len);
            if (p[i].location.data == NULL) {
                return NGX_ERROR;
            }

            d = ngx_cpymem(p[i].location.data, "/_helix/",
                           sizeof("/_helix/") - 1);
            ngx_memcpy(d, p[i].name.data, p[i].name.len);
        }

        if (p[i].location.data[0] != '/'
            || (p[i].stream_location.len
                && p[i].stream_location.data[0] != '/'))
        {
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, p[i].line,
                                    "location must be an nginx location "
                                    "path starting with \"/\"");
            return NGX_ERROR;
        }

        if (p[i].stream_location.len == 0) {
            p[i].stream_location = p[i].location;
        }

        if (p[i].api_version.len == 0
            && p[i].type == NGX_HTTP_HELIX_ANTHROPIC)
        {
            ngx_str_set(&p[i].api_version, "2023-06-01");
        }

        if (p[i].default_model.len == 0) {
            s = p[i].models.nelts ? p[i].models.elts
                                  : p[i].embedding_models.elts;
            p[i].default_model = s[0];
        }

        ngx_conf_merge_msec_value(p[i].timeout, NGX_CONF_UNSET_MSEC,
                                  hmcf->timeout_provider);
        ngx_conf_merge_uint_value(p[i].breaker.failure_threshold,
                                  NGX_CONF_UNSET_UINT,
                                  hmcf->breaker.failure_threshold);
        ngx_conf_merge_uint_value(p[i].breaker.failure_ratio,
                                  NGX_CONF_UNSET_UINT,
                                  hmcf->breaker.failure_ratio);
        ngx_conf_merge_uint_value(p[i].breaker.min_requests,
                                  NGX_CONF_UNSET_UINT,
                                  hmcf->breaker.min_requests);
        ngx_conf_merge_msec_value(p[i].breaker.window, NGX_CONF_UNSET_MSEC,
                                  hmcf->breaker.window);
        ngx_conf_merge_msec_value(p[i].breaker.cooldown, NGX_CONF_UNSET_MSEC,
                                  hmcf->breaker.cooldown);
        ngx_conf_merge_uint_value(p[i].breaker.half_open_requests,
                                  NGX_CONF_UNSET_UINT,
                                  hmcf->breaker.half_open_requests);
    }

    q = hmcf->cache.warming_queries.elts;

    for (i = 0; i < hmcf->cache.warming_queries.nelts; i++) {
        ngx_http_helix_yaml_set_path(ctx, "cache.warming.queries", &empty,
                                     "");
        ngx_http_helix_yaml_push(ctx, NULL, i);

        if (q[i].prompt.len == 0) {
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, q[i].line,
                                    "a warming query needs a \"prompt\"");
            return NGX_ERROR;
        }

        s = q[i].providers.elts;

        for (j = 0; j < q[i].providers.nelts; j++) {
            p = hmcf->providers.elts;

            for (k = 0; k < hmcf->providers.nelts; k++) {
                if (p[k].name.len == s[j].len
                    && ngx_strncmp(p[k].name.data, s[j].data, s[j].len) == 0)
                {
                    break;
                }
            }

            if (k == hmcf->providers.nelts) {
                ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, q[i].line,
                                        "unknown provider \"%V\" (not in "
                                        "providers:)", &s[j]);
                return NGX_ERROR;
            }
        }
    }

    key = hmcf->api_keys.elts;

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        ngx_http_helix_yaml_set_path(ctx, "auth.keys", &empty, "");
        ngx_http_helix_yaml_push(ctx, NULL, i);

        if (key[i].name.len == 0 || key[i].key.len == 0) {
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, key[i].line,
                                    "each key needs a \"name\" and a "
                                    "non-empty \"key\"");
            return NGX_ERROR;
        }

        if (key[i].key.len == hmcf->admin_token.len
            && ngx_strncmp(key[i].key.data, hmcf->admin_token.data,
                           key[i].key.len) == 0)
        {
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, key[i].line,
                                    "the admin token must not also be an "
                                    "API key");
            return NGX_ERROR;
        }

        /* a task's calls carry the name in a header (X-Helix-Key-Name) */

        for (j = 0; j < key[i].name.len; j++) {
            if (key[i].name.data[j] < 0x20 || key[i].name.data[j] == 0x7f) {
                ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, key[i].line,
                                        "a key's \"name\" may not hold "
                                        "control characters");
                return NGX_ERROR;
            }
        }

        /* the tenant: whose cache entries the key's answers are */

        if (key[i].tenant.data == NULL) {
            key[i].tenant = key[i].name;

        } else if (!ngx_http_helix_yaml_name_ok(&key[i].tenant)) {
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, key[i].line,
                                    "invalid \"tenant\" \"%V\" (use up to "
                                    "64 letters, digits, \"_\", \"-\" and "
                                    "\".\")", &key[i].tenant);
            return NGX_ERROR;
        }

        key[i].scope.len = 2 + key[i].tenant.len;
        key[i].scope.data = ngx_pnalloc(ctx->cf->pool, key[i].scope.len);
        if (key[i].scope.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_cpymem(key[i].scope.data, "t:", 2),
                   key[i].tenant.data, key[i].tenant.len);

        key[i].first_of_tenant = 1;

        for (j = 0; j < i; j++) {
            if (key[j].tenant.len == key[i].tenant.len
                && ngx_strncmp(key[j].tenant.data, key[i].tenant.data,
                               key[i].tenant.len) == 0)
            {
                key[i].first_of_tenant = 0;
            }

            if (key[j].name.len == key[i].name.len
                && ngx_strncmp(key[j].name.data, key[i].name.data,
                               key[i].name.len) == 0)
            {
                ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, key[i].line,
                                        "two keys are named \"%V\": a key's "
                                        "name is its limits and its tasks",
                                        &key[i].name);
                return NGX_ERROR;
            }

            if (key[j].key.len == key[i].key.len
                && ngx_strncmp(key[j].key.data, key[i].key.data,
                               key[i].key.len) == 0)
            {
                ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, key[i].line,
                                        "key of \"%V\" is the same as the "
                                        "key of \"%V\"", &key[i].name,
                                        &key[j].name);
                return NGX_ERROR;
            }
        }
    }

    /* a warming query for one tenant: one that a key has */

    q = hmcf->cache.warming_queries.elts;

    for (i = 0; i < hmcf->cache.warming_queries.nelts; i++) {
        if (q[i].tenant.len == 0) {
            continue;
        }

        for (j = 0; j < hmcf->api_keys.nelts; j++) {
            if (key[j].tenant.len == q[i].tenant.len
                && ngx_strncmp(key[j].tenant.data, q[i].tenant.data,
                               q[i].tenant.len) == 0)
            {
                break;
            }
        }

        if (j == hmcf->api_keys.nelts) {
            ngx_http_helix_yaml_set_path(ctx, "cache.warming.queries",
                                         &empty, "");
            ngx_http_helix_yaml_push(ctx, NULL, i);
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, q[i].line,
                                    "unknown tenant \"%V\" (no key in "
                                    "auth.keys has it)", &q[i].tenant);
            return NGX_ERROR;
        }
    }

    if (hmcf->limit_window == 0) {
        ngx_http_helix_yaml_set_path(ctx, "rate_limit.window", &empty, "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "must be longer than 0");
        return NGX_ERROR;
    }

    if (ngx_http_helix_yaml_validate_tasks(ctx, hmcf) != NGX_OK
        || ngx_http_helix_yaml_validate_costs(ctx, hmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (hmcf->auth_enabled && hmcf->api_keys.nelts == 0) {
        ngx_http_helix_yaml_set_path(ctx, "auth.enabled", &empty, "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "auth is enabled but auth.keys is empty");
        return NGX_ERROR;
    }

    if (ngx_http_helix_yaml_stores(ctx, hmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->path_len = 0;

    return NGX_OK;
}


/* the tasks' bounds, and the keys' own priority caps */

static ngx_int_t
ngx_http_helix_yaml_validate_tasks(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_main_conf_t *hmcf)
{
    ngx_str_t                  empty = ngx_null_string;
    ngx_uint_t                 i;
    ngx_http_helix_api_key_t  *key;

    if (hmcf->tasks.max_priority > 1000) {
        ngx_http_helix_yaml_set_path(ctx, "tasks.max_priority", &empty, "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "must be at most 1000");
        return NGX_ERROR;
    }

    if (hmcf->tasks.max_payload == 0) {
        ngx_http_helix_yaml_set_path(ctx, "tasks.max_payload", &empty, "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "must be larger than 0");
        return NGX_ERROR;
    }

    if (hmcf->tasks.callback_concurrency == 0) {
        ngx_http_helix_yaml_set_path(ctx, "tasks.callback_concurrency",
                                     &empty, "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "must be at least 1");
        return NGX_ERROR;
    }

    if (hmcf->tasks.retention
        && (hmcf->tasks.purge_interval == 0 || hmcf->tasks.purge_batch == 0))
    {
        ngx_http_helix_yaml_set_path(ctx, hmcf->tasks.purge_batch
                                          ? "tasks.purge_interval"
                                          : "tasks.purge_batch",
                                     &empty, "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "must be larger than 0 (tasks.retention: 0 "
                                "keeps finished tasks)");
        return NGX_ERROR;
    }

    key = hmcf->api_keys.elts;

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        if (key[i].max_task_priority > 1000) {
            ngx_http_helix_yaml_set_path(ctx, "auth.keys", &empty, "");
            ngx_http_helix_yaml_push(ctx, NULL, i);
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, key[i].line,
                                    "\"max_task_priority\" must be at most "
                                    "1000");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}



/* Redis and PostgreSQL: their breakers, and their addresses */

static ngx_int_t
ngx_http_helix_yaml_stores(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_main_conf_t *hmcf)
{
    ngx_str_t                        empty = ngx_null_string;
    ngx_http_helix_redis_conf_t     *rc;
    ngx_http_helix_database_conf_t  *db;

    rc = &hmcf->redis;
    db = &hmcf->database;

    if (ngx_http_helix_yaml_store_breaker(ctx, "redis", rc->breaker_failures,
                                          rc->breaker_backoff,
                                          rc->breaker_max_backoff)
        != NGX_OK
        || ngx_http_helix_yaml_store_breaker(ctx, "database",
                                             db->breaker_failures,
                                             db->breaker_backoff,
                                             db->breaker_max_backoff)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (rc->sentinel_master.len && rc->sentinel_nodes.nelts == 0) {
        ngx_http_helix_yaml_set_path(ctx, "redis.sentinel.nodes", &empty,
                                     "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "is required with master_name (a list of "
                                "\"host:port\" of Sentinels)");
        return NGX_ERROR;
    }

    if (rc->configured && rc->sentinel_nodes.nelts) {
        if (ngx_http_helix_yaml_sentinels(ctx, rc) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (rc->configured
               && ngx_http_helix_yaml_resolve(ctx, "redis.host", &rc->host,
                                              rc->port, &rc->addr)
                  != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (db->configured && db->hosts.nelts) {
        return ngx_http_helix_yaml_db_hosts(ctx, db);
    }

    if (db->target_session_attrs.len) {
        ngx_http_helix_yaml_set_path(ctx, "database.target_session_attrs",
                                     &empty, "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "is only for database.hosts (a list of "
                                "servers)");
        return NGX_ERROR;
    }

    /* a path is libpq's Unix socket directory: nothing to look up */

    if (db->configured && db->host.len && db->host.data[0] != '/'
        && ngx_http_helix_yaml_resolve(ctx, "database.host", &db->host,
                                       db->port, &db->addr)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * database.hosts: libpq's own failover.  It is given every server (as
 * "host", "hostaddr" and "port" lists) and target_session_attrs, and
 * picks: on a new connection it tries them in order and keeps the first
 * that fits (read-write: the primary).  Nothing of ours chooses.
 */

static ngx_int_t
ngx_http_helix_yaml_db_hosts(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_database_conf_t *db)
{
    ngx_uint_t              i;
    ngx_str_t               empty = ngx_null_string, *t;
    ngx_http_helix_node_t  *n;

    static ngx_str_t  attrs[] = {
        ngx_string("read-write"), ngx_string("any"),
        ngx_string("read-only"), ngx_string("primary"),
        ngx_string("standby"), ngx_string("prefer-standby"),
        ngx_null_string
    };

    if (db->target_session_attrs.len == 0) {
        ngx_str_set(&db->target_session_attrs, "read-write");
    }

    for (t = attrs; t->len; t++) {
        if (t->len == db->target_session_attrs.len
            && ngx_strncmp(t->data, db->target_session_attrs.data, t->len)
               == 0)
        {
            break;
        }
    }

    if (t->len == 0) {
        ngx_http_helix_yaml_set_path(ctx, "database.target_session_attrs",
                                     &empty, "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "unknown value \"%V\" (expected one of: "
                                "read-write, any, read-only, primary, "
                                "standby, prefer-standby)",
                                &db->target_session_attrs);
        return NGX_ERROR;
    }

    /* libpq's own values: a C string */
    db->target_session_attrs = *t;

    n = db->hosts.elts;

    for (i = 0; i < db->hosts.nelts; i++) {
        if (n[i].port == 0) {
            n[i].port = db->port;
        }

        if (n[i].host.data[0] == '/' || ngx_strchr(n[i].host.data, ',')) {
            ngx_http_helix_yaml_set_path(ctx, "database.hosts", &empty, "");
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                    "\"%V\": a host name or address, not "
                                    "a socket directory or a list",
                                    &n[i].name);
            return NGX_ERROR;
        }

        if (ngx_http_helix_yaml_resolve(ctx, "database.hosts", &n[i].host,
                                        n[i].port, &n[i].addr)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * redis.sentinel: every Sentinel is looked up now; the master's address
 * comes from them at run time, as numbers (nothing to look up then).
 */

static ngx_int_t
ngx_http_helix_yaml_sentinels(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_redis_conf_t *rc)
{
    ngx_uint_t                    i;
    ngx_str_t                     empty = ngx_null_string;
    ngx_http_helix_node_t  *n;

    if (rc->sentinel_master.len == 0) {
        ngx_http_helix_yaml_set_path(ctx, "redis.sentinel.master_name",
                                     &empty, "");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "is required with redis.sentinel.nodes "
                                "(the name of \"sentinel monitor\")");
        return NGX_ERROR;
    }

    /* sent as one argument: a space would be harmless, but is a typo */

    for (i = 0; i < rc->sentinel_master.len; i++) {
        if (rc->sentinel_master.data[i] <= ' ') {
            ngx_http_helix_yaml_set_path(ctx, "redis.sentinel.master_name",
                                         &empty, "");
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                    "must not contain spaces or control "
                                    "characters");
            return NGX_ERROR;
        }
    }

    n = rc->sentinel_nodes.elts;

    for (i = 0; i < rc->sentinel_nodes.nelts; i++) {
        if (n[i].port == 0) {
            n[i].port = 26379;
        }

        if (ngx_http_helix_yaml_resolve(ctx, "redis.sentinel.nodes",
                                        &n[i].host, n[i].port, &n[i].addr)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_yaml_store_breaker(ngx_http_helix_yaml_ctx_t *ctx,
    const char *block, ngx_uint_t failures, ngx_msec_t backoff,
    ngx_msec_t max_backoff)
{
    ngx_str_t  name;

    name.data = (u_char *) block;
    name.len = ngx_strlen(block);

    if (failures == 0) {
        ngx_http_helix_yaml_set_path(ctx, "", &name, ".breaker.failures");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "must be at least 1");
        return NGX_ERROR;
    }

    if (backoff == 0) {
        ngx_http_helix_yaml_set_path(ctx, "", &name, ".breaker.backoff");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "must be longer than 0");
        return NGX_ERROR;
    }

    if (max_backoff < backoff) {
        ngx_http_helix_yaml_set_path(ctx, "", &name, ".breaker.max_backoff");
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "must not be shorter than backoff (%M ms)",
                                backoff);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A host name is looked up here, at load, as nginx does for upstream
 * servers: a worker connects to the address, and never blocks in
 * getaddrinfo().  A reload looks it up again.
 */

static ngx_int_t
ngx_http_helix_yaml_resolve(ngx_http_helix_yaml_ctx_t *ctx, const char *key,
    ngx_str_t *host, ngx_uint_t port, ngx_str_t *addr)
{
    u_char     *p;
    ngx_url_t   u;
    ngx_str_t   empty = ngx_null_string;

    ngx_http_helix_yaml_set_path(ctx, key, &empty, "");

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.host = *host;
    u.port = (in_port_t) port;

    if (ngx_inet_resolve_host(ctx->cf->pool, &u) != NGX_OK
        || u.naddrs == 0)
    {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "cannot resolve \"%V\": %s", host,
                                u.err ? u.err : "no address");
        return NGX_ERROR;
    }

    p = ngx_pnalloc(ctx->cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    addr->data = p;
    addr->len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, p,
                              NGX_SOCKADDR_STRLEN, 0);
    p[addr->len] = '\0';

    if (u.naddrs > 1) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_NOTICE, NULL,
                                "\"%V\" has %ui addresses, %V is used",
                                host, u.naddrs, addr);
    }

    return NGX_OK;
}


/*
 * Money: "0.15", "12", "0.000125" -> micro-units (150000, 12000000,
 * 125): at most 6 decimals, never a float on the way.
 */

static ngx_int_t
ngx_http_helix_yaml_set_money(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    u_char     *p, *last;
    int64_t     n;
    ngx_str_t   v;
    ngx_uint_t  decimals, dot;

    if (ngx_http_helix_yaml_scalar(ctx, node, &v) != NGX_OK
        || ngx_http_helix_yaml_number(ctx, node, &v, "an amount") != NGX_OK)
    {
        return NGX_ERROR;
    }

    n = 0;
    dot = 0;
    decimals = 0;
    last = v.data + v.len;

    for (p = v.data; p < last; p++) {
        if (*p == '.' && !dot && p > v.data && p + 1 < last) {
            dot = 1;
            continue;
        }

        if (*p < '0' || *p > '9' || decimals == 6
            || n >= 1000000000000000LL)
        {
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                    "expected an amount like \"0.15\" (at "
                                    "most 6 decimals, below 10^9), got "
                                    "\"%V\"", &v);
            return NGX_ERROR;
        }

        n = n * 10 + (*p - '0');
        decimals += dot;
    }

    while (decimals++ < 6) {
        n *= 10;
    }

    if (n >= 1000000000000000LL) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "amount \"%V\" is too large (below 10^9)",
                                &v);
        return NGX_ERROR;
    }

    *(int64_t *) ((u_char *) base + key->offset) = n;

    return NGX_OK;
}


/* budget: {amount, period}: both, or no budget */

static ngx_int_t
ngx_http_helix_yaml_set_budget(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    ngx_http_helix_budget_conf_t  *b;

    b = (ngx_http_helix_budget_conf_t *) ((u_char *) base + key->offset);
    b->amount = -1;
    b->period = NGX_HTTP_HELIX_BUDGET_NONE;

    if (ngx_http_helix_yaml_map(ctx, node, b, ngx_http_helix_yaml_budget)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (b->amount < 0 || b->period == NGX_HTTP_HELIX_BUDGET_NONE) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "a budget needs an \"amount\" and a "
                                "\"period\" (day or month)");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* pricing.models: a cached or written input costs the input's unless said */

static ngx_int_t
ngx_http_helix_yaml_set_prices(ngx_http_helix_yaml_ctx_t *ctx,
    yaml_node_t *node, void *base, const ngx_http_helix_yaml_key_t *key)
{
    size_t                       old;
    yaml_node_t                 *item;
    yaml_node_item_t            *i;
    ngx_http_helix_price_t      *pr;
    ngx_http_helix_main_conf_t  *hmcf = base;

    if (ngx_http_helix_yaml_is_null(node)) {
        return NGX_OK;
    }

    if (node->type != YAML_SEQUENCE_NODE) {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, node,
                                "expected a list (one \"- model: ...\" per "
                                "price), got %s",
                                ngx_http_helix_yaml_type_name(node));
        return NGX_ERROR;
    }

    for (i = node->data.sequence.items.start;
         i < node->data.sequence.items.top;
         i++)
    {
        item = yaml_document_get_node(ctx->doc, *i);

        old = ngx_http_helix_yaml_push(ctx, NULL,
                                   i - node->data.sequence.items.start);

        if (item->type != YAML_MAPPING_NODE) {
            ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, item,
                                    "expected a mapping of keys, got %s",
                                    ngx_http_helix_yaml_type_name(item));
            return NGX_ERROR;
        }

        pr = ngx_array_push(&hmcf->prices);
        if (pr == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(pr, sizeof(ngx_http_helix_price_t));
        pr->line = item->start_mark.line + 1;
        pr->cached_input = -1;
        pr->cache_write = -1;

        if (ngx_http_helix_yaml_map(ctx, item, pr, ngx_http_helix_yaml_price)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->path_len = old;
    }

    return NGX_OK;
}


/* a name that becomes a metric label: no quote, backslash, control */

static ngx_uint_t
ngx_http_helix_yaml_label_ok(ngx_str_t *s)
{
    size_t  i;

    if (s->len == 0 || s->len > 64) {
        return 0;
    }

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < 0x20 || s->data[i] == 0x7f || s->data[i] == '"'
            || s->data[i] == '\\')
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_helix_yaml_validate_costs(ngx_http_helix_yaml_ctx_t *ctx,
    ngx_http_helix_main_conf_t *hmcf)
{
    ngx_str_t                    empty = ngx_null_string;
    ngx_uint_t                   i, j;
    ngx_http_helix_price_t      *pr;
    ngx_http_helix_tenant_t     *t;
    ngx_http_helix_api_key_t    *key;
    ngx_http_helix_provider_t   *p;

    ngx_http_helix_yaml_set_path(ctx, "pricing.currency", &empty, "");

    if (!ngx_http_helix_yaml_name_ok(&hmcf->currency)
        || hmcf->currency.len > 16)
    {
        ngx_http_helix_yaml_log(ctx, NGX_LOG_EMERG, NULL,
                                "invalid currency \"%V\" (a short name "
                                "like \"USD\")", &hmcf->currency);
        return NGX_ERROR;
    }

    pr = hmcf->prices.elts;

    for (i = 0; i < hmcf->prices.nelts; i++) {
        ngx_http_helix_yaml_set_path(ctx, "pricing.models", &empty, "");
        ngx_http_helix_yaml_push(ctx, NULL, i);

        if (!ngx_http_helix_yaml_label_ok(&pr[i].model)) {
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, pr[i].line,
                                    "each price needs a \"model\" (up to "
                                    "64 characters, no quotes or "
                                    "backslashes; \"*\": any other model)");
            return NGX_ERROR;
        }

        if (pr[i].input > 1000000000000LL || pr[i].output > 1000000000000LL
            || pr[i].cached_input > 1000000000000LL
            || pr[i].cache_write > 1000000000000LL)
        {
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, pr[i].line,
                                    "a price must be at most 1000000 per "
                                    "million tokens");
            return NGX_ERROR;
        }

        if (pr[i].cached_input < 0) {
            pr[i].cached_input = pr[i].input;
        }

        if (pr[i].cache_write < 0) {
            pr[i].cache_write = pr[i].input;
        }

        if (pr[i].provider.len) {
            p = hmcf->providers.elts;

            for (j = 0; j < hmcf->providers.nelts; j++) {
                if (p[j].name.len == pr[i].provider.len
                    && ngx_strncmp(p[j].name.data, pr[i].provider.data,
                                   pr[i].provider.len) == 0)
                {
                    break;
                }
            }

            if (j == hmcf->providers.nelts) {
                ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, pr[i].line,
                                        "unknown provider \"%V\" (not in "
                                        "providers:)", &pr[i].provider);
                return NGX_ERROR;
            }
        }

        for (j = 0; j < i; j++) {
            if (pr[j].model.len == pr[i].model.len
                && pr[j].provider.len == pr[i].provider.len
                && ngx_strncmp(pr[j].model.data, pr[i].model.data,
                               pr[i].model.len) == 0
                && ngx_strncmp(pr[j].provider.data, pr[i].provider.data,
                               pr[i].provider.len) == 0)
            {
                ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, pr[i].line,
                                        "a second price for \"%V\"%s%V "
                                        "(first at line %ui)", &pr[i].model,
                                        pr[i].provider.len ? " of " : "",
                                        &pr[i].provider, pr[j].line);
                return NGX_ERROR;
            }
        }
    }

    key = hmcf->api_keys.elts;
    t = hmcf->tenants.elts;

    for (i = 0; i < hmcf->tenants.nelts; i++) {
        ngx_http_helix_yaml_set_path(ctx, "auth.tenants", &empty, "");
        ngx_http_helix_yaml_push(ctx, NULL, i);

        for (j = 0; j < i; j++) {
            if (t[j].name.len == t[i].name.len
                && ngx_strncmp(t[j].name.data, t[i].name.data,
                               t[i].name.len) == 0)
            {
                ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, t[i].line,
                                        "tenant \"%V\" is listed twice",
                                        &t[i].name);
                return NGX_ERROR;
            }
        }

        for (j = 0; j < hmcf->api_keys.nelts; j++) {
            if (key[j].tenant.len == t[i].name.len
                && ngx_strncmp(key[j].tenant.data, t[i].name.data,
                               t[i].name.len) == 0)
            {
                key[j].tenant_conf = &t[i];
            }
        }

        if (t[i].name.len == 0) {
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, t[i].line,
                                    "each tenant needs a \"name\"");
            return NGX_ERROR;
        }
    }

    for (i = 0; i < hmcf->tenants.nelts; i++) {
        for (j = 0; j < hmcf->api_keys.nelts; j++) {
            if (key[j].tenant_conf == &t[i]) {
                break;
            }
        }

        if (j == hmcf->api_keys.nelts) {
            ngx_http_helix_yaml_set_path(ctx, "auth.tenants", &empty, "");
            ngx_http_helix_yaml_push(ctx, NULL, i);
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, t[i].line,
                                    "unknown tenant \"%V\" (no key in "
                                    "auth.keys has it)", &t[i].name);
            return NGX_ERROR;
        }
    }

    /* budgets are counted in Redis under names, as limits are */

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        if ((key[i].budget.period || key[i].tenant_conf)
            && !ngx_http_helix_yaml_label_ok(&key[i].name))
        {
            ngx_http_helix_yaml_set_path(ctx, "auth.keys", &empty, "");
            ngx_http_helix_yaml_push(ctx, NULL, i);
            ngx_http_helix_yaml_log_line(ctx, NGX_LOG_EMERG, key[i].line,
                                    "a key with a budget needs a \"name\" "
                                    "of up to 64 characters, no quotes or "
                                    "backslashes");
            return NGX_ERROR;
        }
    }

    ctx->path_len = 0;

    return NGX_OK;
}
