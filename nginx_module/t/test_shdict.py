"""Shared dicts on nginx: the cross-host fixture tests/fixtures/shdict_cases.lua
(answers in shdict_expected.json, which the Envoy suite checks too), runtimes
reaching the real lua_shared_dict zones (resty_ffi_shdict_*), and exactness
under contention between runtime threads and two workers."""

import concurrent.futures
import json
import time

import pytest

from conftest import FIXTURES, wait_until

EXPECTED = json.loads((FIXTURES / "shdict_expected.json").read_text())

DICTS = "lua_shared_dict dict 1m; lua_shared_dict small 64k;"

SERVER = """
    location /case/ {
        content_by_lua_block {
            local cases = require('shdict_cases')
            ngx.print(cases[ngx.var.uri:sub(#'/case/' + 1)](tonumber(ngx.var.arg_n)))
        }
    }
    location /rt {
        content_by_lua_block {
            require('resty_ffi')
            local rt = assert(ngx.load_ffi('test_runtime', 'threads=2'))
            ngx.print(select(2, rt:call(ngx.var.arg_req)))
        }
    }
    location /get {
        content_by_lua_block { ngx.print(tostring(ngx.shared.dict:get(ngx.var.arg_key))) }
    }
    location /reset {
        content_by_lua_block { ngx.shared.dict:flush_all() ngx.shared.dict:flush_expired() }
    }
"""


def start(nginx, workers=1):
    return nginx(http=DICTS, server=SERVER, workers=workers)


def case(n, name, query=""):
    status, body = n.get(f"/case/{name}{query}", timeout=60)
    assert status == 200, (name, status, body)
    return body.decode()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_fixture(nginx, name):
    n = start(nginx)
    assert case(n, name).split(";") == EXPECTED[name]


def contend(n, share):
    """Each worker does its share once (requests in parallel batches until
    both did); returns shares|hits."""
    assert n.get("/reset")[0] == 200
    deadline = time.monotonic() + 120
    ran = 0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        while ran < 2 and time.monotonic() < deadline:
            answers = list(pool.map(lambda _: case(n, "contention_share", f"?n={share}"), range(4)))
            for answer in answers:
                if answer != "skipped":
                    assert answer == "ran started 0", answer
                    ran += 1
    assert ran == 2, f"only {ran} worker(s) did their share"
    return case(n, "contention_total")


def test_contention_runtime_threads_and_two_workers(nginx):
    """4 runtime threads (2 per worker) and 2 workers' Lua each incr the same
    key 100,000 times: exactly 600,000."""
    n = start(nginx, workers=2)
    assert contend(n, 100000) == "2|600000"


def test_runtime_writes_survive_a_reload(nginx):
    """A zone keeps what a runtime wrote across `nginx -s reload`: the new
    worker's Lua and runtime read it."""
    n = start(nginx)
    assert n.get("/rt?req=shdict_set:dict:survivor:0:4:kept") == (200, b"0")
    old = set(n.worker_pids())
    n.signal("reload")
    assert wait_until(lambda: n.worker_pids() and not set(n.worker_pids()) & old, 15), "old worker still running"
    assert n.get("/get?key=survivor") == (200, b"kept")
    assert n.get("/rt?req=shdict_get:dict:survivor") == (200, b"1|kept|4")
