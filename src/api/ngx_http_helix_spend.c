/*
 * Copyright (C) helix authors
 *
 * What was spent, for the admin token: GET /v1/admin/spend (sums of the
 * completion log's cost column, by model, provider, key or day, over a
 * key and a time range) and GET /v1/admin/keys/{name} (a key's limits
 * and budgets: amount, spent, when the period resets).
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_pg.h"
#include "ngx_http_helix_auth.h"
#include "ngx_http_helix_cost.h"
#include "ngx_http_helix_budget.h"
#include "ngx_http_helix_spend.h"


static ngx_int_t ngx_http_helix_spend_admin(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_spend_arg(ngx_http_request_t *r,
    char *name, size_t len, ngx_str_t *value);
static void ngx_http_helix_spend_done(ngx_http_helix_pg_query_t *q,
    PGresult *res);
static json_t *ngx_http_helix_spend_money(ngx_pool_t *pool, json_t *o,
    const char *name, int64_t micro);
static void ngx_http_helix_admin_keys_answer(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_admin_keys_send(ngx_http_request_t *r);
static json_t *ngx_http_helix_spend_time(time_t t);


static ngx_http_helix_pg_stmt_t  ngx_http_helix_spend_stmt = {
    "helix_spend",
    "SELECT CASE $4::text WHEN 'model' THEN model "
    "WHEN 'provider' THEN provider_id WHEN 'key' THEN api_key_name "
    "WHEN 'day' THEN to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') "
    "END, count(*), coalesce(sum(cost), 0)::bigint, count(cost), "
    "coalesce(sum(prompt_tokens), 0)::bigint, "
    "coalesce(sum(completion_tokens), 0)::bigint "
    "FROM completions "
    "WHERE ($1::text IS NULL OR api_key_name = $1) "
    "AND ($2::timestamptz IS NULL OR created_at >= $2::timestamptz) "
    "AND ($3::timestamptz IS NULL OR created_at < $3::timestamptz) "
    "GROUP BY 1 ORDER BY 1",
    4, 0, 0
};


ngx_int_t
ngx_http_helix_spend_handler(ngx_http_request_t *r)
{
    u_char                      *p;
    ngx_int_t                    rc;
    ngx_str_t                    params[4];
    ngx_uint_t                   i;
    ngx_http_helix_main_conf_t  *hmcf;

    rc = ngx_http_helix_spend_admin(r);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (ngx_http_helix_spend_arg(r, "key", 3, &params[0]) != NGX_OK
        || ngx_http_helix_spend_arg(r, "from", 4, &params[1]) != NGX_OK
        || ngx_http_helix_spend_arg(r, "to", 2, &params[2]) != NGX_OK
        || ngx_http_helix_spend_arg(r, "group_by", 8, &params[3]) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* times: ISO 8601 dates or instants, nothing PostgreSQL reads else */

    for (i = 1; i < 3; i++) {
        if (params[i].data == NULL) {
            continue;
        }

        for (p = params[i].data; p < params[i].data + params[i].len; p++) {
            if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == ':'
                  || *p == 'T' || *p == 'Z' || *p == '.' || *p == '+'))
            {
                break;
            }
        }

        if (params[i].len == 0 || params[i].len > 40
            || p < params[i].data + params[i].len)
        {
            return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_value",
                                             i == 1 ? "from" : "to",
                                             "\"%s\" must be an ISO 8601 "
                                             "date or time, like "
                                             "2025-01-31 or "
                                             "2025-01-31T12:00:00Z",
                                             i == 1 ? "from" : "to");
        }
    }

    if (params[3].data
        && !(params[3].len == 5
             && ngx_strncmp(params[3].data, "model", 5) == 0)
        && !(params[3].len == 8
             && ngx_strncmp(params[3].data, "provider", 8) == 0)
        && !(params[3].len == 3 && ngx_strncmp(params[3].data, "key", 3) == 0)
        && !(params[3].len == 3 && ngx_strncmp(params[3].data, "day", 3) == 0))
    {
        return ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_value", "group_by",
                                         "\"group_by\" must be model, "
                                         "provider, key or day");
    }

    if (!hmcf->database.configured || !hmcf->database.log_enabled) {
        return ngx_http_helix_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "database_unavailable", NULL,
                                         "spend comes from the completion "
                                         "log: configure database: (and "
                                         "its completion_log)");
    }

    if (ngx_http_helix_pg_query(r->pool, &ngx_http_helix_spend_stmt, params,
                                ngx_http_helix_spend_done, r)
        == NULL)
    {
        return ngx_http_helix_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "database_unavailable", NULL,
                                         "PostgreSQL is unreachable");
    }

    r->main->count++;

    return NGX_DONE;
}


/* the admin token, on GET: NGX_DECLINED, or the error sent (its rc) */

static ngx_int_t
ngx_http_helix_spend_admin(ngx_http_request_t *r)
{
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_helix_auth_admin(r)) {
        return NGX_DECLINED;
    }

    if (r->headers_in.authorization == NULL) {
        return ngx_http_helix_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                         "missing_admin_token", NULL,
                                         "the admin API needs "
                                         "\"Authorization: Bearer "
                                         "<admin token>\"");
    }

    return ngx_http_helix_send_error(r, NGX_HTTP_FORBIDDEN,
                                     "invalid_admin_token", NULL,
                                     "wrong admin token (or none in "
                                     "helix.yaml admin.token)");
}


/* a query argument, unescaped; data NULL when absent or empty */

static ngx_int_t
ngx_http_helix_spend_arg(ngx_http_request_t *r, char *name, size_t len,
    ngx_str_t *value)
{
    u_char     *dst, *src;
    ngx_str_t   v;

    value->data = NULL;
    value->len = 0;

    if (ngx_http_arg(r, (u_char *) name, len, &v) != NGX_OK || v.len == 0) {
        return NGX_OK;
    }

    dst = ngx_pnalloc(r->pool, v.len);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    value->data = dst;
    src = v.data;

    ngx_unescape_uri(&dst, &src, v.len, NGX_UNESCAPE_URI);

    value->len = dst - value->data;

    if (value->len == 0) {
        value->data = NULL;
    }

    return NGX_OK;
}


static void
ngx_http_helix_spend_done(ngx_http_helix_pg_query_t *q, PGresult *res)
{
    int                          i, n;
    char                        *v;
    json_t                      *out, *groups, *g, *name;
    int64_t                      sums[5], x;
    ngx_int_t                    rc;
    ngx_str_t                    body, arg;
    ngx_uint_t                   k;
    ngx_http_request_t          *r;
    ngx_http_helix_main_conf_t  *hmcf;

    static const char  *fields[] = { "requests", NULL, "priced_requests",
                                     "prompt_tokens", "completion_tokens" };
    static const char  *args[] = { "key", "from", "to", "group_by" };

    r = q->data;
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (res == NULL) {
        if (q->rejected && q->sqlstate[0] == '2' && q->sqlstate[1] == '2') {
            rc = ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_value", NULL,
                                           "\"from\" or \"to\" is not a "
                                           "date or time PostgreSQL "
                                           "reads");
        } else {
            rc = ngx_http_helix_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "database_unavailable", NULL,
                                           "the completion log could not "
                                           "be read: %s",
                                           q->error ? q->error : "error");
        }

        ngx_http_finalize_request(r, rc);
        return;
    }

    out = json_object();
    groups = json_array();

    if (out == NULL || groups == NULL
        || ngx_http_helix_json_pool(r->pool, out) != NGX_OK
        || json_object_set_new(out, "object", json_string("spend")) != 0
        || json_object_set_new(out, "currency",
                               json_stringn((char *) hmcf->currency.data,
                                            hmcf->currency.len))
           != 0)
    {
        json_decref(groups);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    for (k = 0; k < 4; k++) {
        (void) ngx_http_helix_spend_arg(r, (char *) args[k],
                                        ngx_strlen(args[k]), &arg);
        (void) json_object_set_new(out, args[k],
                                   arg.data ? json_stringn((char *) arg.data,
                                                           arg.len)
                                            : json_null());
    }

    ngx_memzero(sums, sizeof(sums));

    n = PQntuples(res);

    for (i = 0; i < n && PQnfields(res) == 6; i++) {
        g = json_object();
        if (g == NULL) {
            break;
        }

        name = PQgetisnull(res, i, 0) ? json_null()
               : json_string(ngx_http_helix_pg_value(res, i, 0));

        (void) json_object_set_new(g, "name", name);

        for (k = 0; k < 5; k++) {
            v = ngx_http_helix_pg_value(res, i, (int) k + 1);
            x = ngx_atoof((u_char *) v, ngx_strlen(v));
            x = ngx_max(x, 0);
            sums[k] += x;

            if (k == 1) {
                (void) ngx_http_helix_spend_money(r->pool, g, "cost", x);

            } else {
                (void) json_object_set_new(g, fields[k], json_integer(x));
            }
        }

        if (json_array_append_new(groups, g) != 0) {
            break;
        }
    }

    for (k = 0; k < 5; k++) {
        if (k == 1) {
            (void) ngx_http_helix_spend_money(r->pool, out, "cost", sums[1]);

        } else {
            (void) json_object_set_new(out, fields[k], json_integer(sums[k]));
        }
    }

    (void) json_object_set_new(out, "groups", groups);

    if (ngx_http_helix_json_dump(r->pool, out, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_finalize_request(r, ngx_http_helix_send_json(r, NGX_HTTP_OK,
                                                          &body));
}


/* "cost": "0.012000" and "cost_micro": 12000 */

static json_t *
ngx_http_helix_spend_money(ngx_pool_t *pool, json_t *o, const char *name,
    int64_t micro)
{
    u_char  *p, key[32];
    u_char   buf[NGX_HTTP_HELIX_MONEY_LEN];

    p = ngx_http_helix_cost_format(buf, micro);

    (void) json_object_set_new(o, name, json_stringn((char *) buf, p - buf));

    *ngx_sprintf(key, "%s_micro", name) = '\0';
    (void) json_object_set_new(o, (char *) key, json_integer(micro));

    return o;
}


ngx_int_t
ngx_http_helix_admin_keys_handler(ngx_http_request_t *r)
{
    u_char                      *p, *dst, *src;
    ngx_int_t                    rc;
    ngx_str_t                    name;
    ngx_uint_t                   i;
    ngx_http_helix_api_key_t    *key;
    ngx_http_helix_main_conf_t  *hmcf;

    rc = ngx_http_helix_spend_admin(r);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    /* the name is the last part of the path */

    p = r->uri.data + r->uri.len;

    while (p > r->uri.data && p[-1] != '/') {
        p--;
    }

    name.len = r->uri.data + r->uri.len - p;
    name.data = ngx_pnalloc(r->pool, name.len + 1);
    if (name.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    dst = name.data;
    src = p;
    ngx_unescape_uri(&dst, &src, name.len, 0);
    name.len = dst - name.data;

    key = hmcf->api_keys.elts;

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        if (key[i].name.len == name.len
            && ngx_strncmp(key[i].name.data, name.data, name.len) == 0)
        {
            break;
        }
    }

    if (i == hmcf->api_keys.nelts || name.len == 0) {
        return ngx_http_helix_send_error(r, NGX_HTTP_NOT_FOUND,
                                         "key_not_found", NULL,
                                         "no API key is named \"%V\"",
                                         &name);
    }

    ngx_http_set_ctx(r, &key[i], ngx_http_helix_module);

    rc = ngx_http_helix_budget_status(r, &key[i],
                                      ngx_http_helix_admin_keys_answer);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_AGAIN) {
        r->main->count++;
        return NGX_DONE;
    }

    return ngx_http_helix_admin_keys_send(r);
}


static void
ngx_http_helix_admin_keys_answer(ngx_http_request_t *r)
{
    ngx_http_finalize_request(r, ngx_http_helix_admin_keys_send(r));
}


static ngx_int_t
ngx_http_helix_admin_keys_send(ngx_http_request_t *r)
{
    json_t                         *out, *budgets, *b, *limits;
    ngx_str_t                       body;
    ngx_uint_t                      i, n;
    ngx_http_helix_api_key_t       *key;
    ngx_http_helix_main_conf_t     *hmcf;
    ngx_http_helix_budget_state_t   st[2];

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    key = ngx_http_get_module_ctx(r, ngx_http_helix_module);

    out = json_object();
    if (out == NULL || ngx_http_helix_json_pool(r->pool, out) != NGX_OK) {
        json_decref(out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    budgets = json_array();
    limits = json_object();

    (void) json_object_set_new(out, "object", json_string("api_key"));
    (void) json_object_set_new(out, "name",
                               json_stringn((char *) key->name.data,
                                            key->name.len));
    (void) json_object_set_new(out, "tenant",
                               json_stringn((char *) key->tenant.data,
                                            key->tenant.len));
    (void) json_object_set_new(out, "currency",
                               json_stringn((char *) hmcf->currency.data,
                                            hmcf->currency.len));
    (void) json_object_set_new(limits, "requests_per_minute",
                        json_integer(key->limits.requests_per_minute));
    (void) json_object_set_new(limits, "tokens_per_minute",
                        json_integer(key->limits.tokens_per_minute));
    (void) json_object_set_new(limits, "unlimited",
                               json_boolean(key->unlimited));
    (void) json_object_set_new(out, "limits", limits);

    n = ngx_http_helix_budget_states(r, st);

    for (i = 0; i < n; i++) {
        b = json_object();
        if (b == NULL) {
            break;
        }

        (void) json_object_set_new(b, "scope",
                                   json_string(st[i].id.data[0] == 'k'
                                               ? "key" : "tenant"));
        (void) json_object_set_new(b, "name",
                                   json_stringn((char *) st[i].id.data + 2,
                                                st[i].id.len - 2));
        (void) json_object_set_new(b, "period",
                                   json_string(st[i].conf->period
                                               == NGX_HTTP_HELIX_BUDGET_DAY
                                               ? "day" : "month"));
        (void) ngx_http_helix_spend_money(r->pool, b, "amount",
                                          st[i].conf->amount);
        (void) ngx_http_helix_spend_money(r->pool, b, "spent", st[i].spent);
        (void) ngx_http_helix_spend_money(r->pool, b, "remaining",
                                ngx_max(st[i].conf->amount - st[i].spent, 0));
        (void) json_object_set_new(b, "period_start",
                                   ngx_http_helix_spend_time(st[i].start));
        (void) json_object_set_new(b, "resets_at",
                                   ngx_http_helix_spend_time(st[i].reset));

        (void) json_array_append_new(budgets, b);
    }

    (void) json_object_set_new(out, "budgets", budgets);

    if (ngx_http_helix_json_dump(r->pool, out, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_helix_send_json(r, NGX_HTTP_OK, &body);
}


static json_t *
ngx_http_helix_spend_time(time_t t)
{
    u_char    *p, buf[sizeof("1970-01-01T00:00:00Z")];
    ngx_tm_t   tm;

    ngx_gmtime(t, &tm);

    p = ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02dZ", tm.ngx_tm_year,
                    tm.ngx_tm_mon, tm.ngx_tm_mday, tm.ngx_tm_hour,
                    tm.ngx_tm_min, tm.ngx_tm_sec);

    return json_stringn((char *) buf, p - buf);
}
