// An echo runtime for resty_ffi in Go, written only against the runtime C ABI
// of the original lua-resty-ffi (SPEC §2): every request comes back unchanged.
//
// Build: go build -buildmode=c-shared -o libgo_echo.so .
// Lua:   local rt = ngx.load_ffi("go_echo"); local ok, res = rt:echo("hi")
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

import "unsafe"

// serve answers the tasks of one queue until the runtime is unloaded.
func serve(tq unsafe.Pointer) {
	for {
		task := C.ngx_http_lua_ffi_task_poll(tq)
		if task == nil {
			return // unloaded: tq is gone
		}
		var n C.int
		req := C.ngx_http_lua_ffi_get_req(task, &n)
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

//export libffi_init
func libffi_init(cfg *C.char, tq unsafe.Pointer) C.int {
	go serve(tq)
	return 0
}

func main() {}
