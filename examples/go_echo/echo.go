// An echo runtime for resty_ffi in Go, written only against the runtime C ABI
// of the original lua-resty-ffi (SPEC §2): every request comes back unchanged.
//
// Build: go build -buildmode=c-shared -o libgo_echo.so .
// Lua:   local rt = ngx.load_ffi("go_echo"); local ok, res = rt:echo("hi")
//
// cfg (optional, comma-separated): "netpoll" serves from Go's netpoller
// (restyffi.ServeNetpoll: no goroutine blocks in task_poll); "log" makes a
// request "log:<level>:<msg>" write <msg> to the host's log with
// restyffi.Logger (level: debug, info, warn, error) and answer "logged".
package main

/*
#cgo LDFLAGS: -shared
#include <stdlib.h>
#include <string.h>

// Provided by the host (nginx module or Envoy filter), resolved at load time.
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *task, int *len);
void ngx_http_lua_ffi_respond(void *task, int rc, char *rsp, int rsp_len);
*/
import "C"

import (
	"strings"
	"unsafe"

	"resty_ffi/examples/go_echo/restyffi"
)

// serve answers the tasks of one queue until the runtime is unloaded.
func serve(tq unsafe.Pointer, log *restyffi.Logger) {
	for {
		task := C.ngx_http_lua_ffi_task_poll(tq)
		if task == nil {
			return // unloaded: tq is gone
		}
		answer(task, log)
	}
}

// answer echoes the task's request (or logs it, see the cfg above).
func answer(task unsafe.Pointer, log *restyffi.Logger) {
	{
		var n C.int
		req := C.ngx_http_lua_ffi_get_req(task, &n)
		if log != nil && n > 4 && C.GoStringN(req, 4) == "log:" {
			logRequest(task, log, C.GoStringN(req, n)[4:])
			return
		}
		// A NULL response with length 0 is an empty answer; a non-NULL one
		// with length 0 would be read as a C string.
		var rsp *C.char
		if n > 0 {
			rsp = (*C.char)(C.malloc(C.size_t(n)))
			C.memcpy(unsafe.Pointer(rsp), unsafe.Pointer(req), C.size_t(n))
		}
		C.ngx_http_lua_ffi_respond(task, 0, rsp, n) // the host frees rsp
	}
}

// logRequest: "<level>:<msg>" -> the host's log, answered "logged".
func logRequest(task unsafe.Pointer, log *restyffi.Logger, spec string) {
	level, msg, _ := strings.Cut(spec, ":")
	levels := map[string]restyffi.Level{"debug": restyffi.LevelDebug, "info": restyffi.LevelInfo,
		"warn": restyffi.LevelWarn, "error": restyffi.LevelError}
	log.Log(levels[level], msg, "from", "go", "note", "a b")
	C.ngx_http_lua_ffi_respond(task, 0, C.CString("logged"), 0)
}

//export libffi_init
func libffi_init(cfg *C.char, tq unsafe.Pointer) C.int {
	opts := ""
	if cfg != nil {
		opts = C.GoString(cfg)
	}
	var log *restyffi.Logger
	if strings.Contains(opts, "log") {
		log = restyffi.NewLogger(tq)
	}
	if strings.Contains(opts, "netpoll") {
		go restyffi.ServeNetpoll(tq, func(task unsafe.Pointer) { answer(task, log) })
	} else {
		go serve(tq, log)
	}
	return 0
}

func main() {}
