#!/usr/bin/env python3
"""Runs docs/getting-started.md as a user would: every fenced block, in order.

Each block is preceded by a marker comment saying what to do with it:
  <!-- test: build -->           the build commands: run outside Bazel; under
                                 Bazel the same outputs (//packaging:packages,
                                 bazel-bin) come as the test's data
  <!-- test: run[; wait P][; stopped P] -->
                                 run in bash from the checkout (exported
                                 variables carry over to the next block); then
                                 wait until port P answers / is closed
  <!-- test: write PATH -->      the block is the file PATH
  <!-- test: output -->          the exact output of the run block before it
  <!-- test: deb -->             run by packaging/test_deb.sh (apt install)
A block without a marker fails the test. /srv/resty_ffi_demo becomes a temporary
directory and the ports (8080, 10000, 9901) free ones.

    python3 docs/test_getting_started.py     (runs ci/package.sh first)
"""

import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "hosts"))
import hosts  # noqa: E402

ROOT, BIN = hosts.ROOT, hosts.BIN
GUIDE = ROOT / "docs" / "getting-started.md"
UNDER_BAZEL = bool(os.environ.get("TEST_SRCDIR"))
DEMO_PATH = "/srv/resty_ffi_demo"
PORTS = ["8080", "10000", "9901"]

MARKER = re.compile(r"<!-- test: (.*?) -->\n```(\w*)\n(.*?)```\n", re.S)
FENCE = re.compile(r"^```", re.M)


def blocks():
    """(kind, arguments, text) of every fenced block, in order."""
    text = GUIDE.read_text()
    found = [(m.group(1).strip(), m.group(3)) for m in MARKER.finditer(text)]
    fences = len(FENCE.findall(text)) // 2
    assert len(found) == fences, f"{fences - len(found)} fenced block(s) in {GUIDE.name} without a test marker"
    return found


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait(cond, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} after {timeout}s")


def checkout_view(work):
    """Under Bazel: a directory that looks like the checkout after
    ci/package.sh (the source tree, bazel-bin, target/dist)."""
    view = work / "checkout"
    view.mkdir()
    for entry in ROOT.iterdir():
        if entry.name != "target" and not entry.name.startswith("bazel-"):
            (view / entry.name).symlink_to(entry)
    (view / "bazel-bin").symlink_to(BIN)
    dist = view / "target" / "dist"
    dist.mkdir(parents=True)
    version = re.search(r'^version = "(.*)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    shutil.copy(BIN / "packaging" / "resty_ffi_nginx.deb", dist / f"libnginx-mod-http-resty-ffi_{version}_{arch}.deb")
    shutil.copy(BIN / "packaging" / "resty_ffi_envoy.tar.gz",
                dist / f"resty_ffi-envoy-{version}-linux-{os.uname().machine}.tar.gz")
    return view


def main():
    work = pathlib.Path(tempfile.mkdtemp(prefix="resty_ffi_guide_"))
    demo = work / "demo"
    demo.mkdir()
    # nginx's workers (www-data) read the runtime and resty_ffi.lua under it.
    for d in (work, demo):
        d.chmod(0o755)
    ports = dict(zip(PORTS, map(str, hosts.free_ports(len(PORTS)))))
    state = work / "env.sh"
    state.write_text("")
    cwd = checkout_view(work) if UNDER_BAZEL else ROOT
    last_output = None

    def substitute(text):
        text = text.replace(DEMO_PATH, str(demo))
        return re.sub(r"\b(" + "|".join(PORTS) + r")\b", lambda m: ports[m.group(1)], text)

    def run(script, name):
        out = work / f"{name}.out"
        with open(out, "wb") as f:
            # Output goes to a file: a server started in the background keeps it open.
            proc = subprocess.run(["bash", "-c", f"set -eo pipefail\nsource {state}\n{script}\nexport -p > {state}"],
                                  cwd=cwd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=900)
        text = out.read_text(errors="replace")
        assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{script}\n{text}"
        return text

    def step(i, kind, text):
        nonlocal last_output
        name = f"block_{i:02d}"
        if kind == "build":
            if not UNDER_BAZEL:
                run(text, name)
            # What the rest of the guide uses from the build.
            for pattern in ["target/dist/libnginx-mod-http-resty-ffi_*.deb", "target/dist/resty_ffi-envoy-*.tar.gz",
                            "bazel-bin/nginx_module/ngx_http_resty_ffi_module.so"]:
                assert list(cwd.glob(pattern)), f"the build made no {pattern}"
        elif kind == "output":
            assert last_output == text, f"expected:\n{text}\ngot:\n{last_output}"
        elif kind.startswith("write "):
            path = pathlib.Path(substitute(kind[len("write "):]))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(substitute(text))
        elif kind.split(";")[0].strip() == "run":
            last_output = run(substitute(text), name)
            for option in kind.split(";")[1:]:
                what, port = option.split()
                port = int(ports[port])
                if what == "wait":
                    wait(lambda: port_open(port), f"nothing listens on {port}")
                elif what == "stopped":
                    wait(lambda: not port_open(port), f"port {port} still open")
                else:
                    raise AssertionError(f"unknown option {option!r}")
        else:
            raise AssertionError(f"unknown marker {kind!r}")

    cases = []
    for i, (kind, text) in enumerate(blocks(), 1):
        if kind == "deb":
            print(f"block {i:02d} (deb): run by packaging/test_deb.sh (//packaging:deb_install_test)")
        else:
            cases.append((f"block {i:02d} ({kind})", lambda i=i, kind=kind, text=text: step(i, kind, text)))

    def case_logs_are_clean():
        log = (demo / "nginx" / "logs" / "error.log").read_text()
        assert "[alert]" not in log and "[emerg]" not in log and "exited on signal" not in log, log
        envoy_log = (demo / "envoy.log").read_text()
        assert "Caught" not in envoy_log and "resty_ffi: script failed" not in envoy_log, envoy_log

    try:
        hosts.run(cases + [("logs are clean", case_logs_are_clean)])
    finally:
        pid = demo / "envoy.pid"
        if pid.exists():
            subprocess.run(["kill", pid.read_text().strip()], capture_output=True)
        if (demo / "nginx" / "logs" / "nginx.pid").exists():
            subprocess.run(["nginx", "-p", str(demo / "nginx"), "-c", "nginx.conf", "-s", "stop"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
