/*
 * A misbehaving-on-request runtime for the integration tests, written only
 * against the runtime C ABI. cfg: "init_rc=N" (libffi_init returns N), or
 * options separated by ',':
 *   "threads=N"            poll threads (default 1)
 *   "null_tag"             a NULL request is answered "NULL" (by default it
 *                          echoes as empty)
 *   "trace=<path>"         appends a line to <path> for each request polled
 *                          ("got <request>") and each late answer handed back
 *                          ("late <payload>"): tests wait on these instead of
 *                          sleeping (the last option: the path may hold ',')
 * Requests:
 *   "rc:<n>:<msg>"         answers rc n with msg (no response when msg is empty)
 *   "sleep:<ms>:<payload>" sleeps, then echoes payload
 *   "late:<ms>:<size>"     answers <size> bytes of 'x' after <ms> from a thread
 *                          of its own (the poll thread goes on at once), then
 *                          traces "late <size>"
 *   "gate:<path>:<payload>" waits until <path> exists (at most 60 s), then
 *                          echoes payload
 *   "cstr:<text>"          answers text as a NUL-terminated string (rsp_len 0)
 *   "answer:<rc>:<size>:<rsp_len>:<ms>"
 *                          after <ms>, answers rc and rsp_len with a malloc()ed
 *                          rsp of <size> bytes and a NUL (rsp NULL when <size>
 *                          is 0; the bytes are 'x' when at most 1 MiB, else
 *                          untouched)
 *   "libc:<size>:<rsp_len>"
 *                          answers rc 0 and rsp_len with <size> bytes 'y' and a
 *                          NUL, allocated by glibc's own malloc, looked up in a
 *                          handle on libc.so.6 (as jnr-ffi's load("c") and
 *                          Python's ctypes.CDLL("libc.so.6") do; on Envoy the
 *                          process's malloc is tcmalloc's)
 *   "never"                never answers (the task is kept, reachable, for the
 *                          life of the process, as a runtime that hangs would)
 *   anything else          echoed back unchanged
 */

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resty_ffi.h"


#define TRACE_MAX  4096
#define PATH_MAX_  1024


/* One runtime (one libffi_init), shared by its poll threads; the last
 * thread to leave frees it. */
typedef struct {
    void  *tq;
    int    null_tag;
    int    threads;
    char   trace[PATH_MAX_];   /* "" when not tracing */
} runtime_t;


/* One line "<event> <text>" appended to the trace file `path`, if any. */
static void
trace(const char *path, const char *event, const char *text, size_t len)
{
    int     fd;
    char    line[TRACE_MAX];
    size_t  n;

    if (path[0] == '\0') {
        return;
    }

    n = (size_t) snprintf(line, sizeof(line) - 1, "%s ", event);
    if (len > sizeof(line) - 2 - n) {
        len = sizeof(line) - 2 - n;
    }
    memcpy(line + n, text, len);
    n += len;
    line[n++] = '\n';

    /* One write with O_APPEND: lines of concurrent threads do not mix. */
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        if (write(fd, line, n) != (ssize_t) n) {
            /* a test waiting for this line fails on its own */
        }
        close(fd);
    }
}


static void
respond_copy(void *task, int rc, const char *data, size_t len)
{
    char  *rsp = NULL;

    if (len > 0) {
        rsp = malloc(len);
        memcpy(rsp, data, len);
    }

    ngx_http_lua_ffi_respond(task, rc, rsp, (int) len);
}


#define FILLED_MAX  (1 << 20)


/* "answer:<rc>:<size>:<rsp_len>:<ms>": a response exactly as described. */
static void
answer(void *task, char *spec)
{
    int     rc, rsp_len, ms;
    char   *rsp = NULL;
    size_t  size;

    rc = (int) strtol(spec, &spec, 10);
    size = strtoul(spec + 1, &spec, 10);
    rsp_len = (int) strtol(spec + 1, &spec, 10);
    ms = atoi(spec + 1);

    if (size > 0) {
        rsp = malloc(size + 1);
        if (rsp != NULL) {
            if (size <= FILLED_MAX) {
                memset(rsp, 'x', size);
            }
            rsp[size] = '\0';
        }
    }

    usleep(ms * 1000);
    ngx_http_lua_ffi_respond(task, rc, rsp, rsp_len);
}


static void *(*libc_malloc)(size_t);
static pthread_once_t  libc_once = PTHREAD_ONCE_INIT;


static void
find_libc_malloc(void)
{
    void  *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);

    *(void **) &libc_malloc = libc ? dlsym(libc, "malloc") : NULL;
}


/* "libc:<size>:<rsp_len>" */
static void
answer_libc(void *task, char *spec)
{
    int     rsp_len;
    char   *rsp;
    size_t  size;

    pthread_once(&libc_once, find_libc_malloc);
    if (libc_malloc == NULL) {
        respond_copy(task, 1, "no libc.so.6", 12);
        return;
    }

    size = strtoul(spec, &spec, 10);
    rsp_len = (int) strtol(spec + 1, NULL, 10);

    rsp = libc_malloc(size + 1);
    if (rsp != NULL) {
        memset(rsp, 'y', size);
        rsp[size] = '\0';
    }

    ngx_http_lua_ffi_respond(task, 0, rsp, rsp_len);
}


typedef struct {
    void    *task;
    int      ms;
    size_t   size;
    char     trace[PATH_MAX_];
} late_t;


static void *
answer_late(void *arg)
{
    late_t  *late = arg;
    char    *rsp = NULL;
    char     size[32];

    usleep(late->ms * 1000);
    if (late->size > 0) {
        rsp = malloc(late->size);
        if (rsp != NULL) {
            memset(rsp, 'x', late->size);
        }
    }
    ngx_http_lua_ffi_respond(late->task, 0, rsp, rsp ? (int) late->size : 0);
    snprintf(size, sizeof(size), "%zu", late->size);
    trace(late->trace, "late", size, strlen(size));
    free(late);
    return NULL;
}


/* "late:<ms>:<size>": a thread of its own answers after <ms>. */
static void
late(runtime_t *rt, void *task, char *spec)
{
    late_t     *late;
    pthread_t   tid;

    late = malloc(sizeof(late_t));
    if (late == NULL) {
        ngx_http_lua_ffi_respond(task, 1, NULL, 0);
        return;
    }
    late->task = task;
    memcpy(late->trace, rt->trace, sizeof(late->trace));
    late->ms = (int) strtol(spec, &spec, 10);
    late->size = *spec == ':' ? strtoul(spec + 1, NULL, 10) : 0;

    if (pthread_create(&tid, NULL, answer_late, late) != 0) {
        free(late);
        ngx_http_lua_ffi_respond(task, 1, NULL, 0);
        return;
    }
    pthread_detach(tid);
}


/* "gate:<path>:<payload>": echoes payload once <path> exists. */
static void
gate(void *task, char *req, int len)
{
    int          i;
    char        *sep, path[1024];
    struct stat  st;

    sep = memchr(req, ':', len);
    if (sep == NULL || (size_t) (sep - req) >= sizeof(path)) {
        respond_copy(task, 1, "bad gate", 8);
        return;
    }
    memcpy(path, req, sep - req);
    path[sep - req] = '\0';

    for (i = 0; i < 60000 && stat(path, &st) != 0; i++) {
        usleep(1000);
    }
    respond_copy(task, 0, sep + 1, len - (sep + 1 - req));
}


/* Tasks never answered, kept where a leak checker sees them. */
static pthread_mutex_t   never_lock = PTHREAD_MUTEX_INITIALIZER;
static void            **never_tasks;
static size_t            never_count, never_cap;


static void
keep_forever(void *task)
{
    void  **grown;

    pthread_mutex_lock(&never_lock);
    if (never_count == never_cap) {
        never_cap = never_cap ? never_cap * 2 : 16;
        grown = realloc(never_tasks, never_cap * sizeof(void *));
        if (grown == NULL) {
            pthread_mutex_unlock(&never_lock);
            return;
        }
        never_tasks = grown;
    }
    never_tasks[never_count++] = task;
    pthread_mutex_unlock(&never_lock);
}


static void
handle(runtime_t *rt, void *task)
{
    int          len;
    char        *req, *sep;
    const char  *msg;

    req = ngx_http_lua_ffi_get_req(task, &len);

    trace(rt->trace, "got", req ? req : "", (size_t) len);

    if (req == NULL && rt->null_tag) {
        respond_copy(task, 0, "NULL", 4);
        return;
    }

    if (len > 3 && strncmp(req, "rc:", 3) == 0) {
        sep = strchr(req + 3, ':');
        msg = sep ? sep + 1 : "";
        respond_copy(task, atoi(req + 3), msg, strlen(msg));
        return;
    }

    if (len > 6 && strncmp(req, "sleep:", 6) == 0) {
        sep = strchr(req + 6, ':');
        usleep(atoi(req + 6) * 1000);
        msg = sep ? sep + 1 : "";
        respond_copy(task, 0, msg, len - (msg - req));
        return;
    }

    if (len > 7 && strncmp(req, "answer:", 7) == 0) {
        answer(task, req + 7);
        return;
    }

    if (len > 5 && strncmp(req, "libc:", 5) == 0) {
        answer_libc(task, req + 5);
        return;
    }

    if (len > 5 && strncmp(req, "late:", 5) == 0) {
        late(rt, task, req + 5);
        return;
    }

    if (len > 5 && strncmp(req, "gate:", 5) == 0) {
        gate(task, req + 5, len - 5);
        return;
    }

    if (len >= 5 && strncmp(req, "cstr:", 5) == 0) {
        ngx_http_lua_ffi_respond(task, 0, strdup(req + 5), 0);
        return;
    }

    if (len == 5 && strcmp(req, "never") == 0) {
        keep_forever(task);
        return;
    }

    respond_copy(task, 0, req, len);
}


static void *
serve(void *arg)
{
    void       *task;
    runtime_t  *rt = arg;

    while ((task = ngx_http_lua_ffi_task_poll(rt->tq)) != NULL) {
        handle(rt, task);
    }

    if (__atomic_sub_fetch(&rt->threads, 1, __ATOMIC_ACQ_REL) == 0) {
        free(rt);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    int          i, threads = 1;
    size_t       n;
    pthread_t    tid;
    runtime_t   *rt;
    const char  *opt;

    if (cfg != NULL && strncmp(cfg, "init_rc=", 8) == 0) {
        return atoi(cfg + 8);
    }

    rt = calloc(1, sizeof(runtime_t));
    if (rt == NULL) {
        return 1;
    }
    rt->tq = tq;

    for (opt = cfg; opt != NULL && *opt != '\0'; opt = strchr(opt, ',')) {
        if (*opt == ',') {
            opt++;
        }
        if (strncmp(opt, "threads=", 8) == 0) {
            threads = atoi(opt + 8);

        } else if (strncmp(opt, "null_tag", 8) == 0) {
            rt->null_tag = 1;

        } else if (strncmp(opt, "trace=", 6) == 0) {
            n = strlen(opt + 6);
            if (n >= sizeof(rt->trace)) {
                free(rt);
                return 3;
            }
            memcpy(rt->trace, opt + 6, n + 1);
            break;
        }
    }

    if (threads < 1) {
        free(rt);
        return 2;
    }

    /* Counted before any thread starts: an early one may leave at once. */
    rt->threads = threads;
    for (i = 0; i < threads; i++) {
        if (pthread_create(&tid, NULL, serve, rt) != 0) {
            /* the threads started keep rt; those that did not never leave */
            return 1;
        }
        pthread_detach(tid);
    }

    return 0;
}
