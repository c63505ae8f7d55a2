// Package restyffi is a small helper for Go runtimes of resty_ffi: the
// host's log in the style of log/slog (Go 1.21's; this package needs only
// Go 1.19), and serving a queue from Go's netpoller (resty_ffi_queue_fd)
// instead of a goroutine blocked in task_poll.
//
//	log := restyffi.NewLogger(tq)
//	log.Warn("slow upstream", "ms", 250)   // nginx: [warn] ... go_echo: slow upstream ms=250
//	restyffi.ServeNetpoll(tq, func(task unsafe.Pointer) { ... respond ... })
package restyffi

/*
#cgo LDFLAGS: -shared

// Provided by the host (nginx module or Envoy filter), resolved at load time.
int resty_ffi_task_try_poll(void *tq, void **task);
int resty_ffi_queue_fd(void *tq);
void resty_ffi_log(void *tq, int level, const char *msg, int len);
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"unsafe"
)

// Level is a host log level, in nginx's numbering.
type Level int

const (
	LevelError Level = 4
	LevelWarn  Level = 5
	LevelInfo  Level = 7
	LevelDebug Level = 8
)

// Log writes msg to the host's log (nginx's error log, Envoy's log) at
// level, prefixed with the runtime's library name. It never blocks.
func Log(tq unsafe.Pointer, level Level, msg string) {
	if len(msg) == 0 {
		C.resty_ffi_log(tq, C.int(level), nil, 0)
		return
	}
	b := []byte(msg)
	C.resty_ffi_log(tq, C.int(level), (*C.char)(unsafe.Pointer(&b[0])), C.int(len(b)))
}

// Logger writes slog-style lines, "msg key=value ...", to the host's log.
type Logger struct {
	tq    unsafe.Pointer
	attrs string
}

// NewLogger logs for the runtime of tq (nil: no library name prefix).
func NewLogger(tq unsafe.Pointer) *Logger { return &Logger{tq: tq} }

// With returns a Logger that adds args (key, value pairs) to every line.
func (l *Logger) With(args ...any) *Logger {
	return &Logger{tq: l.tq, attrs: l.attrs + format(args)}
}

func (l *Logger) Debug(msg string, args ...any) { l.Log(LevelDebug, msg, args...) }
func (l *Logger) Info(msg string, args ...any)  { l.Log(LevelInfo, msg, args...) }
func (l *Logger) Warn(msg string, args ...any)  { l.Log(LevelWarn, msg, args...) }
func (l *Logger) Error(msg string, args ...any) { l.Log(LevelError, msg, args...) }

// Log writes one line at level.
func (l *Logger) Log(level Level, msg string, args ...any) {
	Log(l.tq, level, msg+l.attrs+format(args))
}

// format renders key, value pairs as slog's text handler does (a value
// with spaces, quotes or '=' is quoted; a lone value gets the key !BADKEY).
func format(args []any) string {
	var b strings.Builder
	for i := 0; i < len(args); i += 2 {
		key, value := "!BADKEY", args[i]
		if k, ok := args[i].(string); ok && i+1 < len(args) {
			key, value = k, args[i+1]
		} else {
			i--
		}
		s := fmt.Sprint(value)
		if s == "" || strings.ContainsAny(s, " \"=\t\n") {
			s = fmt.Sprintf("%q", s)
		}
		fmt.Fprintf(&b, " %s=%s", key, s)
	}
	return b.String()
}

// ServeNetpoll calls handle for every task of tq from Go's netpoller: it
// waits for the queue's fd to be readable (no goroutine or thread blocks
// in task_poll) and takes the tasks with resty_ffi_task_try_poll. handle
// runs on the serving goroutine and must answer (or hand on) each task.
// Returns nil once the runtime was unloaded (tq is gone then).
func ServeNetpoll(tq unsafe.Pointer, handle func(task unsafe.Pointer)) error {
	fd := int(C.resty_ffi_queue_fd(tq))
	if fd < 0 {
		return errors.New("restyffi: the host has no queue fd")
	}
	// The host owns fd: the os.File (which closes what it holds) gets a
	// duplicate. The eventfd is non-blocking, so the File is pollable.
	dup, err := syscall.Dup(fd)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), "resty_ffi_queue")
	defer f.Close()
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	ended := false
	for !ended {
		err = conn.Read(func(uintptr) bool {
			for {
				var task unsafe.Pointer
				switch C.resty_ffi_task_try_poll(tq, &task) {
				case 1:
					handle(task)
				case 0:
					return false // wait until the fd is readable
				default:
					ended = true
					return true
				}
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}
