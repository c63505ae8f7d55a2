// The Node.js loader (libffi_nodejs.so): one Node 18 (Debian's libnode) per
// process, on a thread of its own running Node's event loop, shared by all
// runtimes. libffi_init hands "module,func[,rest]" to that thread, which calls
// require(module)[func](rest, tq) and returns its rc. JS reaches the runtime ABI
// through the native binding `resty_ffi` (process._linkedBinding), wrapped with
// serve() by lib/resty_ffi.js, which build.sh puts next to this library.
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <node.h>
#include <node_api.h>
#include <uv.h>

#include "resty_ffi.h"

namespace {

constexpr int RC_BAD_CFG = 2;
constexpr int RC_NO_NODE = 3;
constexpr int RC_JS_GONE = -1;
const char JS_GONE[] = "resty_ffi: the JavaScript thread that polls this runtime has ended";

// Answers `task` with rc and a copy of the C string `msg`.
void respond_error(void *task, int rc, const char *msg)
{
    ngx_http_lua_ffi_respond(task, rc, strdup(msg), 0);
}

struct Load {
    void *tq;
    std::string module;
    std::string func;
    std::string rest;
    bool has_rest;
    int rc;
    bool done;
};

enum class State { Idle, Starting, Running, Failed };

std::mutex mu;
std::condition_variable cv;
State state = State::Idle;
std::deque<Load *> pending;
uv_async_t wake;
v8::Isolate *isolate;
v8::Global<v8::Context> context;
v8::Global<v8::Function> load_fn;

// Runs on Node's thread. The loader's directory goes on NODE_PATH (workers
// inherit process.env) so require('resty_ffi') finds resty_ffi.js. Uncaught
// errors are logged: Node's default would exit the host process.
const char BOOTSTRAP[] = R"JS(
const Module = require('module');
const path = require('path');
// console.* of runtime code goes to the host's log (nginx's error log,
// Envoy's log): error -> err, warn -> warn, log/info -> info, debug/trace -> debug.
{
  const util = require('util');
  const binding = process._linkedBinding('resty_ffi');
  const to = (level) => (...args) => binding.log(level, 'ffi_nodejs: ' + util.format(...args));
  Object.assign(console, { error: to(4), warn: to(5), log: to(7), info: to(7), debug: to(8), trace: to(8) });
}
process.on('uncaughtException', (e) => console.error('ffi_nodejs: uncaught exception:', e));
process.on('unhandledRejection', (e) => console.error('ffi_nodejs: unhandled rejection:', e));
process.env.NODE_PATH = [process.env.NODE_PATH, process.env.RESTY_FFI_NODEJS_DIR]
  .filter(Boolean).join(path.delimiter);
delete process.env.RESTY_FFI_NODEJS_DIR;
Module._initPaths();
const req = Module.createRequire(path.join(process.cwd(), '[resty_ffi]'));
globalThis.require = req;
globalThis.__resty_ffi_load = (tq, mod, func, rest) => {
  try {
    if (mod.endsWith('?')) {
      mod = mod.slice(0, -1);
      delete req.cache[req.resolve(mod)];
    }
    const f = req(mod)[func];
    if (typeof f !== 'function') {
      throw new TypeError(`${mod}.${func} is not a function`);
    }
    const rc = f(rest, tq);
    return rc === undefined || rc === null ? 0 : Number(rc);
  } catch (e) {
    console.error('ffi_nodejs:', e);
    return -1;
  }
};
)JS";

// A pointer passed to JS as a BigInt (or a Number).
uint64_t to_u64(napi_env env, napi_value v)
{
    uint64_t n = 0;
    bool lossless;
    if (napi_get_value_bigint_uint64(env, v, &n, &lossless) != napi_ok) {
        int64_t i = 0;
        napi_get_value_int64(env, v, &i);
        n = (uint64_t) i;
    }
    return n;
}

napi_value bigint(napi_env env, void *p)
{
    napi_value v;
    napi_create_bigint_uint64(env, (uint64_t) (uintptr_t) p, &v);
    return v;
}

// The first `want` arguments; missing ones are undefined.
void args(napi_env env, napi_callback_info info, size_t want, napi_value *argv)
{
    size_t argc = want;
    napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
    for (size_t i = argc; i < want; i++) {
        napi_get_undefined(env, &argv[i]);
    }
}

// poll_task(tq) -> task (BigInt), 0n once the runtime is unloaded. Blocks.
napi_value poll_task(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    args(env, info, 1, argv);
    void *tq = (void *) (uintptr_t) to_u64(env, argv[0]);
    return bigint(env, ngx_http_lua_ffi_task_poll(tq));
}

// get_req(task) -> Buffer (a copy of the request bytes).
napi_value get_req(napi_env env, napi_callback_info info)
{
    napi_value argv[1], buf;
    args(env, info, 1, argv);
    int len = 0;
    char *req = ngx_http_lua_ffi_get_req((void *) (uintptr_t) to_u64(env, argv[0]), &len);
    void *data;
    napi_create_buffer_copy(env, req != nullptr ? len : 0, req != nullptr ? req : "", &data, &buf);
    return buf;
}

// respond(task, rc, data): data is a string, a Buffer (any Uint8Array), null or undefined.
napi_value respond(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    args(env, info, 3, argv);
    void *task = (void *) (uintptr_t) to_u64(env, argv[0]);
    int32_t rc = 0;
    napi_get_value_int32(env, argv[1], &rc);

    napi_valuetype type;
    napi_typeof(env, argv[2], &type);
    char *rsp = nullptr;
    size_t len = 0;
    bool is_typed = false;
    napi_typedarray_type t = napi_int8_array;
    void *data = nullptr;
    napi_is_typedarray(env, argv[2], &is_typed);
    if (is_typed) {
        napi_get_typedarray_info(env, argv[2], &t, &len, &data, nullptr, nullptr);
    }

    if (type == napi_string) {
        napi_get_value_string_utf8(env, argv[2], nullptr, 0, &len);
    }
    if (len > INT_MAX) {
        // The ABI's rsp_len is an int: answer an error rather than a wrapped length.
        std::string msg = "resty_ffi: response too large: " + std::to_string(len) + " bytes (at most " +
                          std::to_string(INT_MAX) + ")";
        respond_error(task, 1, msg.c_str());
        return nullptr;
    }

    if (type == napi_string) {
        rsp = (char *) malloc(len + 1);
        if (rsp != nullptr) {
            napi_get_value_string_utf8(env, argv[2], rsp, len + 1, &len);
        }

    } else if (is_typed && t == napi_uint8_array) {
        rsp = len > 0 ? (char *) malloc(len) : nullptr;
        if (rsp != nullptr) {
            memcpy(rsp, data, len);
        }

    } else if (type != napi_null && type != napi_undefined) {
        napi_throw_type_error(env, nullptr, "respond: data must be a string, a Buffer (Uint8Array), null or undefined");
        return nullptr;
    }

    if (len == 0) {
        free(rsp);
        rsp = nullptr;
    }
    ngx_http_lua_ffi_respond(task, rc, rsp, (int) len);
    return nullptr;
}

// The poll thread's hold on the thread-safe function. Node deletes the
// function when the JS thread that created it ends (a worker thread, say),
// even while threads still hold it: its finalizer closes the link first, and
// the poll thread uses the function only under the link's lock while open.
struct Link {
    std::mutex mu;
    bool open = true;
    napi_threadsafe_function tsfn = nullptr;
};

struct Poller {
    void *tq;
    std::shared_ptr<Link> link;
};

// The function's finalizer, on the JS thread; `data` is a shared_ptr<Link>.
void close_link(napi_env, void *data, void *)
{
    auto *link = static_cast<std::shared_ptr<Link> *>(data);
    {
        std::lock_guard<std::mutex> lock((*link)->mu);
        (*link)->open = false;
    }
    delete link;
}

// Hands each task to the JS thread; once that is impossible (the function is
// closing or gone), answers every task with an error until the runtime is
// unloaded: every task is answered exactly once.
void *poll_thread(void *arg)
{
    Poller *p = (Poller *) arg;
    Link &link = *p->link;
    void *task;
    while ((task = ngx_http_lua_ffi_task_poll(p->tq)) != nullptr) {
        std::lock_guard<std::mutex> lock(link.mu);
        napi_status status = link.open ? napi_call_threadsafe_function(link.tsfn, task, napi_tsfn_blocking)
                                       : napi_closing;
        if (status != napi_ok) {
            // After napi_closing the function must not be used again, not even released.
            link.open = link.open && status != napi_closing;
            respond_error(task, RC_JS_GONE, JS_GONE);
        }
    }
    {
        std::lock_guard<std::mutex> lock(link.mu);
        if (link.open) {
            napi_release_threadsafe_function(link.tsfn, napi_tsfn_release);
        }
    }
    delete p;
    return nullptr;
}

void call_js(napi_env env, napi_value cb, void *, void *task)
{
    if (env == nullptr) {
        // The JS thread is going away: answer instead of dropping the task.
        respond_error(task, RC_JS_GONE, JS_GONE);
        return;
    }
    napi_value undefined, argv[1] = {bigint(env, task)};
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, cb, 1, argv, nullptr);
}

// poll_async(tq, callback): polls tq on a thread of its own and calls
// callback(task) on this JS thread for each task, until the runtime is unloaded.
napi_value poll_async(napi_env env, napi_callback_info info)
{
    napi_value argv[2], name;
    args(env, info, 2, argv);
    Poller *p = new Poller{(void *) (uintptr_t) to_u64(env, argv[0]), std::make_shared<Link>()};
    auto *finalizer_link = new std::shared_ptr<Link>(p->link);
    napi_create_string_utf8(env, "resty_ffi.poll_async", NAPI_AUTO_LENGTH, &name);
    if (napi_create_threadsafe_function(env, argv[1], nullptr, name, 0, 1, finalizer_link, close_link, nullptr,
                                        call_js, &p->link->tsfn) != napi_ok) {
        delete finalizer_link;
        delete p;
        napi_throw_type_error(env, nullptr, "poll_async: callback must be a function");
        return nullptr;
    }
    pthread_t tid;
    if (pthread_create(&tid, nullptr, poll_thread, p) != 0) {
        napi_release_threadsafe_function(p->link->tsfn, napi_tsfn_abort);
        delete p;
        napi_throw_error(env, nullptr, "poll_async: cannot start a thread");
        return nullptr;
    }
    pthread_detach(tid);
    return nullptr;
}

// log(level, text): text to the host's log (resty_ffi_log, no library prefix).
napi_value log(napi_env env, napi_callback_info info)
{
    napi_value argv[2];
    args(env, info, 2, argv);
    int32_t level = 4;
    napi_get_value_int32(env, argv[0], &level);
    size_t len = 0;
    if (napi_get_value_string_utf8(env, argv[1], nullptr, 0, &len) != napi_ok) {
        napi_throw_type_error(env, nullptr, "log: text must be a string");
        return nullptr;
    }
    std::string text(len, '\0');
    napi_get_value_string_utf8(env, argv[1], text.data(), len + 1, &len);
    resty_ffi_log(nullptr, level, text.data(), (int) std::min(len, (size_t) INT_MAX));
    return nullptr;
}

// poll_loop(tq, callback): calls callback(task) for each task of tq on this JS
// thread, from its own libuv loop: a uv_poll_t watches the queue's fd
// (resty_ffi_queue_fd), tasks are taken with resty_ffi_task_try_poll. No
// thread polls. Ends (and lets the loop go) once the runtime is unloaded.
struct LoopPoller {
    uv_poll_t poll;
    void *tq;
    napi_env env;
    napi_ref callback;
    napi_async_context async;
};

void loop_poller_closed(uv_handle_t *handle)
{
    LoopPoller *p = (LoopPoller *) handle->data;
    napi_delete_reference(p->env, p->callback);
    napi_async_destroy(p->env, p->async);
    delete p;
}

void on_queue_readable(uv_poll_t *poll, int status, int)
{
    LoopPoller *p = (LoopPoller *) poll->data;
    napi_handle_scope scope;
    napi_open_handle_scope(p->env, &scope);
    napi_value cb, recv;
    napi_get_reference_value(p->env, p->callback, &cb);
    napi_get_global(p->env, &recv);
    void *task;
    int rc;
    while ((rc = resty_ffi_task_try_poll(p->tq, &task)) == 1) {
        napi_value argv[1] = {bigint(p->env, task)};
        // Runs the microtasks (promise reactions) the callback queued. A
        // callback that could not even be called leaves the task to us.
        napi_status status = napi_make_callback(p->env, p->async, recv, cb, 1, argv, nullptr);
        if (status != napi_ok && status != napi_pending_exception) {
            respond_error(task, RC_JS_GONE, JS_GONE);
        }
    }
    napi_close_handle_scope(p->env, scope);
    if (rc == -1 || status < 0) {
        uv_poll_stop(poll);
        uv_close((uv_handle_t *) poll, loop_poller_closed);
    }
}

napi_value poll_loop(napi_env env, napi_callback_info info)
{
    napi_value argv[2], name;
    args(env, info, 2, argv);
    napi_valuetype type;
    napi_typeof(env, argv[1], &type);
    if (type != napi_function) {
        napi_throw_type_error(env, nullptr, "poll_loop: callback must be a function");
        return nullptr;
    }
    void *tq = (void *) (uintptr_t) to_u64(env, argv[0]);
    int fd = resty_ffi_queue_fd(tq);
    uv_loop_t *loop = nullptr;
    if (fd < 0 || napi_get_uv_event_loop(env, &loop) != napi_ok) {
        napi_throw_error(env, nullptr, "poll_loop: the host has no queue fd");
        return nullptr;
    }
    LoopPoller *p = new LoopPoller{};
    p->tq = tq;
    p->env = env;
    napi_create_reference(env, argv[1], 1, &p->callback);
    napi_create_string_utf8(env, "resty_ffi.poll_loop", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env, nullptr, name, &p->async);
    p->poll.data = p;
    if (uv_poll_init(loop, &p->poll, fd) != 0 || uv_poll_start(&p->poll, UV_READABLE, on_queue_readable) != 0) {
        napi_delete_reference(env, p->callback);
        napi_async_destroy(env, p->async);
        delete p;
        napi_throw_error(env, nullptr, "poll_loop: cannot watch the queue fd");
        return nullptr;
    }
    return nullptr;
}

napi_value binding(napi_env env, napi_value exports)
{
    const napi_property_descriptor fns[] = {
        {"log", nullptr, log, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
        {"poll_loop", nullptr, poll_loop, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
        {"poll_task", nullptr, poll_task, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
        {"get_req", nullptr, get_req, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
        {"respond", nullptr, respond, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
        {"poll_async", nullptr, poll_async, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
    };
    napi_define_properties(env, exports, sizeof(fns) / sizeof(fns[0]), fns);
    return exports;
}

// Runs on Node's thread: answers the libffi_init calls waiting in `pending`.
void on_wake(uv_async_t *)
{
    v8::HandleScope scope(isolate);
    v8::Local<v8::Context> ctx = context.Get(isolate);
    v8::Context::Scope context_scope(ctx);
    for (;;) {
        Load *l;
        {
            std::lock_guard<std::mutex> lock(mu);
            if (pending.empty()) {
                break;
            }
            l = pending.front();
            pending.pop_front();
        }
        v8::Local<v8::Value> argv[] = {
            v8::BigInt::NewFromUnsigned(isolate, (uint64_t) (uintptr_t) l->tq),
            v8::String::NewFromUtf8(isolate, l->module.c_str()).ToLocalChecked(),
            v8::String::NewFromUtf8(isolate, l->func.c_str()).ToLocalChecked(),
            l->has_rest ? v8::String::NewFromUtf8(isolate, l->rest.c_str()).ToLocalChecked().As<v8::Value>()
                        : v8::Null(isolate).As<v8::Value>(),
        };
        // MakeCallback runs the microtasks and nextTicks the call queued.
        v8::MaybeLocal<v8::Value> rc =
            node::MakeCallback(isolate, ctx->Global(), load_fn.Get(isolate), 4, argv, {0, 0});
        v8::Local<v8::Value> v;
        int result = -1;
        if (rc.ToLocal(&v) && v->IsNumber()) {
            result = v->Int32Value(ctx).FromMaybe(-1);
        }
        std::lock_guard<std::mutex> lock(mu);
        l->rc = result;
        l->done = true;
        cv.notify_all();
    }
}

void set_state(State s)
{
    std::lock_guard<std::mutex> lock(mu);
    state = s;
    cv.notify_all();
}

void *node_main(void *)
{
    std::vector<std::string> argv{"resty_ffi"};
    std::unique_ptr<node::InitializationResult> init = node::InitializeOncePerProcess(
        argv, {node::ProcessInitializationFlags::kNoInitializeV8,
               node::ProcessInitializationFlags::kNoInitializeNodeV8Platform,
               node::ProcessInitializationFlags::kNoDefaultSignalHandling,
               node::ProcessInitializationFlags::kNoStdioInitialization,
               node::ProcessInitializationFlags::kNoAdjustResourceLimits,
               node::ProcessInitializationFlags::kNoUseLargePages});
    for (const std::string &e : init->errors()) {
        fprintf(stderr, "ffi_nodejs: %s\n", e.c_str());
    }
    if (init->early_return() != 0) {
        set_state(State::Failed);
        return nullptr;
    }

    std::unique_ptr<node::MultiIsolatePlatform> platform = node::MultiIsolatePlatform::Create(2);
    v8::V8::InitializePlatform(platform.get());
    v8::V8::Initialize();

    std::vector<std::string> errors;
    std::unique_ptr<node::CommonEnvironmentSetup> setup =
        node::CommonEnvironmentSetup::Create(platform.get(), &errors, init->args(), init->exec_args());
    if (!setup) {
        for (const std::string &e : errors) {
            fprintf(stderr, "ffi_nodejs: %s\n", e.c_str());
        }
        set_state(State::Failed);
        return nullptr;
    }

    isolate = setup->isolate();
    v8::Locker locker(isolate);
    v8::Isolate::Scope isolate_scope(isolate);
    v8::HandleScope handle_scope(isolate);
    v8::Local<v8::Context> ctx = setup->context();
    v8::Context::Scope context_scope(ctx);
    context.Reset(isolate, ctx);

    node::AddLinkedBinding(setup->env(), "resty_ffi", binding);
    // The handle stays referenced: Node's loop never runs out of work.
    uv_async_init(setup->event_loop(), &wake, on_wake);

    v8::Local<v8::Value> fn;
    if (node::LoadEnvironment(setup->env(), BOOTSTRAP).IsEmpty()
        || !ctx->Global()->Get(ctx, v8::String::NewFromUtf8Literal(isolate, "__resty_ffi_load")).ToLocal(&fn)
        || !fn->IsFunction()) {
        fprintf(stderr, "ffi_nodejs: the bootstrap script failed\n");
        set_state(State::Failed);
        return nullptr;
    }
    load_fn.Reset(isolate, fn.As<v8::Function>());
    set_state(State::Running);

    node::SpinEventLoop(setup->env()).FromMaybe(1);
    fprintf(stderr, "ffi_nodejs: Node's event loop ended\n");
    set_state(State::Failed);
    return nullptr;
}

// Starts Node once per process. Its threads (the event loop, V8's platform
// workers, libuv's pool, worker_threads) inherit a mask blocking every signal, so
// nginx and Envoy keep theirs; Node installs no handlers (kNoDefaultSignalHandling).
bool start_node()
{
    std::unique_lock<std::mutex> lock(mu);
    if (state == State::Idle) {
        state = State::Starting;
        Dl_info info;
        if (dladdr((void *) start_node, &info) != 0 && info.dli_fname != nullptr) {
            std::string dir(info.dli_fname);
            dir = dir.substr(0, dir.find_last_of('/') + 1);
            setenv("RESTY_FFI_NODEJS_DIR", dir.empty() ? "." : dir.c_str(), 1);
        }
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t tid;
        int err = pthread_create(&tid, nullptr, node_main, nullptr);
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        if (err != 0) {
            fprintf(stderr, "ffi_nodejs: cannot start Node's thread: %s\n", strerror(err));
            state = State::Failed;
        } else {
            pthread_detach(tid);
        }
    }
    cv.wait(lock, [] { return state != State::Starting; });
    return state == State::Running;
}

}  // namespace

// cfg: "path/to/module[?],func[,rest]"; rc 2 = malformed cfg, 3 = Node failed to start.
extern "C" int libffi_init(char *cfg, void *tq)
{
    if (cfg == nullptr) {
        return RC_BAD_CFG;
    }
    std::string s(cfg);
    size_t c1 = s.find(',');
    if (c1 == std::string::npos || c1 == 0) {
        return RC_BAD_CFG;
    }
    size_t c2 = s.find(',', c1 + 1);
    Load l{tq, s.substr(0, c1), s.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1),
           c2 == std::string::npos ? "" : s.substr(c2 + 1), c2 != std::string::npos, 0, false};
    if (l.func.empty()) {
        return RC_BAD_CFG;
    }
    if (!start_node()) {
        return RC_NO_NODE;
    }

    std::unique_lock<std::mutex> lock(mu);
    pending.push_back(&l);
    uv_async_send(&wake);
    cv.wait(lock, [&] { return l.done; });
    return l.rc;
}
