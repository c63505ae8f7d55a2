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
 * It also gives runtimes the worker's lua_shared_dict zones: the core's
 * resty_ffi_shdict_* functions call the ones registered here, from the
 * runtimes' own threads, straight into lua-nginx-module's public FFI
 * functions (those lua-resty-core calls). Why that is safe from a thread
 * other than the worker's, and what it costs: docs/SPEC.md, "Shared dicts".
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
int ngx_http_lua_ffi_shdict_get(void *zone, const unsigned char *key,
    size_t key_len, int *value_type, unsigned char **str_value_buf,
    size_t *str_value_len, double *num_value, int *user_flags,
    int get_stale, int *is_stale, char **errmsg);
int ngx_http_lua_ffi_shdict_incr(void *zone, const unsigned char *key,
    size_t key_len, double *value, char **err, int has_init,
    double init, long init_ttl, int *forcible);
int ngx_http_lua_ffi_shdict_store(void *zone, int op,
    const unsigned char *key, size_t key_len, int value_type,
    const unsigned char *str_value_buf, size_t str_value_len,
    double num_value, long exptime, int user_flags, char **errmsg,
    int *forcible);

/* lua-nginx-module's public C API for other modules (ngx_http_lua_api.h). */
ngx_shm_zone_t *ngx_http_lua_find_zone(u_char *name_data, size_t name_len);
extern ngx_module_t  ngx_http_lua_module;

/* Value types of the shdict FFI functions (Lua's type numbers). */
#define NGX_HTTP_RESTY_FFI_SHDICT_NIL     0
#define NGX_HTTP_RESTY_FFI_SHDICT_STRING  4


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
static ngx_int_t ngx_http_resty_ffi_init_module(ngx_cycle_t *cycle);
static int ngx_http_resty_ffi_shdict_get(const char *dict, const char *key,
    size_t key_len, char **val, size_t *val_len, int *flags);
static int ngx_http_resty_ffi_shdict_set(const char *dict, const char *key,
    size_t key_len, const char *val, size_t val_len, long exptime_ms,
    int flags);
static int ngx_http_resty_ffi_shdict_incr(const char *dict, const char *key,
    size_t key_len, double by, double init, long init_ttl_ms, double *out);
static int ngx_http_resty_ffi_shdict_delete(const char *dict, const char *key,
    size_t key_len);
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


/* The worker's lua_shared_dict zones, for runtimes (resty_ffi_shdict_*). */
static const resty_ffi_shdict_host  ngx_http_resty_ffi_shdict_host = {
    ngx_http_resty_ffi_shdict_get,
    ngx_http_resty_ffi_shdict_set,
    ngx_http_resty_ffi_shdict_incr,
    ngx_http_resty_ffi_shdict_delete
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
    ngx_http_resty_ffi_init_module,        /* init module */
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
 * Runs in the master once the zones exist (and in a single process); the
 * workers it forks inherit the registration. Registering again after a
 * reload changes nothing: the functions look zones up in the cycle of the
 * process that calls them.
 */
static ngx_int_t
ngx_http_resty_ffi_init_module(ngx_cycle_t *cycle)
{
    resty_ffi_shdict_host_set(&ngx_http_resty_ffi_shdict_host);
    return NGX_OK;
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
 * The zones' descriptions go with the cycle's pool when the worker exits:
 * runtimes lose the dicts first (this waits for the calls in them).
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

    resty_ffi_shdict_host_set(NULL);

    for (q = ngx_queue_head(&ngx_http_resty_ffi_vms);
         q != ngx_queue_sentinel(&ngx_http_resty_ffi_vms);
         q = ngx_queue_next(q))
    {
        ngx_http_resty_ffi_release(ngx_queue_data(q, ngx_http_resty_ffi_vm_t,
                                                  queue));
    }
}


/*
 * The lua_shared_dict zone `name` of this process's cycle, as lua-nginx-
 * module's functions take it; NULL if there is none. Called from runtime
 * threads: the worker's cycle and its list of zones do not change while it
 * runs, and exit_process unregisters these functions before they go.
 */
static void *
ngx_http_resty_ffi_shdict_zone(const char *name)
{
    size_t                     len;
    ngx_uint_t                 i;
    ngx_shm_zone_t            *zone;
    ngx_list_part_t           *part;

    len = ngx_strlen(name);
    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].shm.name.len == len
            && ngx_strncmp(zone[i].shm.name.data, name, len) == 0)
        {
            /* Names are unique; only lua-nginx-module's zones are dicts. */
            if (zone[i].tag != &ngx_http_lua_module) {
                return NULL;
            }

            return ngx_http_lua_find_zone((u_char *) name, len);
        }
    }
}


/*
 * lua-nginx-module reads nginx's cached time, which only the worker's event
 * loop refreshes; a runtime thread may run while the worker sleeps in
 * epoll_wait for seconds. nginx's time cache is made for several updaters
 * (ngx_time_update() takes a trylock and fills the next of 64 slots). An
 * update also formats nginx's five time strings: skip it while the cached
 * time is of the current millisecond, the unit lua-nginx-module's expiry
 * times are in.
 */
static void
ngx_http_resty_ffi_shdict_time(void)
{
    struct timeval   tv;
    ngx_time_t      *tp;

    ngx_gettimeofday(&tv);
    tp = ngx_timeofday();

    if (tp->sec == tv.tv_sec && tp->msec == (ngx_msec_t) (tv.tv_usec / 1000)) {
        return;
    }

    ngx_time_update();
}


static int
ngx_http_resty_ffi_shdict_get(const char *dict, const char *key,
    size_t key_len, char **val, size_t *val_len, int *flags)
{
    int      rc, type, user_flags, is_stale;
    char    *err, *copy;
    void    *zone;
    u_char   small[128], *buf;
    size_t   len;
    double   num;

    zone = ngx_http_resty_ffi_shdict_zone(dict);
    if (zone == NULL) {
        return RESTY_FFI_SHDICT_NO_DICT;
    }

    ngx_http_resty_ffi_shdict_time();

    /* Longer strings come back in a buffer lua-nginx-module malloc()ed. */
    buf = small;
    len = sizeof(small);
    err = NULL;
    rc = ngx_http_lua_ffi_shdict_get(zone, (u_char *) key, key_len, &type,
                                     &buf, &len, &num, &user_flags, 0,
                                     &is_stale, &err);
    if (rc != NGX_OK) {
        /* "value is a list", or malloc() failed */
        return err != NULL ? RESTY_FFI_SHDICT_WRONG_TYPE
                           : RESTY_FFI_SHDICT_NO_MEMORY;
    }

    if (type == NGX_HTTP_RESTY_FFI_SHDICT_NIL) {
        return 0;
    }

    if (type != NGX_HTTP_RESTY_FFI_SHDICT_STRING) {
        return RESTY_FFI_SHDICT_WRONG_TYPE;
    }

    if (buf == small) {
        copy = malloc(len > 0 ? len : 1);
        if (copy == NULL) {
            return RESTY_FFI_SHDICT_NO_MEMORY;
        }
        ngx_memcpy(copy, small, len);

    } else {
        copy = (char *) buf;
    }

    *val = copy;
    *val_len = len;

    if (flags != NULL) {
        *flags = user_flags;
    }

    return 1;
}


static int
ngx_http_resty_ffi_shdict_set(const char *dict, const char *key,
    size_t key_len, const char *val, size_t val_len, long exptime_ms,
    int flags)
{
    int    rc, forcible;
    char  *err;
    void  *zone;

    zone = ngx_http_resty_ffi_shdict_zone(dict);
    if (zone == NULL) {
        return RESTY_FFI_SHDICT_NO_DICT;
    }

    ngx_http_resty_ffi_shdict_time();

    err = NULL;
    rc = ngx_http_lua_ffi_shdict_store(zone, 0, (u_char *) key, key_len,
                                       NGX_HTTP_RESTY_FFI_SHDICT_STRING,
                                       (u_char *) val, val_len, 0,
                                       exptime_ms, flags, &err, &forcible);
    if (rc == NGX_OK) {
        return 0;
    }

    if (err != NULL && ngx_strcmp(err, "no memory") == 0) {
        return RESTY_FFI_SHDICT_NO_MEMORY;
    }

    return RESTY_FFI_SHDICT_BAD_ARGUMENT;
}


static int
ngx_http_resty_ffi_shdict_incr(const char *dict, const char *key,
    size_t key_len, double by, double init, long init_ttl_ms, double *out)
{
    int      rc, forcible;
    char    *err;
    void    *zone;
    double   value;

    zone = ngx_http_resty_ffi_shdict_zone(dict);
    if (zone == NULL) {
        return RESTY_FFI_SHDICT_NO_DICT;
    }

    ngx_http_resty_ffi_shdict_time();

    value = by;
    err = NULL;
    rc = ngx_http_lua_ffi_shdict_incr(zone, (u_char *) key, key_len, &value,
                                      &err, 1, init, init_ttl_ms, &forcible);
    if (rc == NGX_OK) {
        *out = value;
        return 0;
    }

    if (err != NULL && ngx_strcmp(err, "not a number") == 0) {
        return RESTY_FFI_SHDICT_WRONG_TYPE;
    }

    return RESTY_FFI_SHDICT_NO_MEMORY;
}


static int
ngx_http_resty_ffi_shdict_delete(const char *dict, const char *key,
    size_t key_len)
{
    int    forcible;
    char  *err;
    void  *zone;

    zone = ngx_http_resty_ffi_shdict_zone(dict);
    if (zone == NULL) {
        return RESTY_FFI_SHDICT_NO_DICT;
    }

    ngx_http_resty_ffi_shdict_time();

    err = NULL;
    (void) ngx_http_lua_ffi_shdict_store(zone, 0, (u_char *) key, key_len,
                                         NGX_HTTP_RESTY_FFI_SHDICT_NIL,
                                         NULL, 0, 0, 0, 0, &err, &forcible);
    return 0;
}
