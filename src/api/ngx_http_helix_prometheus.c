/*
 * Copyright (C) helix authors
 *
 * GET /metrics: the store of ngx_http_helix_metrics.c, with the cache's
 * and the providers' state, in Prometheus' text exposition format.
 */


#include <sys/resource.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_upstream.h"
#include "ngx_http_helix_cache.h"
#include "ngx_http_helix_metrics.h"
#include "ngx_http_helix_prometheus.h"


static const char  *ngx_http_helix_stream_outcomes[] = {
    "completed", "failed", "client_closed"
};


static const char  *ngx_http_helix_reasons[NGX_HTTP_HELIX_ERR_REASONS] = {
    "status_4xx", "status_5xx", "rate_limited", "timeout", "connection",
    "invalid_answer", "too_large", "breaker_open", "busy"
};


static const char  *ngx_http_helix_ep_names[NGX_HTTP_HELIX_EPS] = {
    "none", "chat_completions", "completions", "embeddings", "models",
    "completions_batch", "embeddings_batch", "ensemble", "tasks",
    "cache_clear", "cache_cleanup", "health", "provider_health", "metrics",
    "debates", "spend", "admin_keys", "messages", "responses"
};


/* the text exposition format, written into a growing pool buffer */

typedef struct {
    ngx_pool_t                  *pool;
    u_char                      *start;
    u_char                      *pos;
    u_char                      *end;
    ngx_uint_t                   failed;
} ngx_http_helix_out_t;


static void ngx_http_helix_out_requests(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh);
static void ngx_http_helix_out_cache(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh);
static void ngx_http_helix_out_queue(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh);
static void ngx_http_helix_out_cache_gauges(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh);
static void ngx_http_helix_out_providers(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh);
static void ngx_http_helix_out_stores(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh);


static void ngx_http_helix_out_cost(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh);
static void ngx_http_helix_out_store(ngx_http_helix_out_t *o,
    ngx_http_helix_metrics_sh_t *sh, ngx_uint_t store);


static void
ngx_http_helix_out(ngx_http_helix_out_t *o, const char *fmt, ...)
{
    u_char   *p, *n;
    size_t    size, used;
    va_list   args;

    for ( ;; ) {
        if (o->failed) {
            return;
        }

        va_start(args, fmt);
        p = ngx_vslprintf(o->pos, o->end, fmt, args);
        va_end(args);

        if (p < o->end) {
            o->pos = p;
            return;
        }

        /* did not fit (or just did): grow and write again */

        used = o->pos - o->start;
        size = (o->end - o->start) * 2;

        n = ngx_pnalloc(o->pool, size);
        if (n == NULL) {
            o->failed = 1;
            return;
        }

        ngx_memcpy(n, o->start, used);
        o->start = n;
        o->pos = n + used;
        o->end = n + size;
    }
}


static void
ngx_http_helix_out_hist(ngx_http_helix_out_t *o, const char *name,
    const char *labels, ngx_http_helix_hist_t *h, const double *bounds,
    ngx_uint_t n, double scale)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  acc, count;

    count = h->count;

    if (count == 0) {
        return;
    }

    acc = 0;

    for (i = 0; i < n; i++) {
        acc += h->bucket[i];
        ngx_http_helix_out(o, "%s_bucket{%s%sle=\"%.6f\"} %uA\n", name,
                           labels, *labels ? "," : "", bounds[i], acc);
    }

    ngx_http_helix_out(o, "%s_bucket{%s%sle=\"+Inf\"} %uA\n", name, labels,
                       *labels ? "," : "", count);
    ngx_http_helix_out(o, "%s_sum%s%s%s %.6f\n", name, *labels ? "{" : "",
                       labels, *labels ? "}" : "", (double) h->sum * scale);
    ngx_http_helix_out(o, "%s_count%s%s%s %uA\n", name, *labels ? "{" : "",
                       labels, *labels ? "}" : "", count);
}


/* the workers' CPU and memory, read from /proc for every live worker */

static void
ngx_http_helix_out_process(ngx_http_helix_out_t *o)
{
    u_char      *p, *last;
    ssize_t      n;
    ngx_fd_t     fd;
    ngx_pid_t   *pid;
    ngx_uint_t   i, npids, f;
    uint64_t     ticks, pages, utime, stime, rss;
    u_char       path[64], buf[1024];
    ngx_pid_t    pids[256];

    npids = ngx_http_helix_worker_pids(pids, 255);
    pids[npids++] = getppid();

    ticks = 0;
    pages = 0;

    for (i = 0; i < npids; i++) {
        pid = &pids[i];

        ngx_sprintf(path, "/proc/%P/stat%Z", *pid);
        fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
        if (fd == NGX_INVALID_FILE) {
            continue;
        }

        n = read(fd, buf, sizeof(buf) - 1);
        ngx_close_file(fd);

        if (n <= 0) {
            continue;
        }

        buf[n] = '\0';

        /* after "(comm)": fields 3.. ; utime is 14, stime 15, rss 24 */

        p = (u_char *) ngx_strchr(buf, ')');
        if (p == NULL) {
            continue;
        }

        last = buf + n;
        utime = stime = rss = 0;

        for (f = 2; p < last && f <= 24; f++) {
            while (p < last && *p != ' ') {
                p++;
            }

            while (p < last && *p == ' ') {
                p++;
            }

            if (f + 1 == 14) {
                utime = ngx_atoi(p, ngx_strlchr(p, last, ' ') - p);

            } else if (f + 1 == 15) {
                stime = ngx_atoi(p, ngx_strlchr(p, last, ' ') - p);

            } else if (f + 1 == 24) {
                rss = ngx_atoi(p, ngx_strlchr(p, last, ' ') - p);
            }
        }

        ticks += utime + stime;
        pages += rss;
    }

    ngx_http_helix_out(o,
        "# HELP process_cpu_seconds_total CPU time of nginx's master and "
        "workers.\n# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total %.2f\n"
        "# HELP process_resident_memory_bytes Resident memory of nginx's "
        "master and workers, summed.\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes %uL\n",
        (double) ticks / (double) sysconf(_SC_CLK_TCK),
        pages * (uint64_t) ngx_pagesize);
}


/* the PostgreSQL pools and the background tasks */

/*
 * A breaker of Redis or PostgreSQL: how many live workers have it in
 * each state, how often one opened, the commands it kept from being sent.
 */

static void
ngx_http_helix_out_store(ngx_http_helix_out_t *o,
    ngx_http_helix_metrics_sh_t *sh, ngx_uint_t store)
{
    ngx_pid_t               pid;
    ngx_uint_t              i, st;
    const char             *name, *what;
    ngx_atomic_uint_t       n[NGX_HTTP_HELIX_STORE_STATES];
    ngx_http_helix_metrics_wrow_t  *row;

    ngx_memzero(n, sizeof(n));

    for (i = 0; i < NGX_HTTP_HELIX_WORKERS; i++) {
        row = &sh->rows[i];
        pid = (ngx_pid_t) row->pid;

        if (pid == 0
            || (pid != ngx_pid && !ngx_http_helix_metrics_alive(pid)))
        {
            continue;
        }

        st = row->store[store];

        if (st < NGX_HTTP_HELIX_STORE_STATES) {
            n[st]++;
        }
    }

    name = (store == NGX_HTTP_HELIX_STORE_REDIS) ? "redis" : "db";
    what = (store == NGX_HTTP_HELIX_STORE_REDIS) ? "Redis" : "PostgreSQL";

    ngx_http_helix_out(o,
        "# HELP helixagent_%s_breaker_state Workers by the state of their "
        "%s breaker: closed, open (nothing sent), half_open (one probe "
        "out).\n"
        "# TYPE helixagent_%s_breaker_state gauge\n"
        "helixagent_%s_breaker_state{state=\"closed\"} %uA\n"
        "helixagent_%s_breaker_state{state=\"open\"} %uA\n"
        "helixagent_%s_breaker_state{state=\"half_open\"} %uA\n"
        "# HELP helixagent_%s_breaker_opened_total Times a worker's %s "
        "breaker opened after failures in a row.\n"
        "# TYPE helixagent_%s_breaker_opened_total counter\n"
        "helixagent_%s_breaker_opened_total %uA\n"
        "# HELP helixagent_%s_breaker_rejected_total %s commands not sent: "
        "the worker's breaker was open.\n"
        "# TYPE helixagent_%s_breaker_rejected_total counter\n"
        "helixagent_%s_breaker_rejected_total %uA\n",
        name, what, name,
        name, n[NGX_HTTP_HELIX_STORE_CLOSED],
        name, n[NGX_HTTP_HELIX_STORE_OPEN],
        name, n[NGX_HTTP_HELIX_STORE_HALF_OPEN],
        name, what, name, name, sh->store_opened[store],
        name, what, name, name, sh->store_rejected[store]);
}


static void
ngx_http_helix_out_db(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh)
{
    ngx_pid_t               pid;
    ngx_uint_t              i, j;
    ngx_atomic_uint_t       db[4];
    ngx_http_helix_metrics_wrow_t  *row;

    ngx_memzero(db, sizeof(db));

    for (i = 0; i < NGX_HTTP_HELIX_WORKERS; i++) {
        row = &sh->rows[i];
        pid = (ngx_pid_t) row->pid;

        if (pid == 0
            || (pid != ngx_pid && !ngx_http_helix_metrics_alive(pid)))
        {
            continue;
        }

        for (j = 0; j < 4; j++) {
            db[j] += row->db[j];
        }
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_db_connections PostgreSQL connections of the "
        "pools by state, summed over live workers (the tasks' LISTEN "
        "connection aside).\n"
        "# TYPE helixagent_db_connections gauge\n"
        "helixagent_db_connections{state=\"busy\"} %uA\n"
        "helixagent_db_connections{state=\"idle\"} %uA\n"
        "helixagent_db_connections{state=\"connecting\"} %uA\n"
        "# HELP helixagent_db_pool_max_open database.pool.max_open: the "
        "most connections one worker's pool opens.\n"
        "# TYPE helixagent_db_pool_max_open gauge\n"
        "helixagent_db_pool_max_open %ui\n"
        "# HELP helixagent_db_pool_waiting Queries waiting for a "
        "connection, summed over live workers.\n"
        "# TYPE helixagent_db_pool_waiting gauge\n"
        "helixagent_db_pool_waiting %uA\n"
        "# HELP helixagent_db_queries_total Queries by outcome: ok, error "
        "(refused by PostgreSQL, connection lost, or not sent: PostgreSQL "
        "unreachable), timeout (timeouts.database).\n"
        "# TYPE helixagent_db_queries_total counter\n"
        "helixagent_db_queries_total{outcome=\"ok\"} %uA\n"
        "helixagent_db_queries_total{outcome=\"error\"} %uA\n"
        "helixagent_db_queries_total{outcome=\"timeout\"} %uA\n"
        "# HELP helixagent_db_pool_waits_total Queries that found every "
        "connection their worker's pool may open in use: served when one "
        "was freed, timeout when none was in time.\n"
        "# TYPE helixagent_db_pool_waits_total counter\n"
        "helixagent_db_pool_waits_total{outcome=\"served\"} %uA\n"
        "helixagent_db_pool_waits_total{outcome=\"timeout\"} %uA\n",
        db[0], db[1], db[2], hmcf->database.max_open, db[3],
        sh->db_queries[NGX_HTTP_HELIX_DB_OK],
        sh->db_queries[NGX_HTTP_HELIX_DB_ERROR],
        sh->db_queries[NGX_HTTP_HELIX_DB_TIMEOUT],
        sh->db_waits[NGX_HTTP_HELIX_DB_WAIT_SERVED],
        sh->db_waits[NGX_HTTP_HELIX_DB_WAIT_TIMEOUT]);

    ngx_http_helix_out(o,
        "# HELP helixagent_db_query_duration_seconds Time from sending a "
        "query to its result (a first prepare on the connection included), "
        "for queries PostgreSQL answered.\n"
        "# TYPE helixagent_db_query_duration_seconds histogram\n");
    ngx_http_helix_out_hist(o, "helixagent_db_query_duration_seconds", "",
                            &sh->db_query_time,
                            ngx_http_helix_metrics_time_bounds,
                            NGX_HTTP_HELIX_TIME_BKTS, 1e-6);

    ngx_http_helix_out(o,
        "# HELP helixagent_db_pool_wait_seconds Time queries waited for a "
        "connection (one being opened for them included), for those that "
        "got one.\n"
        "# TYPE helixagent_db_pool_wait_seconds histogram\n");
    ngx_http_helix_out_hist(o, "helixagent_db_pool_wait_seconds", "",
                            &sh->db_wait, ngx_http_helix_metrics_time_bounds,
                            NGX_HTTP_HELIX_TIME_BKTS, 1e-6);

    ngx_http_helix_out(o,
        "# HELP helixagent_tasks_total Background tasks by what this nginx "
        "decided (other nginx instances on the database count their own): "
        "submitted (row committed), completed, failed, cancelled, retried "
        "(back to pending for another attempt).\n"
        "# TYPE helixagent_tasks_total counter\n"
        "helixagent_tasks_total{outcome=\"submitted\"} %uA\n"
        "helixagent_tasks_total{outcome=\"completed\"} %uA\n"
        "helixagent_tasks_total{outcome=\"failed\"} %uA\n"
        "helixagent_tasks_total{outcome=\"cancelled\"} %uA\n"
        "helixagent_tasks_total{outcome=\"retried\"} %uA\n"
        "# HELP helixagent_task_callbacks_total POSTs to callback_url made "
        "by this nginx: delivered, failed (given up), retried (failed, "
        "sent again after a backoff), refused (never sent: an address the "
        "SSRF guard refuses).\n"
        "# TYPE helixagent_task_callbacks_total counter\n"
        "helixagent_task_callbacks_total{outcome=\"delivered\"} %uA\n"
        "helixagent_task_callbacks_total{outcome=\"failed\"} %uA\n"
        "helixagent_task_callbacks_total{outcome=\"retried\"} %uA\n"
        "helixagent_task_callbacks_total{outcome=\"refused\"} %uA\n",
        sh->tasks[NGX_HTTP_HELIX_TASK_SUBMITTED],
        sh->tasks[NGX_HTTP_HELIX_TASK_COMPLETED],
        sh->tasks[NGX_HTTP_HELIX_TASK_FAILED],
        sh->tasks[NGX_HTTP_HELIX_TASK_CANCELLED],
        sh->tasks[NGX_HTTP_HELIX_TASK_RETRIED],
        sh->callbacks[NGX_HTTP_HELIX_CALLBACK_DELIVERED],
        sh->callbacks[NGX_HTTP_HELIX_CALLBACK_FAILED],
        sh->callbacks[NGX_HTTP_HELIX_CALLBACK_RETRIED],
        sh->callbacks[NGX_HTTP_HELIX_CALLBACK_REFUSED]);
}


ngx_int_t
ngx_http_helix_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_str_t                     body;
    ngx_http_helix_out_t          o;
    ngx_http_helix_main_conf_t   *hmcf;
    ngx_http_helix_metrics_sh_t  *sh;

    static ngx_str_t  type = ngx_string("text/plain; version=0.0.4");


    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    sh = hmcf->metrics_sh;

    if (sh == NULL) {
        return ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                         "metrics_disabled", NULL,
                                         "metrics are off (metrics.enabled "
                                         "in helix.yaml)");
    }

    o.pool = r->pool;
    o.start = ngx_pnalloc(r->pool, 16384);
    if (o.start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    o.pos = o.start;
    o.end = o.start + 16384;
    o.failed = 0;

    ngx_http_helix_out_requests(&o, hmcf, sh);
    ngx_http_helix_out_cache(&o, hmcf, sh);
    ngx_http_helix_out_queue(&o, hmcf, sh);
    ngx_http_helix_out_cache_gauges(&o, hmcf, sh);
    ngx_http_helix_out_providers(&o, hmcf, sh);
    ngx_http_helix_out_stores(&o, hmcf, sh);

#if (NGX_STAT_STUB)

    ngx_http_helix_out(&o,
        "# HELP nginx_connections Client connections by state.\n"
        "# TYPE nginx_connections gauge\n"
        "nginx_connections{state=\"active\"} %uA\n"
        "nginx_connections{state=\"reading\"} %uA\n"
        "nginx_connections{state=\"writing\"} %uA\n"
        "nginx_connections{state=\"waiting\"} %uA\n"
        "# HELP nginx_connections_accepted_total Client connections "
        "accepted.\n# TYPE nginx_connections_accepted_total counter\n"
        "nginx_connections_accepted_total %uA\n"
        "# HELP nginx_http_requests_total Client requests.\n"
        "# TYPE nginx_http_requests_total counter\n"
        "nginx_http_requests_total %uA\n",
        *ngx_stat_active, *ngx_stat_reading, *ngx_stat_writing,
        *ngx_stat_waiting, *ngx_stat_accepted, *ngx_stat_requests);

#endif

    ngx_http_helix_out_process(&o);

    if (o.failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = o.start;
    body.len = o.pos - o.start;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type = type;
    r->headers_out.content_type_len = type.len;

    return ngx_http_helix_send_text(r, &body);
}


/* requests by endpoint: duration by status class, sizes */

static void
ngx_http_helix_out_requests(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh)
{
    char        labels[160];
    ngx_uint_t  i, j;

    static const char  *classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };

    ngx_http_helix_out(o,
        "# HELP helixagent_request_duration_seconds Time to answer a request."
        "\n# TYPE helixagent_request_duration_seconds histogram\n");

    for (i = 1; i < NGX_HTTP_HELIX_EPS; i++) {
        for (j = 0; j < 5; j++) {
            ngx_sprintf((u_char *) labels, "endpoint=\"%s\",status=\"%s\"%Z",
                        ngx_http_helix_ep_names[i], classes[j]);
            ngx_http_helix_out_hist(o, "helixagent_request_duration_seconds",
                                    labels, &sh->duration[i][j],
                                    ngx_http_helix_metrics_time_bounds,
                                    NGX_HTTP_HELIX_TIME_BKTS, 1e-6);
        }
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_request_size_bytes Size of requests, headers "
        "included.\n# TYPE helixagent_request_size_bytes histogram\n");

    for (i = 1; i < NGX_HTTP_HELIX_EPS; i++) {
        ngx_sprintf((u_char *) labels, "endpoint=\"%s\"%Z",
                    ngx_http_helix_ep_names[i]);
        ngx_http_helix_out_hist(o, "helixagent_request_size_bytes", labels,
                                &sh->request_size[i],
                                ngx_http_helix_metrics_size_bounds,
                                NGX_HTTP_HELIX_SIZE_BKTS, 1);
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_response_size_bytes Size of answers, headers "
        "included.\n# TYPE helixagent_response_size_bytes histogram\n");

    for (i = 1; i < NGX_HTTP_HELIX_EPS; i++) {
        ngx_sprintf((u_char *) labels, "endpoint=\"%s\"%Z",
                    ngx_http_helix_ep_names[i]);
        ngx_http_helix_out_hist(o, "helixagent_response_size_bytes", labels,
                                &sh->response_size[i],
                                ngx_http_helix_metrics_size_bounds,
                                NGX_HTTP_HELIX_SIZE_BKTS, 1);
    }
}


/* the cache by policy, its lookups, the gateway's own time */

static void
ngx_http_helix_out_cache(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh)
{
    ngx_uint_t                      i;
    ngx_http_helix_cache_policy_t  *pol;

    static const char  *served[] = { "", "cache=\"l1\"", "cache=\"l2\"",
                                     "cache=\"miss\"",
                                     "cache=\"bypass\"" };

    pol = hmcf->cache.policies.elts;

    ngx_http_helix_out(o,
        "# HELP helixagent_cache_hits_total Answers served from the cache."
        "\n# TYPE helixagent_cache_hits_total counter\n");

    for (i = 0; i < hmcf->cache.policies.nelts; i++) {
        ngx_http_helix_out(o, "helixagent_cache_hits_total{tier=\"l1\","
                           "policy=\"%V\"} %uA\n", &pol[i].name,
                           sh->cache_hits[pol[i].slot]);
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_cache_misses_total Requests the cache could not "
        "answer.\n# TYPE helixagent_cache_misses_total counter\n");

    for (i = 0; i < hmcf->cache.policies.nelts; i++) {
        ngx_http_helix_out(o, "helixagent_cache_misses_total{tier=\"l1\","
                           "policy=\"%V\"} %uA\n", &pol[i].name,
                           sh->cache_misses[pol[i].slot]);
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_cache_latency_seconds Time of a cache lookup.\n"
        "# TYPE helixagent_cache_latency_seconds histogram\n");
    ngx_http_helix_out_hist(o, "helixagent_cache_latency_seconds",
                            "tier=\"l1\"", &sh->cache_latency,
                            ngx_http_helix_metrics_fast_bounds,
                            NGX_HTTP_HELIX_FAST_BKTS, 1e-6);

    ngx_http_helix_out(o,
        "# HELP helixagent_gateway_overhead_seconds The gateway's own time "
        "in an answer: from the whole request read to the answer's header, "
        "less the provider's time (a stream's: to its first frame).\n"
        "# TYPE helixagent_gateway_overhead_seconds histogram\n");

    for (i = 1; i < NGX_HTTP_HELIX_SERVED; i++) {
        ngx_http_helix_out_hist(o, "helixagent_gateway_overhead_seconds",
                                served[i], &sh->overhead[i],
                                ngx_http_helix_metrics_overhead_bounds,
                                NGX_HTTP_HELIX_TIME_BKTS, 1e-6);
    }
}


/* the wait for a place at the concurrency limits */

static void
ngx_http_helix_out_queue(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh)
{
    ngx_http_helix_out(o,
        "# HELP helixagent_provider_queue_waiting Requests waiting for a "
        "place at the providers' concurrency limits, all workers.\n"
        "# TYPE helixagent_provider_queue_waiting gauge\n"
        "helixagent_provider_queue_waiting %ui\n"
        "# HELP helixagent_provider_queue_total Waits for a place, by how "
        "they ended.\n"
        "# TYPE helixagent_provider_queue_total counter\n"
        "helixagent_provider_queue_total{outcome=\"served\"} %uA\n"
        "helixagent_provider_queue_total{outcome=\"timeout\"} %uA\n"
        "helixagent_provider_queue_total{outcome=\"full\"} %uA\n"
        "helixagent_provider_queue_total{outcome=\"client_closed\"} %uA\n"
        "# HELP helixagent_provider_queue_wait_seconds Time waited for a "
        "place.\n"
        "# TYPE helixagent_provider_queue_wait_seconds histogram\n",
        ngx_http_helix_waiting_total(hmcf),
        sh->queue[NGX_HTTP_HELIX_QUEUE_SERVED],
        sh->queue[NGX_HTTP_HELIX_QUEUE_TIMEOUT],
        sh->queue[NGX_HTTP_HELIX_QUEUE_FULL],
        sh->queue[NGX_HTTP_HELIX_QUEUE_GONE]);
    ngx_http_helix_out_hist(o, "helixagent_provider_queue_wait_seconds",
                            "", &sh->queue_wait,
                            ngx_http_helix_metrics_time_bounds,
                            NGX_HTTP_HELIX_TIME_BKTS, 1e-6);
}


/* what L1 holds */

static void
ngx_http_helix_out_cache_gauges(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh)
{
    ngx_http_helix_cache_stats_t  cs;

    ngx_http_helix_cache_stats(hmcf, &cs);

    ngx_http_helix_out(o,
        "# HELP helixagent_cache_entries Answers held in the L1 zone.\n"
        "# TYPE helixagent_cache_entries gauge\n"
        "helixagent_cache_entries{tier=\"l1\"} %ui\n"
        "# HELP helixagent_cache_bytes Bytes of answers in the L1 zone.\n"
        "# TYPE helixagent_cache_bytes gauge\n"
        "helixagent_cache_bytes{tier=\"l1\"} %uz\n"
        "# HELP helixagent_cache_evictions_total Entries dropped to make "
        "room.\n# TYPE helixagent_cache_evictions_total counter\n"
        "helixagent_cache_evictions_total{tier=\"l1\"} %uL\n",
        cs.entries, cs.bytes, cs.evictions);
}


/* each provider: latency, tokens, errors, streams, breaker */

static void
ngx_http_helix_out_providers(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh)
{
    char                              labels[160];
    ngx_uint_t                        i, j;
    ngx_http_helix_provider_t        *p;
    ngx_http_helix_provider_state_t   st;

    p = hmcf->providers.elts;

    ngx_http_helix_out(o,
        "# HELP helixagent_provider_latency_seconds Time of successful "
        "provider calls.\n"
        "# TYPE helixagent_provider_latency_seconds histogram\n");

    for (i = 0; i < hmcf->providers.nelts; i++) {
        ngx_sprintf((u_char *) labels, "provider=\"%V\"%Z", &p[i].name);
        ngx_http_helix_out_hist(o, "helixagent_provider_latency_seconds",
                                labels, &sh->provider_latency[p[i].slot],
                                ngx_http_helix_metrics_time_bounds,
                                NGX_HTTP_HELIX_TIME_BKTS, 1e-6);
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_provider_tokens_total Tokens providers reported."
        "\n# TYPE helixagent_provider_tokens_total counter\n");

    for (i = 0; i < hmcf->providers.nelts; i++) {
        ngx_http_helix_out(o,
            "helixagent_provider_tokens_total{provider=\"%V\","
            "kind=\"prompt\"} %uA\n"
            "helixagent_provider_tokens_total{provider=\"%V\","
            "kind=\"completion\"} %uA\n",
            &p[i].name, sh->tokens[p[i].slot][0],
            &p[i].name, sh->tokens[p[i].slot][1]);
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_provider_errors_total Provider calls that failed "
        "or were not made, by reason.\n"
        "# TYPE helixagent_provider_errors_total counter\n");

    for (i = 0; i < hmcf->providers.nelts; i++) {
        for (j = 0; j < NGX_HTTP_HELIX_ERR_REASONS; j++) {
            ngx_http_helix_out(o,
                "helixagent_provider_errors_total{provider=\"%V\","
                "reason=\"%s\"} %uA\n", &p[i].name,
                ngx_http_helix_reasons[j], sh->errors[p[i].slot][j]);
        }
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_stream_first_frame_seconds Streams from a "
        "provider: time from the request to its first frame sent to the "
        "client (time to first token, as the client sees it).\n"
        "# TYPE helixagent_stream_first_frame_seconds histogram\n");

    for (i = 0; i < hmcf->providers.nelts; i++) {
        ngx_sprintf((u_char *) labels, "provider=\"%V\"%Z", &p[i].name);
        ngx_http_helix_out_hist(o, "helixagent_stream_first_frame_seconds",
                                labels, &sh->stream_first[p[i].slot],
                                ngx_http_helix_metrics_time_bounds,
                                NGX_HTTP_HELIX_TIME_BKTS, 1e-6);
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_streams_total Streams from a provider, by how "
        "they ended: completed, failed (after the first frame: the client "
        "got an error event), client_closed.\n"
        "# TYPE helixagent_streams_total counter\n");

    for (i = 0; i < hmcf->providers.nelts; i++) {
        for (j = 0; j < NGX_HTTP_HELIX_STREAM_OUTCOMES; j++) {
            ngx_http_helix_out(o,
                "helixagent_streams_total{provider=\"%V\",outcome=\"%s\"} "
                "%uA\n", &p[i].name, ngx_http_helix_stream_outcomes[j],
                sh->streams[p[i].slot][j]);
        }
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_provider_circuit_state Circuit breaker: 0 closed, "
        "1 open, 2 half-open.\n"
        "# TYPE helixagent_provider_circuit_state gauge\n");

    for (i = 0; i < hmcf->providers.nelts; i++) {
        ngx_http_helix_provider_state(hmcf, &p[i], &st);
        ngx_http_helix_out(o, "helixagent_provider_circuit_state"
                           "{provider=\"%V\"} %ui\n", &p[i].name, st.state);
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_provider_inflight Provider calls in flight.\n"
        "# TYPE helixagent_provider_inflight gauge\n");

    for (i = 0; i < hmcf->providers.nelts; i++) {
        ngx_http_helix_provider_state(hmcf, &p[i], &st);
        ngx_http_helix_out(o, "helixagent_provider_inflight"
                           "{provider=\"%V\"} %ui\n", &p[i].name,
                           st.inflight);
    }
}


/* Redis, refusals, costs, the completion log, PostgreSQL */

static void
ngx_http_helix_out_stores(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh)
{
    if (hmcf->redis.configured
        && (hmcf->cache.l2_enabled || hmcf->limit_redis))
    {
        ngx_http_helix_out(o,
            "# HELP helixagent_redis_connections Open Redis connections, all "
            "workers.\n# TYPE helixagent_redis_connections gauge\n"
            "helixagent_redis_connections %uA\n"
            "# HELP helixagent_redis_errors_total Redis failures by kind.\n"
            "# TYPE helixagent_redis_errors_total counter\n"
            "helixagent_redis_errors_total{kind=\"unreachable\"} %uA\n"
            "helixagent_redis_errors_total{kind=\"timeout\"} %uA\n"
            "helixagent_redis_errors_total{kind=\"error\"} %uA\n"
            "# HELP helixagent_redis_retries_total Commands sent again after "
            "a lost connection.\n"
            "# TYPE helixagent_redis_retries_total counter\n"
            "helixagent_redis_retries_total %uA\n",
            sh->redis_conns, sh->redis[NGX_HTTP_HELIX_REDIS_UNREACHABLE],
            sh->redis[NGX_HTTP_HELIX_REDIS_TIMEOUT],
            sh->redis[NGX_HTTP_HELIX_REDIS_ERROR],
            sh->redis[NGX_HTTP_HELIX_REDIS_RETRY]);

        ngx_http_helix_out_store(o, sh, NGX_HTTP_HELIX_STORE_REDIS);
    }

    ngx_http_helix_out(o,
        "# HELP helixagent_requests_rejected_total Requests turned away "
        "before any work: API key missing or unknown, or over a rate "
        "limit.\n"
        "# TYPE helixagent_requests_rejected_total counter\n"
        "helixagent_requests_rejected_total{reason=\"missing_api_key\"} %uA\n"
        "helixagent_requests_rejected_total{reason=\"invalid_api_key\"} %uA\n"
        "helixagent_requests_rejected_total{reason=\"rate_limit_requests\"} "
        "%uA\n"
        "helixagent_requests_rejected_total{reason=\"rate_limit_tokens\"} "
        "%uA\n",
        sh->rejected[NGX_HTTP_HELIX_REJECT_NO_KEY],
        sh->rejected[NGX_HTTP_HELIX_REJECT_BAD_KEY],
        sh->rejected[NGX_HTTP_HELIX_REJECT_REQUESTS],
        sh->rejected[NGX_HTTP_HELIX_REJECT_TOKENS]);

    ngx_http_helix_out_cost(o, hmcf, sh);

    if (hmcf->database.configured && hmcf->database.log_enabled) {
        ngx_http_helix_out(o,
            "# HELP helixagent_completion_log_rows_total Completion log "
            "rows: written to PostgreSQL, dropped (buffer full while "
            "PostgreSQL was away) or rejected by it.\n"
            "# TYPE helixagent_completion_log_rows_total counter\n"
            "helixagent_completion_log_rows_total{outcome=\"written\"} %uA\n"
            "helixagent_completion_log_rows_total{outcome=\"dropped\"} %uA\n"
            "helixagent_completion_log_rows_total{outcome=\"rejected\"} "
            "%uA\n",
            sh->log_rows[NGX_HTTP_HELIX_LOG_WRITTEN],
            sh->log_rows[NGX_HTTP_HELIX_LOG_DROPPED],
            sh->log_rows[NGX_HTTP_HELIX_LOG_REJECTED]);
    }

    if (hmcf->database.configured) {
        ngx_http_helix_out_db(o, hmcf, sh);
        ngx_http_helix_out_store(o, sh, NGX_HTTP_HELIX_STORE_DB);
    }
}


/*
 * What calls cost and what cache hits saved, in pricing.currency (the
 * counters hold micro-units: written as decimals, exactly)
 */

static void
ngx_http_helix_out_cost(ngx_http_helix_out_t *o,
    ngx_http_helix_main_conf_t *hmcf, ngx_http_helix_metrics_sh_t *sh)
{
    ngx_uint_t                     i, k, n;
    ngx_atomic_uint_t              v;
    ngx_http_helix_cost_series_t  *cs;

    static const char  *names[2] = { "cost_total", "cost_saved_total" };
    static const char  *help[2] = {
        "What provider calls cost",
        "What cache hits saved: the cost of the calls they stood in for"
    };

    if (hmcf->prices.nelts == 0) {
        return;
    }

    n = sh->cost_n;
    ngx_memory_barrier();

    for (k = 0; k < 2; k++) {
        ngx_http_helix_out(o,
            "# HELP helixagent_%s %s, in %V (pricing: in helix.yaml).\n"
            "# TYPE helixagent_%s counter\n",
            names[k], help[k], &hmcf->currency, names[k]);

        for (i = 0; i < n; i++) {
            cs = &sh->cost[i];
            v = k ? cs->saved : cs->cost;

            ngx_http_helix_out(o,
                "helixagent_%s{provider=\"%*s\",model=\"%*s\","
                "key=\"%*s\"} %uA.%06uA\n", names[k],
                (size_t) cs->len[0], cs->label[0],
                (size_t) cs->len[1], cs->label[1],
                (size_t) cs->len[2], cs->label[2],
                v / 1000000, v % 1000000);
        }
    }
}
