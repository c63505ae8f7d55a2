// A resty_ffi runtime in Go: answers each request upper-cased; an empty or
// nil request answers rc 22, "empty request".
// Build: go build -buildmode=c-shared -o libmy_runtime.so .
// Lua:   local rt = ngx.load_ffi("/path/to/libmy_runtime.so")
package main

/*
#cgo LDFLAGS: -shared
#include <stdlib.h>
#include <string.h>

// The runtime ABI, provided by the host (the nginx module or the Envoy filter).
void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *task, int *len);
void ngx_http_lua_ffi_respond(void *task, int rc, char *rsp, int rsp_len);
*/
import "C"

import (
	"bytes"
	"unsafe"
)

// respond answers a task with a copy of body in C memory (the host frees it).
func respond(task unsafe.Pointer, rc int, body []byte) {
	if len(body) == 0 {
		C.ngx_http_lua_ffi_respond(task, C.int(rc), nil, 0)
		return
	}
	rsp := C.CBytes(body) // malloc'ed
	C.ngx_http_lua_ffi_respond(task, C.int(rc), (*C.char)(rsp), C.int(len(body)))
}

func handle(task unsafe.Pointer) {
	var n C.int
	req := C.ngx_http_lua_ffi_get_req(task, &n)
	if n == 0 {
		respond(task, 22, []byte("empty request"))
		return
	}
	// The request stays valid until the task is answered.
	respond(task, 0, bytes.ToUpper(C.GoBytes(unsafe.Pointer(req), n)))
}

// libffi_init runs once per ngx.load_ffi(lib, cfg) key, per nginx worker /
// Envoy worker thread. cfg is NULL or a C string freed after this returns:
// copy it with C.GoString if you keep it.
//
//export libffi_init
func libffi_init(cfg *C.char, tq unsafe.Pointer) C.int {
	go func() {
		for {
			task := C.ngx_http_lua_ffi_task_poll(tq)
			if task == nil { // Lua unloaded the runtime: stop polling
				return
			}
			go handle(task) // each request on its own goroutine
		}
	}()
	return 0
}

func main() {}
