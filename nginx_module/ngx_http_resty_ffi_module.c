/*
 * ngx_http_resty_ffi_module: the nginx host of resty_ffi.
 *
 * Per worker, on first use, it creates a completion queue in the Rust core
 * (libresty_ffi.so), watches the queue's eventfd in the worker's event loop
 * and, when answers arrive, posts the dispatcher semaphore that
 * lua/resty_ffi.lua waits on. One wake-up per batch of answers.
 *
 * Only the Lua dispatcher ever touches per-call state: C posts a single
 * semaphore that Lua keeps alive for the worker's lifetime, so an aborted
 * request can never leave C with a dangling pointer.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "resty_ffi.h"


/* lua-nginx-module's public FFI interface (as declared by lua-resty-core). */
int ngx_http_lua_ffi_sema_post(void *sem, int n);

resty_ffi_sink *ngx_http_resty_ffi_worker_sink(void *sem, char *err,
    size_t err_len);
int ngx_http_resty_ffi_worker_has_posted_events(void);

static void ngx_http_resty_ffi_wake_handler(ngx_event_t *ev);
static void ngx_http_resty_ffi_exit_process(ngx_cycle_t *cycle);


typedef struct {
    resty_ffi_sink    *sink;
    ngx_connection_t  *conn;
    void              *dispatcher_sem;
} ngx_http_resty_ffi_worker_t;


static ngx_http_resty_ffi_worker_t  ngx_http_resty_ffi_worker;


static ngx_http_module_t  ngx_http_resty_ffi_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */
    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */
    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */
    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_resty_ffi_module = {
    NGX_MODULE_V1,
    &ngx_http_resty_ffi_module_ctx,        /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_resty_ffi_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void
ngx_http_resty_ffi_set_error(char *err, size_t err_len, const char *msg)
{
    if (err_len > 0) {
        ngx_cpystrn((u_char *) err, (u_char *) msg, err_len);
    }
}


/*
 * Called from Lua (FFI) in a worker. Returns the worker's completion queue,
 * creating it and registering its eventfd on first use; `sem` is the
 * dispatcher semaphore to post when answers arrive.
 */
resty_ffi_sink *
ngx_http_resty_ffi_worker_sink(void *sem, char *err, size_t err_len)
{
    int                            fd;
    ngx_connection_t              *c;
    ngx_http_resty_ffi_worker_t   *w = &ngx_http_resty_ffi_worker;

    if (w->sink != NULL) {
        w->dispatcher_sem = sem;
        return w->sink;
    }

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        ngx_http_resty_ffi_set_error(err, err_len,
                        "resty_ffi: runtimes can only be used in a worker");
        return NULL;
    }

    w->sink = resty_ffi_sink_new();
    if (w->sink == NULL) {
        ngx_http_resty_ffi_set_error(err, err_len,
                                     "resty_ffi: eventfd() failed");
        return NULL;
    }

    /* nginx closes the fd it watches: give it a duplicate of the sink's. */
    fd = dup(resty_ffi_sink_fd(w->sink));
    if (fd == -1) {
        goto failed;
    }

    c = ngx_get_connection(fd, ngx_cycle->log);
    if (c == NULL) {
        close(fd);
        goto failed;
    }

    c->read->handler = ngx_http_resty_ffi_wake_handler;
    c->read->log = ngx_cycle->log;

    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_close_connection(c);
        goto failed;
    }

    w->conn = c;
    w->dispatcher_sem = sem;

    return w->sink;

failed:

    resty_ffi_sink_free(w->sink);
    w->sink = NULL;
    ngx_http_resty_ffi_set_error(err, err_len,
                         "resty_ffi: cannot watch the completion eventfd");
    return NULL;
}


/*
 * Called from Lua (FFI): whether the worker has events queued to run after
 * the current one (woken coroutines, for example). A caller must not spin
 * for its answer while they wait.
 */
int
ngx_http_resty_ffi_worker_has_posted_events(void)
{
    return !ngx_queue_empty(&ngx_posted_events)
           || !ngx_queue_empty(&ngx_posted_next_events);
}


static void
ngx_http_resty_ffi_wake_handler(ngx_event_t *ev)
{
    ngx_http_resty_ffi_worker_t  *w = &ngx_http_resty_ffi_worker;

    resty_ffi_sink_acknowledge(w->sink);

    if (w->dispatcher_sem != NULL) {
        ngx_http_lua_ffi_sema_post(w->dispatcher_sem, 1);
    }
}


static void
ngx_http_resty_ffi_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_resty_ffi_worker_t  *w = &ngx_http_resty_ffi_worker;

    if (w->conn != NULL) {
        ngx_close_connection(w->conn);
        w->conn = NULL;
    }

    w->dispatcher_sem = NULL;

    if (w->sink != NULL) {
        resty_ffi_sink_free(w->sink);
        w->sink = NULL;
    }
}
