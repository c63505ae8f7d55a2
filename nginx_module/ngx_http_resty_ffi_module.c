/*
 * ngx_http_resty_ffi_module: the nginx host of resty_ffi.
 *
 * Each Lua VM of a worker (one per worker, or one per request with
 * `lua_code_cache off`) opens a completion queue of its own in the Rust core
 * (libresty_ffi.so). C watches the queue's eventfd in the worker's event loop
 * and, when answers arrive, posts that VM's dispatcher semaphore, which
 * lua/resty_ffi.lua waits on. One wake-up per batch of answers; answers never
 * reach another VM.
 *
 * Only the Lua dispatcher ever touches per-call state. C posts one semaphore
 * per VM, which Lua keeps alive until it closes the queue (the finalizer of
 * the VM's handle, run at the latest when the VM is closed), so C never posts
 * a semaphore that may be freed.
 *
 * Runtime log messages (resty_ffi_log) wait in the core's log queue; the
 * worker watches its eventfd and writes them with ngx_log_error(), so
 * error_log's level, file and rotation (reopen, USR1) apply to them. A
 * runtime thread never writes the log itself.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "resty_ffi.h"


/* lua-nginx-module's public FFI interface (as declared by lua-resty-core). */
int ngx_http_lua_ffi_sema_post(void *sem, int n);


typedef struct {
    ngx_queue_t        queue;
    resty_ffi_sink    *sink;
    ngx_connection_t  *conn;
    void              *dispatcher_sem;
} ngx_http_resty_ffi_vm_t;


ngx_http_resty_ffi_vm_t *ngx_http_resty_ffi_open(void *sem, char *err,
    size_t err_len);
resty_ffi_sink *ngx_http_resty_ffi_sink(ngx_http_resty_ffi_vm_t *vm);
void ngx_http_resty_ffi_close(ngx_http_resty_ffi_vm_t *vm);
int ngx_http_resty_ffi_worker_has_posted_events(void);

static void ngx_http_resty_ffi_wake_handler(ngx_event_t *ev);
static void ngx_http_resty_ffi_release(ngx_http_resty_ffi_vm_t *vm);
static ngx_int_t ngx_http_resty_ffi_init_process(ngx_cycle_t *cycle);
static void ngx_http_resty_ffi_exit_process(ngx_cycle_t *cycle);
static void ngx_http_resty_ffi_log_handler(ngx_event_t *ev);
static void ngx_http_resty_ffi_log_write(void *ctx, int level,
    const char *msg, size_t len);


/* The connection watching the core's log eventfd, in a worker. */
static ngx_connection_t  *ngx_http_resty_ffi_log_conn;


/* The queues of the worker's Lua VMs that are still open. */
static ngx_queue_t  ngx_http_resty_ffi_vms = {
    &ngx_http_resty_ffi_vms, &ngx_http_resty_ffi_vms
};


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
    ngx_http_resty_ffi_init_process,       /* init process */
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
 * Called from Lua (FFI) in a worker, once per Lua VM: opens the VM's
 * completion queue and registers its eventfd; `sem` is the dispatcher
 * semaphore to post when answers arrive. Close it with
 * ngx_http_resty_ffi_close().
 */
ngx_http_resty_ffi_vm_t *
ngx_http_resty_ffi_open(void *sem, char *err, size_t err_len)
{
    int                       fd;
    ngx_connection_t         *c;
    ngx_http_resty_ffi_vm_t  *vm;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        ngx_http_resty_ffi_set_error(err, err_len,
                        "resty_ffi: runtimes can only be used in a worker");
        return NULL;
    }

    vm = ngx_calloc(sizeof(ngx_http_resty_ffi_vm_t), ngx_cycle->log);
    if (vm == NULL) {
        ngx_http_resty_ffi_set_error(err, err_len, "resty_ffi: out of memory");
        return NULL;
    }

    vm->sink = resty_ffi_sink_new();
    if (vm->sink == NULL) {
        ngx_free(vm);
        ngx_http_resty_ffi_set_error(err, err_len,
                                     "resty_ffi: eventfd() failed");
        return NULL;
    }

    /* nginx closes the fd it watches: give it a duplicate of the sink's. */
    fd = dup(resty_ffi_sink_fd(vm->sink));
    if (fd == -1) {
        goto failed;
    }

    c = ngx_get_connection(fd, ngx_cycle->log);
    if (c == NULL) {
        close(fd);
        goto failed;
    }

    c->data = vm;
    c->read->handler = ngx_http_resty_ffi_wake_handler;
    c->read->log = ngx_cycle->log;

    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_close_connection(c);
        goto failed;
    }

    vm->conn = c;
    vm->dispatcher_sem = sem;
    ngx_queue_insert_tail(&ngx_http_resty_ffi_vms, &vm->queue);

    return vm;

failed:

    resty_ffi_sink_free(vm->sink);
    ngx_free(vm);
    ngx_http_resty_ffi_set_error(err, err_len,
                         "resty_ffi: cannot watch the completion eventfd");
    return NULL;
}


/* Called from Lua (FFI): the completion queue of an open VM handle. */
resty_ffi_sink *
ngx_http_resty_ffi_sink(ngx_http_resty_ffi_vm_t *vm)
{
    return vm->sink;
}


/*
 * Called from Lua (FFI), by the finalizer of the VM's handle: answers still
 * to come are freed by the core, the semaphore is never posted again.
 */
void
ngx_http_resty_ffi_close(ngx_http_resty_ffi_vm_t *vm)
{
    ngx_http_resty_ffi_release(vm);
    ngx_queue_remove(&vm->queue);
    ngx_free(vm);
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
    ngx_connection_t         *c = ev->data;
    ngx_http_resty_ffi_vm_t  *vm = c->data;

    resty_ffi_sink_acknowledge(vm->sink);
    ngx_http_lua_ffi_sema_post(vm->dispatcher_sem, 1);
}


static void
ngx_http_resty_ffi_release(ngx_http_resty_ffi_vm_t *vm)
{
    if (vm->conn != NULL) {
        ngx_close_connection(vm->conn);
        vm->conn = NULL;
    }

    vm->dispatcher_sem = NULL;

    if (vm->sink != NULL) {
        resty_ffi_sink_free(vm->sink);
        vm->sink = NULL;
    }
}


/*
 * Takes the process's runtime log (one consumer per process: a worker, or
 * the single process with master_process off). Failing to watch it is not
 * fatal: runtime log messages are then dropped (and counted).
 */
static ngx_int_t
ngx_http_resty_ffi_init_process(ngx_cycle_t *cycle)
{
    int                core_fd, fd;
    ngx_connection_t  *c;

    core_fd = resty_ffi_log_use_eventfd();
    if (core_fd == -1) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "resty_ffi: runtime log messages cannot reach "
                      "the error log in this process");
        return NGX_OK;
    }

    /* nginx closes the fd it watches: give it a duplicate of the core's. */
    fd = dup(core_fd);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "resty_ffi: dup() of the log eventfd failed");
        return NGX_OK;
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        close(fd);
        return NGX_OK;
    }

    c->read->handler = ngx_http_resty_ffi_log_handler;
    c->read->log = cycle->log;

    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_close_connection(c);
        return NGX_OK;
    }

    ngx_http_resty_ffi_log_conn = c;

    /* Messages logged before the eventfd was watched. */
    ngx_http_resty_ffi_log_handler(c->read);

    return NGX_OK;
}


#define NGX_HTTP_RESTY_FFI_LOG_BATCH  256

static void
ngx_http_resty_ffi_log_handler(ngx_event_t *ev)
{
    while (resty_ffi_log_drain(ngx_http_resty_ffi_log_write, NULL,
                               NGX_HTTP_RESTY_FFI_LOG_BATCH)
           == NGX_HTTP_RESTY_FFI_LOG_BATCH)
    {
        /* void */
    }
}


/* Levels are nginx's (1 emerg .. 8 debug); the core clamps them. */
static void
ngx_http_resty_ffi_log_write(void *ctx, int level, const char *msg,
    size_t len)
{
    ngx_log_error((ngx_uint_t) level, ngx_cycle->log, 0, "%*s", len, msg);
}


/*
 * The worker's connections must be closed before it exits. The handles stay
 * allocated: Lua's finalizers close them when the VMs are closed, later.
 */
static void
ngx_http_resty_ffi_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t  *q;

    if (ngx_http_resty_ffi_log_conn != NULL) {
        ngx_http_resty_ffi_log_handler(ngx_http_resty_ffi_log_conn->read);
        ngx_close_connection(ngx_http_resty_ffi_log_conn);
        ngx_http_resty_ffi_log_conn = NULL;
    }

    for (q = ngx_queue_head(&ngx_http_resty_ffi_vms);
         q != ngx_queue_sentinel(&ngx_http_resty_ffi_vms);
         q = ngx_queue_next(q))
    {
        ngx_http_resty_ffi_release(ngx_queue_data(q, ngx_http_resty_ffi_vm_t,
                                                  queue));
    }
}
