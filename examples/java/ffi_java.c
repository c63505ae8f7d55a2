/*
 * libffi_java.so: runs Java runtimes, compatible with the original
 * lua-resty-ffi Java loader:
 *
 *   ngx.load_ffi("ffi_java", "demo.api.Echo,init,rest")
 *
 * The loader calls `static int method(String rest, long tq)` of the class
 * (dotted name; `rest` is null when absent). A trailing '?' on the class
 * ("demo.api.Echo?,init") loads it through a fresh class loader, so a rebuilt
 * class is picked up (hot reload).
 *
 * One JVM per process, created by the first libffi_init with the class path
 * of CLASSPATH plus resty_ffi.jar (next to this library) and the options of
 * JAVA_OPTS, after -Xrs: the host keeps SIGQUIT, SIGTERM, SIGHUP and SIGINT.
 * A JVM cannot be destroyed and created again in a process, and its threads
 * run the natives registered from this library: it is linked with
 * -z nodelete, so dlclose never unloads it.
 *
 * Java code runs on threads with the host's signals blocked: the JVM is
 * created, and every init method called, on a short-lived helper thread whose
 * mask the JVM's threads (and the runtimes' own) inherit.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <jni.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resty_ffi.h"


#define RC_BAD_CFG      2       /* cfg is not "class,method[,rest]" */
#define RC_NO_JVM       3       /* the JVM could not start */
#define RC_JAVA_ERROR   -1      /* class, method or call failed: see the error log */

#define MAX_OPTIONS     64
#define LOADER_CLASS    "resty/ffi/Loader"
#define FFI_CLASS       "resty/ffi/Ffi"


typedef struct {
    char       *class_name;
    char       *method;
    char       *rest;
    int         fresh;
    void       *tq;
    int         rc;
} init_call_t;


static pthread_once_t  jvm_once = PTHREAD_ONCE_INIT;
static JavaVM         *jvm;
static jclass          loader_class;
static jmethodID       loader_init;


static jlong JNICALL
ffi_poll(JNIEnv *env, jclass cls, jlong tq)
{
    return (jlong) (uintptr_t) ngx_http_lua_ffi_task_poll((void *) (uintptr_t) tq);
}


static jbyteArray JNICALL
ffi_request(JNIEnv *env, jclass cls, jlong task)
{
    int          len = 0;
    char        *req;
    jbyteArray   arr;

    req = ngx_http_lua_ffi_get_req((void *) (uintptr_t) task, &len);
    if (req == NULL || len < 0) {
        len = 0;
    }

    arr = (*env)->NewByteArray(env, len);
    if (arr != NULL && len > 0) {
        (*env)->SetByteArrayRegion(env, arr, 0, len, (const jbyte *) req);
    }

    return arr;
}


static void JNICALL
ffi_respond(JNIEnv *env, jclass cls, jlong task, jint rc, jbyteArray body)
{
    jsize   len = 0;
    char   *rsp = NULL;

    if (body != NULL) {
        len = (*env)->GetArrayLength(env, body);
    }

    /* A non-NULL rsp of length 0 would be read as a C string: send NULL. */
    if (len > 0) {
        rsp = malloc(len);
        if (rsp == NULL) {
            len = 0;
            rc = rc != 0 ? rc : 1;

        } else {
            (*env)->GetByteArrayRegion(env, body, 0, len, (jbyte *) rsp);
        }
    }

    ngx_http_lua_ffi_respond((void *) (uintptr_t) task, rc, rsp, len);
}


static void JNICALL
ffi_log(JNIEnv *env, jclass cls, jlong tq, jint level, jbyteArray msg)
{
    jsize   len;
    jbyte  *bytes;

    if (msg == NULL) {
        return;
    }

    len = (*env)->GetArrayLength(env, msg);
    bytes = (*env)->GetByteArrayElements(env, msg, NULL);
    if (bytes == NULL) {
        return;
    }

    resty_ffi_log((void *) (uintptr_t) tq, level, (const char *) bytes, len);
    (*env)->ReleaseByteArrayElements(env, msg, bytes, JNI_ABORT);
}


static JNINativeMethod ffi_natives[] = {
    { "poll", "(J)J", (void *) ffi_poll },
    { "log", "(JI[B)V", (void *) ffi_log },
    { "request", "(J)[B", (void *) ffi_request },
    { "respond", "(JI[B)V", (void *) ffi_respond },
};


/* "-Djava.class.path=$CLASSPATH:<dir of this library>/resty_ffi.jar" */
static char *
class_path_option(void)
{
    char        *opt, *self, *dir;
    const char  *env;
    Dl_info      info;
    size_t       len;

    if (dladdr((void *) class_path_option, &info) == 0 || info.dli_fname == NULL) {
        return NULL;
    }

    self = strdup(info.dli_fname);
    if (self == NULL) {
        return NULL;
    }

    dir = dirname(self);
    env = getenv("CLASSPATH");
    if (env == NULL) {
        env = "";
    }

    len = strlen(env) + strlen(dir) + 64;
    opt = malloc(len);
    if (opt != NULL) {
        snprintf(opt, len, "-Djava.class.path=%s%s%s/resty_ffi.jar", env, env[0] ? ":" : "", dir);
    }

    free(self);
    return opt;
}


static void
jvm_start(void)
{
    int              n = 0;
    char            *cp, *opts, *rest, *opt;
    jclass           ffi;
    JNIEnv          *env;
    JavaVMOption     options[MAX_OPTIONS];
    JavaVMInitArgs   args;

    cp = class_path_option();
    if (cp == NULL) {
        fprintf(stderr, "ffi_java: cannot build the class path\n");
        return;
    }

    options[n++].optionString = cp;
    options[n++].optionString = "-Xrs";

    opts = strdup(getenv("JAVA_OPTS") ? getenv("JAVA_OPTS") : "");
    rest = opts;
    while (rest != NULL && (opt = strsep(&rest, " \t")) != NULL) {
        if (opt[0] == '\0') {
            continue;
        }
        if (n == MAX_OPTIONS) {
            fprintf(stderr, "ffi_java: more than %d JVM options, rest of JAVA_OPTS ignored\n",
                    MAX_OPTIONS);
            break;
        }
        options[n++].optionString = opt;
    }

    args.version = JNI_VERSION_10;
    args.nOptions = n;
    args.options = options;
    args.ignoreUnrecognized = JNI_FALSE;

    if (JNI_CreateJavaVM(&jvm, (void **) &env, &args) != JNI_OK) {
        fprintf(stderr, "ffi_java: cannot create the JVM (check JAVA_OPTS)\n");
        jvm = NULL;
        goto done;
    }

    ffi = (*env)->FindClass(env, FFI_CLASS);
    if (ffi == NULL
        || (*env)->RegisterNatives(env, ffi, ffi_natives,
                                   sizeof(ffi_natives) / sizeof(ffi_natives[0])) != 0)
    {
        goto no_jar;
    }

    loader_class = (*env)->FindClass(env, LOADER_CLASS);
    if (loader_class == NULL) {
        goto no_jar;
    }

    loader_class = (*env)->NewGlobalRef(env, loader_class);
    loader_init = (*env)->GetStaticMethodID(env, loader_class, "init",
                      "(Ljava/lang/String;Ljava/lang/String;Ljava/lang/String;JZ)I");
    if (loader_init == NULL) {
        goto no_jar;
    }

    (*jvm)->DetachCurrentThread(jvm);
    goto done;

no_jar:

    (*env)->ExceptionDescribe(env);
    fprintf(stderr, "ffi_java: resty_ffi.jar is missing or broken (%s)\n", cp);
    loader_class = NULL;
    (*jvm)->DetachCurrentThread(jvm);

done:

    free(opts);
    free(cp);
}


static jstring
java_string(JNIEnv *env, const char *s)
{
    return s != NULL ? (*env)->NewStringUTF(env, s) : NULL;
}


/* The helper thread: starts the JVM once, then runs Loader.init. */
static void *
init_thread(void *arg)
{
    init_call_t  *call = arg;
    JNIEnv       *env;
    jstring       cls, method, rest;

    pthread_once(&jvm_once, jvm_start);
    if (jvm == NULL || loader_class == NULL) {
        call->rc = RC_NO_JVM;
        return NULL;
    }

    if ((*jvm)->AttachCurrentThread(jvm, (void **) &env, NULL) != JNI_OK) {
        call->rc = RC_NO_JVM;
        return NULL;
    }

    cls = java_string(env, call->class_name);
    method = java_string(env, call->method);
    rest = java_string(env, call->rest);

    call->rc = RC_JAVA_ERROR;
    if (cls != NULL && method != NULL) {
        call->rc = (*env)->CallStaticIntMethod(env, loader_class, loader_init, cls, method,
                                               rest, (jlong) (uintptr_t) call->tq,
                                               call->fresh ? JNI_TRUE : JNI_FALSE);
    }

    /* Loader.init reports its own failures; this is only out of memory. */
    if ((*env)->ExceptionCheck(env)) {
        (*env)->ExceptionDescribe(env);
        call->rc = RC_JAVA_ERROR;
    }

    (*jvm)->DetachCurrentThread(jvm);
    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    int           err;
    char         *copy, *rest;
    size_t        len;
    sigset_t      all, old;
    pthread_t     tid;
    init_call_t   call;

    if (cfg == NULL) {
        fprintf(stderr, "ffi_java: cfg \"class,method[,rest]\" is required\n");
        return RC_BAD_CFG;
    }

    copy = strdup(cfg);
    if (copy == NULL) {
        return RC_BAD_CFG;
    }

    rest = copy;
    call.class_name = strsep(&rest, ",");
    call.method = strsep(&rest, ",");
    call.rest = rest;
    call.tq = tq;
    call.fresh = 0;

    len = strlen(call.class_name);
    if (len > 0 && call.class_name[len - 1] == '?') {
        call.class_name[--len] = '\0';
        call.fresh = 1;
    }

    if (len == 0 || call.method == NULL || call.method[0] == '\0') {
        fprintf(stderr, "ffi_java: bad cfg \"%s\": want \"class,method[,rest]\"\n", cfg);
        free(copy);
        return RC_BAD_CFG;
    }

    /* The helper thread, and every thread Java starts, inherit this mask. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* Not into call.rc: the thread may have set it before this returns. */
    err = pthread_create(&tid, NULL, init_thread, &call);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (err != 0) {
        fprintf(stderr, "ffi_java: cannot start a thread: %s\n", strerror(err));
        call.rc = RC_NO_JVM;

    } else {
        pthread_join(tid, NULL);
    }

    free(copy);
    return call.rc;
}
