"""The cross-host fixture tests/fixtures/ffi_cases.lua, run unchanged on Envoy:
the same answers as the nginx suite expects from it (nginx_module/t). Lua
finds its modules through LUA_PATH here, not the filter config."""

import os
import time

import harness

PORT, ADMIN = harness.free_ports(2)

SCRIPT = r"""
local cases = require("ffi_cases")

local routes = {
  ["/echo"] = function(handle) return cases.echo("hello\0world", handle) end,
  ["/rc"] = function(handle) return cases.rc("rc:7:bad thing", handle) end,
  ["/load-errors"] = function() return cases.load_errors() end,
  ["/unload"] = function(handle) return cases.unload_then_call(handle) end,
  ["/never"] = function(handle) return cases.never_answers(handle) end,
  ["/libc-answers"] = function(handle) return cases.libc_answers(handle) end,
  ["/stray"] = function(handle) return cases.stray_arguments(handle) end,
  ["/poll-spin"] = function(handle) return cases.poll_spin(handle) end,
}

function envoy_on_request(handle)
  local route = routes[handle:headers():get(":path")]
  handle:respond({ [":status"] = "200" }, route(handle))
end
"""


def setup():
    # No lua_package_path here: LuaJIT's LUA_PATH, inherited from Envoy's
    # environment, finds both resty_ffi.lua and the fixture.
    os.environ["LUA_PATH"] = f"{harness.LUA_DIR}/?.lua;{harness.ROOT}/tests/fixtures/?.lua;;"
    return harness.Envoy([harness.listener("fixture", PORT, harness.ours(SCRIPT, lua_package_path=None))],
                         ADMIN, concurrency=2)


def teardown(envoy):
    envoy.stop()


def get(path):
    status, _, body = harness.request(PORT, path)
    assert status == 200, (path, status, body)
    return body.decode()


def case_echo():
    assert get("/echo") == "true|hello\0world"


def case_rc():
    assert get("/rc") == "false|7|bad thing"


def case_load_errors(envoy):
    unknown, no_init, init_rc = get("/load-errors").split("|")
    assert unknown.startswith('resty_ffi: load "no_such_runtime": libno_such_runtime.so: cannot open shared object file'), unknown
    assert no_init.startswith('resty_ffi: load "libm.so.6": no libffi_init'), no_init
    assert init_rc == "7"
    # In Envoy's own log, as on nginx (through Envoy's dynamic-module log).
    line = 'resty_ffi: libffi_init of test_runtime returned 7 (cfg "init_rc=7")'
    harness.wait_until(lambda: line in envoy.log_text(), 5)


STRAY = ("resty_ffi: a runtime call takes one request (rt:name(req), a string or nil) and passes only "
         "that string to the runtime, not the method name or other arguments: got ")


def case_stray_arguments_raise_but_the_handle_is_accepted():
    assert get("/stray").split(";") == [
        f"false|{STRAY}a string after the request", f"false|{STRAY}a table after the request",
        f"false|{STRAY}a number after the request", f"false|{STRAY}a third argument", "true|req"]


POLL_SPIN_ERROR = "false|resty_ffi: opts.poll_spin_us must be an integer from 0 to 100000"
POLL_SPIN = ";".join([POLL_SPIN_ERROR] * 4 + ["true|spin 20000", "true|spin 100000", "true|spin 0"])


def case_poll_spin_option():
    assert get("/poll-spin") == POLL_SPIN


def case_unload_then_call():
    assert get("/unload") == "true|before;false|resty_ffi: runtime unloaded;true;true|again"


def case_never_answering_runtime_times_out():
    started = time.monotonic()
    assert get("/never") == "false|resty_ffi: runtime did not answer in time;true|still works"
    took = time.monotonic() - started
    # The fixture's timeout is 0.2 s: not sooner, and not much later.
    assert 0.2 <= took < 5, took
    assert get("/echo") == "true|hello\0world"


def case_answers_from_glibcs_own_malloc(envoy):
    """Envoy's free() is tcmalloc's: an answer allocated by glibc's malloc
    is copied and given back to glibc (it crashed Envoy before)."""
    for _ in range(16):  # both workers, answers made on all 4 threads
        assert get("/libc-answers") == LIBC_ANSWERS
    envoy.assert_no_crash()


LIBC_ANSWERS = "true|16 y|nil;true|300000 y|nil;true|5 y|nil;false|resty_ffi: runtime answered with a negative length|nil"

# Cases that take an argument get the Envoy.
CASES = [(name, fn if fn.__code__.co_argcount else lambda _, fn=fn: fn())
         for name, fn in globals().items() if name.startswith("case_")]

if __name__ == "__main__":
    harness.run(CASES, setup, teardown)
