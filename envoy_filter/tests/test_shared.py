"""opts.shared on Envoy: one runtime per process for all worker threads (one
libffi_init, one set of runtime threads), each answer going back to the
worker and stream that asked; the default stays one runtime per worker."""

import concurrent.futures
import pathlib
import tempfile

import harness

SCRIPT = r"""
require("resty_ffi")
local shared = assert(ngx.load_ffi("lifecycle_runtime", "%(file)s|shared", { shared = true }))
local per_worker = assert(ngx.load_ffi("lifecycle_runtime", "%(file)s|per-worker"))

function envoy_on_request(handle)
  local path = handle:headers():get(":path")
  local rt = path:sub(1, 7) == "/shared" and shared or per_worker
  if path == "/shared/unload" then
    shared:__unload()
    handle:respond({ [":status"] = "200" }, tostring(shared:call("after")))
    return
  end
  local ok, res = rt:call(path)
  handle:respond({ [":status"] = "200" }, tostring(ok) .. "|" .. tostring(res))
end
"""


def case_one_runtime_serves_every_worker():
    work = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_shared_"))
    life = work / "life.txt"
    port, admin = harness.free_ports(2)
    envoy = harness.Envoy([harness.listener("shared", port, harness.ours(SCRIPT % {"file": life}))], admin,
                          concurrency=2)
    try:
        def call(i):
            path = f"/{'shared' if i % 2 else 'own'}/{i}"
            return harness.request(port, path)[2], path

        # Many connections, so both workers serve requests and load the script.
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(call, range(400)))
        assert all(body == f"true|{path}".encode() for body, path in results), results[:3]
        events = life.read_text().split("\n")
        assert events.count("init per-worker") == 2, events
        assert events.count("init shared") == 1, events

        # A worker that unloads its holder stops using it; the runtime goes on
        # for the other worker until every holder let go.
        assert harness.request(port, "/shared/unload")[2] == b"false"
        assert "exit shared" not in life.read_text()
        envoy.assert_no_crash()
    finally:
        envoy.stop()
    assert harness.wait_until(lambda: "exit shared" in life.read_text(), 10) is None


CASES = [(name, fn) for name, fn in globals().items() if name.startswith("case_")]

if __name__ == "__main__":
    harness.run(CASES)
