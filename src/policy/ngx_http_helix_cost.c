/*
 * Copyright (C) helix authors
 *
 * Prices and costs (pricing: in helix.yaml).  A price is per million
 * tokens in micro-units of the currency; a call's cost is its usage times
 * the price of the provider that answered and the model it was asked
 * for, summed exactly in integers and rounded up to the micro-unit once.
 * A price names its provider or serves them all (a provider's own wins);
 * a model without a price of its own takes that of the longest model
 * name it begins with before a "-" (a dated version), and "*" serves the
 * models that have none.  Cached input (a provider's prompt cache:
 * OpenAI's cached_tokens, Anthropic's cache_read_input_tokens, Gemini's
 * cachedContentTokenCount) and Anthropic's cache writes
 * (cache_creation_input_tokens) have prices of their own.
 */


#include "ngx_http_helix.h"
#include "ngx_http_helix_cost.h"


#define NGX_HTTP_HELIX_COST_TAIL  4096


static int64_t ngx_http_helix_cost_number(u_char *p, u_char *last,
    const char *key, size_t len);


ngx_http_helix_price_t *
ngx_http_helix_cost_price(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *provider, ngx_str_t *model)
{
    ngx_uint_t               i;
    ngx_http_helix_price_t  *pr, *any, *dated, *star;

    pr = hmcf->prices.elts;
    any = NULL;
    dated = NULL;
    star = NULL;

    for (i = 0; i < hmcf->prices.nelts; i++) {

        if (pr[i].provider.len
            && (provider == NULL || pr[i].provider.len != provider->len
                || ngx_strncmp(pr[i].provider.data, provider->data,
                               provider->len) != 0))
        {
            continue;
        }

        if (pr[i].model.len == 1 && pr[i].model.data[0] == '*') {
            if (star == NULL || pr[i].provider.len) {
                star = &pr[i];
            }

            continue;
        }

        if (model == NULL || pr[i].model.len > model->len
            || ngx_strncmp(pr[i].model.data, model->data, pr[i].model.len)
               != 0)
        {
            continue;
        }

        if (pr[i].model.len < model->len) {
            /* a dated version of it: "gpt-4o" for "gpt-4o-2024-08-06" */

            if (model->data[pr[i].model.len] == '-'
                && (dated == NULL || dated->model.len < pr[i].model.len
                    || (dated->model.len == pr[i].model.len
                        && pr[i].provider.len)))
            {
                dated = &pr[i];
            }

            continue;
        }

        if (pr[i].provider.len) {
            /* this provider's own price wins */
            return &pr[i];
        }

        any = &pr[i];
    }

    return any ? any : (dated ? dated : star);
}


/*
 * sum(tokens x price) / 10^6, rounded up; tokens split into millions and
 * the rest so that no product overflows (prices are below 10^12)
 */

int64_t
ngx_http_helix_cost(ngx_http_helix_price_t *pr, ngx_http_helix_usage_t *u)
{
    int64_t     t[4], price[4], whole, rest;
    ngx_uint_t  i;

    if (pr == NULL) {
        return 0;
    }

    t[1] = ngx_min(ngx_max(u->cached, 0), ngx_max(u->prompt, 0));
    t[2] = ngx_min(ngx_max(u->cache_write, 0), ngx_max(u->prompt, 0) - t[1]);
    t[0] = ngx_max(u->prompt, 0) - t[1] - t[2];
    t[3] = ngx_max(u->output, 0);

    price[0] = pr->input;
    price[1] = pr->cached_input;
    price[2] = pr->cache_write;
    price[3] = pr->output;

    whole = 0;
    rest = 0;

    for (i = 0; i < 4; i++) {
        t[i] = ngx_min(t[i], (int64_t) NGX_MAX_INT32_VALUE);
        whole += t[i] / 1000000 * price[i];
        rest += t[i] % 1000000 * price[i];
    }

    return whole + (rest + 999999) / 1000000;
}


/*
 * Before the call, for a budget: the dearest price the model has, for
 * the prompt's estimate and max_tokens
 */

int64_t
ngx_http_helix_cost_estimate(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *model, int64_t prompt, int64_t output)
{
    int64_t                  c, max;
    ngx_uint_t               i;
    ngx_http_helix_usage_t   u;
    ngx_http_helix_price_t  *pr, *p;

    u.prompt = prompt;
    u.cached = 0;
    u.cache_write = 0;
    u.output = output;

    max = ngx_http_helix_cost(ngx_http_helix_cost_price(hmcf, NULL, model),
                              &u);

    pr = hmcf->prices.elts;

    for (i = 0; i < hmcf->prices.nelts; i++) {
        if (pr[i].provider.len == 0) {
            continue;
        }

        p = ngx_http_helix_cost_price(hmcf, &pr[i].provider, model);
        c = ngx_http_helix_cost(p, &u);
        max = ngx_max(max, c);
    }

    return max;
}


/* micro-units as a decimal: 1234567 -> "1.234567", -5 -> "-0.000005" */

u_char *
ngx_http_helix_cost_format(u_char *p, int64_t micro)
{
    if (micro < 0) {
        *p++ = '-';
        micro = -micro;
    }

    return ngx_sprintf(p, "%L.%06L", micro / 1000000, micro % 1000000);
}


/*
 * The cached counts of a provider's answer, from its text: usage ends
 * the answer in every format, so only its tail is read.  Not said: 0.
 */

void
ngx_http_helix_cost_cached_text(ngx_uint_t type, u_char *p, size_t len,
    ngx_http_helix_usage_t *u)
{
    u_char  *last;

    last = p + len;

    if (len > NGX_HTTP_HELIX_COST_TAIL) {
        p = last - NGX_HTTP_HELIX_COST_TAIL;
    }

    switch (type) {

    case NGX_HTTP_HELIX_OPENAI:
        u->cached = ngx_http_helix_cost_number(p, last, "\"cached_tokens\"",
                                       sizeof("\"cached_tokens\"") - 1);
        break;

    case NGX_HTTP_HELIX_ANTHROPIC:
        u->cached = ngx_http_helix_cost_number(p, last,
                                   "\"cache_read_input_tokens\"",
                                   sizeof("\"cache_read_input_tokens\"") - 1);
        u->cache_write = ngx_http_helix_cost_number(p, last,
                               "\"cache_creation_input_tokens\"",
                               sizeof("\"cache_creation_input_tokens\"") - 1);
        break;

    default:
        u->cached = ngx_http_helix_cost_number(p, last,
                                   "\"cachedContentTokenCount\"",
                                   sizeof("\"cachedContentTokenCount\"") - 1);
    }
}


/* the same, from a stream event's usage object (set only when said) */

void
ngx_http_helix_cost_cached_json(ngx_uint_t type, json_t *usage,
    ngx_http_helix_usage_t *u)
{
    json_t  *v;

    switch (type) {

    case NGX_HTTP_HELIX_OPENAI:
        v = json_object_get(json_object_get(usage, "prompt_tokens_details"),
                            "cached_tokens");
        if (json_is_integer(v)) {
            u->cached = json_integer_value(v);
        }

        break;

    case NGX_HTTP_HELIX_ANTHROPIC:
        v = json_object_get(usage, "cache_read_input_tokens");
        if (json_is_integer(v)) {
            u->cached = json_integer_value(v);
        }

        v = json_object_get(usage, "cache_creation_input_tokens");
        if (json_is_integer(v)) {
            u->cache_write = json_integer_value(v);
        }

        break;

    default:
        v = json_object_get(usage, "cachedContentTokenCount");
        if (json_is_integer(v)) {
            u->cached = json_integer_value(v);
        }
    }
}


/* the number after the last "key": in p..last, or 0 */

static int64_t
ngx_http_helix_cost_number(u_char *p, u_char *last, const char *key,
    size_t len)
{
    u_char   *k, *d;
    int64_t   n;

    for (k = last - len; k >= p; k--) {
        if (*k == '"' && ngx_memcmp(k, key, len) == 0) {
            break;
        }
    }

    if (k < p) {
        return 0;
    }

    for (d = k + len; d < last && (*d == ' ' || *d == ':'); d++) {
        /* void */
    }

    n = 0;

    while (d < last && *d >= '0' && *d <= '9' && n < NGX_MAX_INT32_VALUE) {
        n = n * 10 + (*d++ - '0');
    }

    return n;
}
