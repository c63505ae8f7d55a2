/*
 * libffi_python3.so: runs Python runtimes, compatible with the original
 * lua-resty-ffi Python loader. Load it with `is_global = true` (extension
 * modules such as cffi resolve libpython's symbols from the global scope):
 *
 *   ngx.load_ffi("ffi_python3", "module,function,rest", { is_global = true })
 *
 * `module` may carry a directory ("path/to/mod": the directory goes first on
 * sys.path) and a trailing '?' ("mod?": an already imported module is
 * reloaded, for hot reload). The loader calls `function(cfg, tq)` with `cfg`
 * the address of the NUL-terminated `rest` (0 when absent) and `tq` the task
 * queue address, both ints; the function's int result (None = 0) is
 * libffi_init's rc.
 *
 * rc: 0 or the function's result; 2 for a bad cfg; 3 when Python cannot run
 * (the loader was loaded without is_global, or the interpreter did not
 * start); -1 when the import or the call raised. Each failure is explained
 * on stderr (nginx's error log; Envoy's stderr).
 *
 * One interpreter per process, started by the first libffi_init; the GIL is
 * held only while a runtime is being initialized or runs Python code. The
 * loader is linked with -z nodelete: the interpreter cannot be finalized and
 * started again, so an unpinned load never unmaps the loader (hot reload of
 * Python code is the module's '?', not dlclose).
 *
 * The loader is shipped under two names, libffi_python3.so and
 * libresty_ffi_python.so (the original's examples use both): the second is a
 * symlink, so dlopen finds the object already loaded. Should two distinct
 * copies of this file be loaded, they still share one interpreter: each starts
 * Python through the first ffi_python3_start in the global scope (the loader
 * is loaded with is_global), and Python already running is not started again.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#define RC_BAD_CFG      2       /* cfg is not "module,function[,rest]" */
#define RC_NO_PYTHON    3       /* Python cannot run: loaded without is_global,
                                   or the interpreter could not start */
#define RC_PY_ERROR     -1      /* import or call raised: see the error log */


static pthread_once_t  python_once = PTHREAD_ONCE_INIT;
static int             python_ok;


/*
 * Says on stderr when this process cannot read `path` (a directory Python
 * needs). The usual cause: nginx's workers run as nginx.conf's user (nobody,
 * www-data), which cannot read a Python or modules kept under /root.
 */
static void
explain_unreadable(const char *what, const char *path)
{
    if (path == NULL || path[0] == '\0' || access(path, R_OK | X_OK) == 0) {
        return;
    }

    fprintf(stderr, "ffi_python3: %s %s cannot be read by this process (uid %d): %s; "
            "Python, its standard library and the runtime's modules must be readable by "
            "the user the workers run as (nginx: the user directive of nginx.conf; "
            "nobody and www-data cannot read /root)\n",
            what, path, (int) getuid(), strerror(errno));
}


/* Each entry of PYTHONPATH that this process cannot read. */
static void
explain_unreadable_pythonpath(void)
{
    char  *copy, *rest, *entry;

    if (getenv("PYTHONPATH") == NULL || (copy = strdup(getenv("PYTHONPATH"))) == NULL) {
        return;
    }

    rest = copy;
    while ((entry = strsep(&rest, ":")) != NULL) {
        explain_unreadable("PYTHONPATH entry", entry);
    }

    free(copy);
}


static void
python_start(void)
{
    PyConfig     config;
    PyStatus     status;

    if (Py_IsInitialized()) {
        /* Started by another copy of this loader (or by the host). */
        python_ok = 1;
        return;
    }

    PyConfig_InitPythonConfig(&config);

    /* nginx and Envoy own the process's signals. */
    config.install_signal_handlers = 0;
    config.parse_argv = 0;

    /*
     * The program is nginx or Envoy, not python: without PYTHONHOME, find
     * the standard library under the prefix we were built against.
     */
    if (getenv("PYTHONHOME") == NULL) {
        status = PyConfig_SetBytesString(&config, &config.home, PYTHON_PREFIX);
        if (PyStatus_Exception(status)) {
            goto failed;
        }
    }

    status = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(status)) {
        goto failed;
    }

    PyConfig_Clear(&config);

    /* Release the GIL: runtimes' threads take it when they run Python. */
    PyEval_SaveThread();
    python_ok = 1;
    return;

failed:

    fprintf(stderr, "ffi_python3: cannot start Python: %s\n",
            status.err_msg ? status.err_msg : "unknown error");
    explain_unreadable("Python's home", getenv("PYTHONHOME") ? getenv("PYTHONHOME") : PYTHON_PREFIX);
    PyConfig_Clear(&config);
}


/*
 * Starts Python once per process; returns whether it runs. Exported, and
 * called through the global scope (see the top of this file).
 */
int
ffi_python3_start(void)
{
    pthread_once(&python_once, python_start);
    return python_ok;
}


/*
 * Loaded RTLD_LOCAL (`is_global` forgotten), libpython's symbols are not in
 * the global scope, and every extension module (_socket, _ctypes, cffi's
 * backend...) fails to import with "undefined symbol: Py...". Say so at once.
 */
static int
python_is_global(void)
{
    void  *global, *found;

    /*
     * The program's handle searches the global scope only (RTLD_DEFAULT
     * would also search this library's own dependencies, libpython among
     * them, and always succeed).
     */
    global = dlopen(NULL, RTLD_NOW);
    found = global != NULL ? dlsym(global, "Py_IsInitialized") : NULL;
    if (global != NULL) {
        dlclose(global);
    }

    if (found != NULL) {
        return 1;
    }

    fprintf(stderr, "ffi_python3: load the Python loader with { is_global = true }, "
            "e.g. ngx.load_ffi(\"ffi_python3\", cfg, { is_global = true }): Python's "
            "extension modules need libpython's symbols in the global scope (rc %d)\n",
            RC_NO_PYTHON);
    return 0;
}


static int
python_running(void)
{
    int  (*start)(void);

    /* This very function, or the same one in a copy loaded earlier. */
    *(void **) &start = dlsym(RTLD_DEFAULT, "ffi_python3_start");

    return (start != NULL ? start : ffi_python3_start)();
}


/* Puts `dir` first on sys.path unless it is there already. */
static int
add_sys_path(const char *dir)
{
    int        rc;
    PyObject  *path, *item;

    path = PySys_GetObject("path");     /* borrowed */
    item = PyUnicode_DecodeFSDefault(dir);
    if (path == NULL || item == NULL) {
        Py_XDECREF(item);
        return -1;
    }

    rc = PySequence_Contains(path, item);
    if (rc == 0) {
        rc = PyList_Insert(path, 0, item);
    }

    Py_DECREF(item);
    return rc < 0 ? -1 : 0;
}


/* Imports `name`, or reloads it when asked and already imported. */
static PyObject *
import_module(const char *name, int reload)
{
    PyObject  *pname, *module, *fresh;

    pname = PyUnicode_DecodeFSDefault(name);
    if (pname == NULL) {
        return NULL;
    }

    module = PyImport_GetModule(pname);
    Py_DECREF(pname);

    if (module == NULL) {
        return PyErr_Occurred() ? NULL : PyImport_ImportModule(name);
    }

    if (!reload) {
        return module;
    }

    fresh = PyImport_ReloadModule(module);
    Py_DECREF(module);
    return fresh;
}


static int
call_init(char *module, const char *func, const char *rest, void *tq)
{
    int        reload = 0;
    long       rc = RC_PY_ERROR;
    char      *slash, *dir = NULL;
    size_t     len;
    PyObject  *mod = NULL, *fn = NULL, *res = NULL;

    slash = strrchr(module, '/');
    if (slash != NULL) {
        *slash = '\0';
        dir = module[0] ? module : "/";
        if (add_sys_path(dir) != 0) {
            goto done;
        }
        module = slash + 1;
    }

    len = strlen(module);
    if (len > 0 && module[len - 1] == '?') {
        module[len - 1] = '\0';
        reload = 1;
    }

    mod = import_module(module, reload);
    if (mod == NULL) {
        goto done;
    }

    fn = PyObject_GetAttrString(mod, func);
    if (fn == NULL) {
        goto done;
    }

    res = PyObject_CallFunction(fn, "NN", PyLong_FromVoidPtr((void *) rest),
                                PyLong_FromVoidPtr(tq));
    if (res == NULL) {
        goto done;
    }

    if (res == Py_None) {
        rc = 0;

    } else {
        rc = PyLong_AsLong(res);
        if (rc == -1 && PyErr_Occurred()) {
            rc = RC_PY_ERROR;
        }
    }

done:

    if (PyErr_Occurred()) {
        fprintf(stderr, "ffi_python3: %s.%s failed:\n", module, func);
        if (PyErr_ExceptionMatches(PyExc_ImportError)) {
            explain_unreadable("the module's directory", dir);
            explain_unreadable_pythonpath();
        }
        PyErr_Print();
        fflush(stderr);
    }

    Py_XDECREF(res);
    Py_XDECREF(fn);
    Py_XDECREF(mod);
    return (int) rc;
}


int
libffi_init(char *cfg, void *tq)
{
    int               rc;
    char             *copy, *module, *func, *rest;
    PyGILState_STATE  gil;

    if (cfg == NULL) {
        fprintf(stderr, "ffi_python3: cfg \"module,function[,rest]\" is required\n");
        return RC_BAD_CFG;
    }

    copy = strdup(cfg);
    if (copy == NULL) {
        return RC_BAD_CFG;
    }

    rest = copy;
    module = strsep(&rest, ",");
    func = strsep(&rest, ",");

    if (module[0] == '\0' || func == NULL || func[0] == '\0') {
        fprintf(stderr, "ffi_python3: bad cfg \"%s\": want \"module,function[,rest]\"\n", cfg);
        free(copy);
        return RC_BAD_CFG;
    }

    if (!python_is_global() || !python_running()) {
        free(copy);
        return RC_NO_PYTHON;
    }

    gil = PyGILState_Ensure();
    rc = call_init(module, func, rest, tq);
    PyGILState_Release(gil);

    free(copy);
    return rc;
}
