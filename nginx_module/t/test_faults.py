"""Fault injection on a real nginx, with the C (test_runtime) and Rust
(rust_echo) runtimes: client aborts, unloads under load, reloads and quits
with calls in flight, queue-full bursts, runtimes that never answer, answer
late or answer oddly, and a soak with the worker's RSS sampled.

Every call returns exactly once, with its answer or a clear error; no worker
crashes; no alert reaches the error log (the fixture checks at teardown).

Sizes (environment): RESTY_FFI_ABORTS (10000), RESTY_FFI_SOAK_CALLS (300000;
the `soak_test` Bazel target runs 1000000), RESTY_FFI_SOAK_SAMPLE_S (2).
"""

import concurrent.futures
import os
import random
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_until

ABORTS = int(os.environ.get("RESTY_FFI_ABORTS", "10000"))
SOAK_CALLS = int(os.environ.get("RESTY_FFI_SOAK_CALLS", "300000"))
SOAK_SAMPLE_S = float(os.environ.get("RESTY_FFI_SOAK_SAMPLE_S", "2"))
INT_MAX, INT_MIN = 2**31 - 1, -(2**31)

LOAD = """require('resty_ffi')
local function c_rt(opts) return assert(ngx.load_ffi('test_runtime', 'threads=64', opts)) end
local function rust_rt() return assert(ngx.load_ffi('rust_echo', '2')) end
"""

# Lua: `calls` concurrent calls of `rt` (light threads); says how many got
# their own answer, how many failed with `err`, and how many else.
FAN_OUT = """
local function fan_out(rt, calls, req_of, err)
    local threads = {}
    for i = 1, calls do
        threads[i] = ngx.thread.spawn(function() return rt:call(req_of(i)) end)
    end
    local good, failed, other = 0, 0, 0
    for i = 1, calls do
        local _, ok, res = ngx.thread.wait(threads[i])
        if ok and res == tostring(i) then good = good + 1
        elseif not ok and res == err then failed = failed + 1
        else other = other + 1 end
    end
    return good, failed, other
end
"""


def location(path, lua):
    return f"location {path} {{ content_by_lua_block {{ {LOAD} {FAN_OUT} {lua} }} }}"


def rss_kb(pid):
    return int(re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1))


CHECK = location("/check", """
    local echo = function(i) return tostring(i) end
    local c_good = fan_out(c_rt(), 500, function(i) return 'sleep:' .. (i % 5) .. ':' .. i end)
    local rust_good = fan_out(rust_rt(), 500, echo)
    ngx.say(c_good + rust_good)""")


def test_client_aborts_while_calls_wait(nginx):
    n = nginx(workers=1, http="lua_check_client_abort on;", server=location("/t", """
        ngx.say(c_rt():call(ngx.var.arg_req))""") + CHECK)
    assert n.get("/check") == (200, b"1000\n")
    pid = n.worker_pids()
    rng = random.Random(11)
    plan = [(rng.randint(0, 50), rng.random()) for _ in range(ABORTS)]

    def abort(delay_ms, fraction):
        with socket.create_connection(("127.0.0.1", n.port)) as s:
            s.sendall(f"GET /t?req=sleep:{delay_ms}:x HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(delay_ms * fraction / 1000)  # gone before the answer

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        list(pool.map(lambda p: abort(*p), plan))
    took = time.monotonic() - started
    assert n.get("/check") == (200, b"1000\n")
    assert n.worker_pids() == pid
    print(f"\n{ABORTS} client aborts in {took:.1f} s; then 1000/1000 calls answered")


def test_unload_and_load_again_under_load(nginx):
    # 200 clients call the C runtime (unpinned: its library is closed and
    # opened again) and the Rust one while both are unloaded 20 times.
    n = nginx(workers=1, server=location("/t", """
        local c, rust = c_rt({ unpin = true }), rust_rt()
        local _, a = c:call('sleep:' .. (ngx.var.arg_i % 7) .. ':' .. ngx.var.arg_i)
        local _, b = rust:call(ngx.var.arg_i)
        ngx.say(a, ' ', b)""") + location("/unload", """
        c_rt({ unpin = true }):__unload()
        rust_rt():__unload()
        collectgarbage()
        ngx.say('unloaded')""") + CHECK)
    unloaded = "resty_ffi: runtime unloaded"
    stop, lock = threading.Event(), threading.Lock()
    outcomes = {"answered": 0, "unloaded": 0}
    bad = []

    def client(k):
        i = k
        while not stop.is_set():
            status, body = n.get(f"/t?i={i}")
            text = body.decode()
            if (status, text) == (200, f"{i} {i}\n"):
                outcome = "answered"
            elif status == 200 and unloaded in text:
                outcome = "unloaded"
            else:
                outcome = None
                bad.append((i, status, text))
            if outcome:
                with lock:
                    outcomes[outcome] += 1
            i += 200

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        clients = [pool.submit(client, k) for k in range(200)]
        for _ in range(20):
            time.sleep(0.1)
            assert n.get("/unload") == (200, b"unloaded\n")
        stop.set()
        for c in clients:
            c.result()
    assert not bad, bad[:5]
    assert outcomes["answered"] > 1000, outcomes
    assert n.get("/check") == (200, b"1000\n")
    print(f"\nunload x20 under 200 clients: {outcomes}")


def test_reload_and_quit_with_500_calls_in_flight(nginx):
    fan = location("/fan", """
        local good, _, other = fan_out(c_rt({ timeout = 10 }), 500,
                                       function(i) return 'sleep:100:' .. i end)
        ngx.say(good, ' ', other)""")
    twice = location("/twice", """
        local rt = c_rt({ timeout = 10 })
        local _, a = rt:call('a')
        ngx.sleep(2)
        local _, b = rt:call('b')
        ngx.say(a, b, ' ', ngx.worker.exiting())""")
    n = nginx(workers=2, server=fan + twice)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for signal_ in ["reload", "quit"]:
            calls = [pool.submit(n.get, "/fan") for _ in range(2)] + [pool.submit(n.get, "/twice")]
            time.sleep(0.5)
            started = time.monotonic()
            n.signal(signal_)
            assert [c.result() for c in calls[:2]] == [(200, b"500 0\n")] * 2
            assert calls[2].result() == (200, b"ab true\n")
            assert time.monotonic() - started < 4, "the call made while exiting waited for its timeout"
            if signal_ == "reload":
                assert wait_until(lambda: n.get("/twice")[0] == 200, 10)
    assert n.proc.wait(timeout=15) == 0


def test_queue_full_bursts(nginx):
    # max_queue 16: while the runtime's one thread is busy, exactly 16 of
    # 1000 callers are queued and answered; the others get "task queue full".
    n = nginx(server=location("/t", """
        local rt = assert(ngx.load_ffi('test_runtime', 'threads=1', { max_queue = 16 }))
        local out = {}
        for round = 1, 3 do
            local busy = ngx.thread.spawn(function() return rt:call('sleep:300:busy') end)
            ngx.sleep(0.05)
            out[round] = table.concat({ fan_out(rt, 1000, tostring, 'resty_ffi: task queue full') }, ' ')
            assert(select(2, ngx.thread.wait(busy)))
        end
        ngx.say(table.concat(out, ','))"""))
    assert n.get("/t") == (200, b"16 984 0,16 984 0,16 984 0\n")


@pytest.mark.parametrize("rc", [0, 1, -1, INT_MIN, INT_MAX])
def test_every_odd_answer(nginx, rc):
    # (rsp size, rsp_len) -> what Lua gets; rsp holds `size` 'x' and a NUL.
    cases = {
        (0, 0): None, (0, 8): None, (0, -1): "neg", (0, INT_MIN): "neg",
        (8, 0): "x" * 8, (8, 8): "x" * 8, (8, 3): "xxx", (8, -1): "neg", (8, INT_MIN): "neg",
        (1 << 20, 1 << 20): "x" * (1 << 20),
    }
    neg = "resty_ffi: runtime answered with a negative length"
    n = nginx(server=location("/t", """
        local rt = c_rt()
        local ok, a, b = rt:call(ngx.var.arg_req)
        ngx.print(tostring(ok), '|', tostring(a), '|', tostring(b))"""))
    for (size, rsp_len), rsp in cases.items():
        status, body = n.get(f"/t?req=answer:{rc}:{size}:{rsp_len}:0")
        if rsp == "neg":
            want = f"false|{neg}|nil"
        elif rc == 0:
            want = f"true|{rsp or ''}|nil"
        else:
            want = f"false|{rc}|{'nil' if rsp is None else rsp}"
        assert (status, body.decode()) == (200, want), (size, rsp_len)


def test_never_and_late_answers(nginx):
    # A runtime that never answers, and answers that arrive after their
    # callers timed out: the callers get the timeout error at the timeout,
    # the late answers are freed, and the runtime serves the next calls.
    n = nginx(server=location("/t", """
        local rt = c_rt({ timeout = 0.2 })
        local never = { fan_out(rt, 50, function() return 'never' end, 'resty_ffi: runtime did not answer in time') }
        local late = { fan_out(rt, 50, function(i) return 'sleep:400:' .. i end,
                               'resty_ffi: runtime did not answer in time') }
        ngx.sleep(0.5)
        local after = { fan_out(rt, 50, tostring) }
        ngx.say(table.concat(never, ' '), ',', table.concat(late, ' '), ',', after[1])""") + CHECK)
    started = time.monotonic()
    assert n.get("/t") == (200, b"0 50 0,0 50 0,50\n")
    took = time.monotonic() - started
    # Two rounds of calls that give up at 0.2 s, and the 0.5 s sleep: not
    # sooner, and not much later.
    assert 0.9 <= took < 3, took
    assert n.get("/check") == (200, b"1000\n")


def soak(nginx, calls, sample_s):
    """`calls` calls (sizes 0 B-64 KB, 1000 at a time, C and Rust runtimes
    alternately) in batches; returns the worker's RSS (kB) sampled between
    batches, every `sample_s` seconds or more, after the first 100,000 calls,
    and the calls/s after them."""
    n = nginx(server=location("/soak", """
        local c, rust = assert(ngx.load_ffi('test_runtime', 'threads=2')), rust_rt()
        local sizes = { 0, 1, 100, 1000, 4096, 16384, 65536 }
        local payloads = {}
        for i = 1, 64 do
            local size = i <= #sizes and sizes[i] or math.random(0, 65536)
            payloads[i] = string.rep(string.char(32 + i), size)
        end
        local per_thread = tonumber(ngx.var.arg_calls) / 1000
        local threads = {}
        for t = 1, 1000 do
            threads[t] = ngx.thread.spawn(function()
                local rt, bad = t % 2 == 0 and c or rust, 0
                for k = 1, per_thread do
                    local p = payloads[(t + k) % 64 + 1]
                    local ok, res = rt:call(p)
                    if not ok or res ~= p then bad = bad + 1 end
                end
                return bad
            end)
        end
        local bad = 0
        for t = 1, 1000 do bad = bad + select(2, ngx.thread.wait(threads[t])) end
        -- The RSS samples compare live memory, not garbage or malloc's caches.
        collectgarbage()
        local ffi = require('ffi')
        pcall(ffi.cdef, 'int malloc_trim(size_t pad);')
        ffi.C.malloc_trim(0)
        ngx.say(bad)"""))
    pid = n.worker_pids()[0]
    batch, warmup = 50000, 100000
    assert calls > warmup and calls % batch == 0
    for _ in range(warmup // batch):
        assert n.get(f"/soak?calls={batch}", timeout=600) == (200, b"0\n")
    samples = [rss_kb(pid)]
    started = sampled = time.monotonic()
    for _ in range((calls - warmup) // batch):
        assert n.get(f"/soak?calls={batch}", timeout=600) == (200, b"0\n")
        if time.monotonic() - sampled >= sample_s:
            samples.append(rss_kb(pid))
            sampled = time.monotonic()
    rate = (calls - warmup) / (time.monotonic() - started)
    samples.append(rss_kb(pid))
    assert n.worker_pids() == [pid]
    return samples, rate


def test_soak(nginx):
    samples, rate = soak(nginx, SOAK_CALLS, SOAK_SAMPLE_S)
    growth = samples[-1] - samples[0]
    print(f"\nsoak: {SOAK_CALLS} calls (0 B-64 KB, 1000 concurrent, C + Rust), {rate:,.0f} calls/s after "
          f"warm-up; worker RSS (kB) every {SOAK_SAMPLE_S:g} s: {samples}; growth {growth} kB "
          f"(max - first {max(samples) - samples[0]} kB)")
    assert growth < 4096, samples
