/*
 * A misbehaving-on-request runtime for the integration tests, written only
 * against the runtime C ABI. cfg: "init_rc=N" (libffi_init returns N), or
 * options separated by ',':
 *   "threads=N"            poll threads (default 1)
 *   "poll=many:<n>"        poll threads take up to <n> tasks per call with
 *                          resty_ffi_task_poll_many
 *   "poll=fd"              poll threads wait in poll(2) on resty_ffi_queue_fd
 *                          and take tasks with resty_ffi_task_try_poll
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
 *   "log:<level>:<msg>"    resty_ffi_log(tq, level, msg) and answers "logged"
 *   "logs:<n>:<level>:<msg>"
 *                          logs "<msg> <i>" n times (i = 1..n), then answers
 *                          "logged <n>"
 *   "never"                never answers (the task is kept, reachable, for the
 *                          life of the process, as a runtime that hangs would)
 * Shared dicts (resty_ffi_shdict_*; <exptime>, <init_ttl> in seconds):
 *   "shdict_get:<dict>:<key>"                 answers "<rc>|<value>|<flags>"
 *                                             (value and flags when rc is 1)
 *   "shdict_set:<dict>:<key>:<exptime>:<flags>:<value>"   answers "<rc>"
 *   "shdict_incr:<dict>:<key>:<by>:<init>:<init_ttl>"     answers "<rc>|<value>"
 *   "shdict_delete:<dict>:<key>"              answers "<rc>"
 *   "shdict_expiry:<dict>:<key>:<exptime>:<ms>"
 *                          sets <key> to "v" expiring after <exptime>, sleeps
 *                          <ms> on this thread, gets it: "<set rc>|<get rc>"
 *   "shdict_hammer:<dict>:<key>:<threads>:<n>"
 *                          starts <threads> threads that each incr <key> by 1
 *                          <n> times (init 0); answers "started" at once
 *   "shdict_join"          answers, once every hammer thread finished, the
 *                          number of incr calls that failed
 *   "shdict_bench:<dict>:<threads>:<n>"
 *                          each thread sets <n> keys of its own (1000 distinct,
 *                          16-byte values), then gets them; answers
 *                          "<set ops/s>|<get ops/s>" of all threads together
 *   anything else          echoed back unchanged
 */

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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
    int    batch;              /* poll=many:<n>; 0: task_poll */
    int    use_fd;             /* poll=fd */
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


/* "logs:<n>:<level>:<msg>" */
static void
log_many(runtime_t *rt, void *task, char *spec)
{
    int   i, n, level, len;
    char  line[512];

    n = (int) strtol(spec, &spec, 10);
    level = (int) strtol(spec + 1, &spec, 10);
    for (i = 1; i <= n; i++) {
        len = snprintf(line, sizeof(line), "%s %d", spec + 1, i);
        resty_ffi_log(rt->tq, level, line, len);
    }
    len = snprintf(line, sizeof(line), "logged %d", n);
    respond_copy(task, 0, line, (size_t) len);
}


/* Splits "<a>:<b>:..." in place: the next field, or NULL when none is left. */
static char *
field(char **rest)
{
    char  *start = *rest, *sep;

    if (start == NULL) {
        return NULL;
    }
    sep = strchr(start, ':');
    if (sep != NULL) {
        *sep = '\0';
        *rest = sep + 1;
    } else {
        *rest = NULL;
    }
    return start;
}


static void
respond_text(void *task, const char *text)
{
    respond_copy(task, 0, text, strlen(text));
}


/* Threads of shdict_hammer, and how many incr calls of theirs failed. */
static pthread_mutex_t  hammer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t   hammer_done = PTHREAD_COND_INITIALIZER;
static int              hammer_running, hammer_errors;

typedef struct {
    char  dict[256];
    char  key[256];
    long  n;
} hammer_t;


static void *
hammer(void *arg)
{
    long       i;
    int        errors = 0;
    double     out;
    hammer_t  *h = arg;

    for (i = 0; i < h->n; i++) {
        if (resty_ffi_shdict_incr(h->dict, h->key, strlen(h->key), 1, 0, 0, &out) != 0) {
            errors++;
        }
    }

    pthread_mutex_lock(&hammer_lock);
    hammer_errors += errors;
    if (--hammer_running == 0) {
        pthread_cond_broadcast(&hammer_done);
    }
    pthread_mutex_unlock(&hammer_lock);
    free(h);
    return NULL;
}


static void
start_hammers(void *task, char *rest)
{
    int         i, threads;
    char       *dict, *key;
    long        n;
    hammer_t   *h;
    pthread_t   tid;

    dict = field(&rest);
    key = field(&rest);
    threads = atoi(field(&rest) ?: "0");
    n = atol(rest ?: "0");
    if (dict == NULL || key == NULL || strlen(dict) >= 256 || strlen(key) >= 256) {
        respond_copy(task, 1, "bad hammer", 10);
        return;
    }

    for (i = 0; i < threads; i++) {
        h = malloc(sizeof(hammer_t));
        strcpy(h->dict, dict);
        strcpy(h->key, key);
        h->n = n;
        pthread_mutex_lock(&hammer_lock);
        hammer_running++;
        pthread_mutex_unlock(&hammer_lock);
        if (pthread_create(&tid, NULL, hammer, h) != 0) {
            pthread_mutex_lock(&hammer_lock);
            hammer_running--;
            hammer_errors += (int) n;
            pthread_mutex_unlock(&hammer_lock);
            free(h);
            continue;
        }
        pthread_detach(tid);
    }
    respond_text(task, "started");
}


static void
join_hammers(void *task)
{
    char  text[32];

    pthread_mutex_lock(&hammer_lock);
    while (hammer_running > 0) {
        pthread_cond_wait(&hammer_done, &hammer_lock);
    }
    snprintf(text, sizeof(text), "%d", hammer_errors);
    hammer_errors = 0;
    pthread_mutex_unlock(&hammer_lock);
    respond_text(task, text);
}


typedef struct {
    const char  *dict;
    long         n;
    int          id;
    int          errors;
    double       set_s, get_s;
} bench_t;


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}


static void *
bench(void *arg)
{
    long      i;
    int       len, flags;
    char      key[64], *val;
    size_t    val_len;
    double    start;
    bench_t  *b = arg;

    start = now_s();
    for (i = 0; i < b->n; i++) {
        len = snprintf(key, sizeof(key), "bench:%d:%ld", b->id, i % 1000);
        if (resty_ffi_shdict_set(b->dict, key, len, "0123456789abcdef", 16, 0, 0) != 0) {
            b->errors++;
        }
    }
    b->set_s = now_s() - start;

    start = now_s();
    for (i = 0; i < b->n; i++) {
        len = snprintf(key, sizeof(key), "bench:%d:%ld", b->id, i % 1000);
        if (resty_ffi_shdict_get(b->dict, key, len, &val, &val_len, &flags) == 1) {
            free(val);
        } else {
            b->errors++;
        }
    }
    b->get_s = now_s() - start;
    return NULL;
}


static void
run_bench(void *task, char *rest)
{
    int         i, threads, errors = 0;
    long        n;
    char       *dict, text[128];
    double      set_s = 0, get_s = 0;
    bench_t     b[64];
    pthread_t   tid[64];

    dict = field(&rest);
    threads = atoi(field(&rest) ?: "0");
    n = atol(rest ?: "0");
    if (dict == NULL || threads < 1 || threads > 64 || n < 1) {
        respond_copy(task, 1, "bad bench", 9);
        return;
    }

    for (i = 0; i < threads; i++) {
        b[i] = (bench_t) { dict, n, i, 0, 0, 0 };
        pthread_create(&tid[i], NULL, bench, &b[i]);
    }
    for (i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        errors += b[i].errors;
        set_s = b[i].set_s > set_s ? b[i].set_s : set_s;
        get_s = b[i].get_s > get_s ? b[i].get_s : get_s;
    }

    if (errors > 0) {
        snprintf(text, sizeof(text), "%d errors", errors);
        respond_copy(task, 1, text, strlen(text));
        return;
    }
    snprintf(text, sizeof(text), "%.0f|%.0f", threads * n / set_s, threads * n / get_s);
    respond_text(task, text);
}


/* "shdict_<op>:...": the shared-dict requests (see the header). */
static void
shdict(void *task, char *req, int len)
{
    int      rc, flags = 0;
    char     text[128], *copy, *rest, *op, *dict, *key, *val = NULL;
    char    *answer;
    size_t   val_len = 0;
    double   out = 0, exptime, by, init, init_ttl;

    copy = malloc(len + 1);
    memcpy(copy, req, len);
    copy[len] = '\0';
    rest = copy + 7;
    op = field(&rest);

    if (strcmp(op, "join") == 0) {
        join_hammers(task);
        goto done;
    }
    if (strcmp(op, "hammer") == 0) {
        start_hammers(task, rest);
        goto done;
    }
    if (strcmp(op, "bench") == 0) {
        run_bench(task, rest);
        goto done;
    }

    dict = field(&rest);
    if (strcmp(op, "set") == 0) {
        key = field(&rest);
        exptime = atof(field(&rest) ?: "0");
        flags = atoi(field(&rest) ?: "0");
        rc = resty_ffi_shdict_set(dict, key, strlen(key), rest, rest ? strlen(rest) : 0, exptime, flags);
        snprintf(text, sizeof(text), "%d", rc);

    } else if (strcmp(op, "incr") == 0) {
        key = field(&rest);
        by = atof(field(&rest) ?: "0");
        init = atof(field(&rest) ?: "0");
        init_ttl = atof(rest ?: "0");
        rc = resty_ffi_shdict_incr(dict, key, strlen(key), by, init, init_ttl, &out);
        snprintf(text, sizeof(text), "%d|%.17g", rc, out);

    } else if (strcmp(op, "expiry") == 0) {
        key = field(&rest);
        exptime = atof(field(&rest) ?: "0");
        rc = resty_ffi_shdict_set(dict, key, strlen(key), "v", 1, exptime, 0);
        usleep(atoi(rest ?: "0") * 1000);
        flags = resty_ffi_shdict_get(dict, key, strlen(key), &val, &val_len, NULL);
        if (flags == 1) {
            free(val);
        }
        snprintf(text, sizeof(text), "%d|%d", rc, flags);

    } else if (strcmp(op, "delete") == 0) {
        key = rest ?: "";
        rc = resty_ffi_shdict_delete(dict, key, strlen(key));
        snprintf(text, sizeof(text), "%d", rc);

    } else if (strcmp(op, "get") == 0) {
        key = rest ?: "";
        rc = resty_ffi_shdict_get(dict, key, strlen(key), &val, &val_len, &flags);
        if (rc == 1) {
            answer = malloc(val_len + 64);
            len = snprintf(answer, 64, "1|");
            memcpy(answer + len, val, val_len);
            len += (int) val_len;
            len += snprintf(answer + len, 64, "|%d", flags);
            respond_copy(task, 0, answer, (size_t) len);
            free(answer);
            free(val);
            goto done;
        }
        snprintf(text, sizeof(text), "%d", rc);

    } else {
        respond_copy(task, 1, "bad shdict request", 18);
        goto done;
    }

    respond_text(task, text);

done:

    free(copy);
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

    if (len > 4 && strncmp(req, "log:", 4) == 0) {
        sep = strchr(req + 4, ':');
        resty_ffi_log(rt->tq, atoi(req + 4), sep ? sep + 1 : "", -1);
        respond_copy(task, 0, "logged", 6);
        return;
    }

    if (len > 5 && strncmp(req, "logs:", 5) == 0) {
        log_many(rt, task, req + 5);
        return;
    }

    if (len > 7 && strncmp(req, "shdict_", 7) == 0) {
        shdict(task, req, len);
        return;
    }

    if (len == 5 && strcmp(req, "never") == 0) {
        keep_forever(task);
        return;
    }

    respond_copy(task, 0, req, len);
}


#define BATCH_MAX  1024


/* poll=many:<n> */
static void
serve_many(runtime_t *rt)
{
    int    i, n;
    void  *tasks[BATCH_MAX];

    while ((n = resty_ffi_task_poll_many(rt->tq, tasks, rt->batch)) > 0) {
        for (i = 0; i < n; i++) {
            handle(rt, tasks[i]);
        }
    }
}


/* poll=fd: an event loop of one descriptor */
static void
serve_fd(runtime_t *rt)
{
    int            rc;
    void          *task;
    struct pollfd  pfd;

    pfd.fd = resty_ffi_queue_fd(rt->tq);
    pfd.events = POLLIN;
    if (pfd.fd == -1) {
        return;
    }

    for ( ;; ) {
        if (poll(&pfd, 1, -1) == -1) {
            continue;
        }
        while ((rc = resty_ffi_task_try_poll(rt->tq, &task)) == 1) {
            handle(rt, task);
        }
        if (rc == -1) {
            return;
        }
    }
}


static void *
serve(void *arg)
{
    void       *task;
    runtime_t  *rt = arg;

    if (rt->batch > 0) {
        serve_many(rt);

    } else if (rt->use_fd) {
        serve_fd(rt);

    } else {
        while ((task = ngx_http_lua_ffi_task_poll(rt->tq)) != NULL) {
            handle(rt, task);
        }
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

        } else if (strncmp(opt, "poll=many:", 10) == 0) {
            rt->batch = atoi(opt + 10);
            if (rt->batch < 1 || rt->batch > BATCH_MAX) {
                free(rt);
                return 2;
            }

        } else if (strncmp(opt, "poll=fd", 7) == 0) {
            rt->use_fd = 1;

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
