"""Static mode of the Envoy tests: the filter as a custom Envoy links it
(docs/envoy.md, "Static linking into a custom Envoy"), never
libresty_ffi_envoy.so. Chosen by the environment, so every test script runs
unchanged in it:

  RESTY_FFI_ENVOY_STATIC=default|vendored
      the static archive of that flavour (static/build.sh [vendored]) answers
      for `name: resty_ffi_envoy`. Envoy's module search path is an empty
      directory, and each Envoy's /proc/PID/maps is checked when it is ready
      and when it stops: no libresty_ffi_envoy*.so may be mapped.
  RESTY_FFI_ENVOY_LINKED=1
      the Envoy binary (ENVOY_BIN) has that archive linked in. Without it the
      stock binary gets the archive preloaded: a shared object made from it
      with --whole-archive, Envoy's callbacks (and, by default, LuaJIT) left to
      the process, started as `LD_PRELOAD=it envoy ...`. Envoy resolves a
      preloaded module exactly as a linked-in one: dlsym(RTLD_DEFAULT,
      "resty_ffi_envoy_envoy_dynamic_module_on_program_init") succeeds first.

A test that asks for another build of the filter (`Envoy(module_dir=...)`:
the other flavour, or the test-faults build) gets that build's archive
preloaded, and is skipped when the binary links the filter itself.
"""

import functools
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
FLAVOUR = os.environ.get("RESTY_FFI_ENVOY_STATIC") or None
LINKED = os.environ.get("RESTY_FFI_ENVOY_LINKED") == "1"
# Where cargo puts each flavour's cdylib (what tests pass as module_dir); the
# archive of the same flavour is built under the same target directory.
FLAVOUR_DIRS = {"default": ROOT / "target" / "release",
                "vendored": ROOT / "target" / "vendored-luajit" / "release",
                # tests only: panics on purpose (harness.build_test_faults)
                "test-faults": ROOT / "target" / "test-faults" / "release"}
EMPTY_DIR = ROOT / "target" / "envoy_tests" / "no_modules"
PRELOAD_NAME = "resty_ffi_envoy_preload.so"
# What the archive needs besides Envoy's callbacks (docs/envoy.md, linkopts).
LINK_LIBS = ["-lpthread", "-ldl", "-lm", "-lgcc_s"]

if FLAVOUR not in (None, "default", "vendored"):
    raise SystemExit(f"RESTY_FFI_ENVOY_STATIC={FLAVOUR}: expected default or vendored")


class Skip(Exception):
    """A case this Envoy cannot run (it links another build of the filter)."""


@functools.lru_cache(maxsize=None)
def preload(flavour):
    """Builds the flavour's archive and the shared object preloaded into the
    stock Envoy; returns the latter's path."""
    args = [str(ROOT / "envoy_filter" / "static" / "build.sh"), flavour]
    archive = pathlib.Path(subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout.split()[-1])
    out = archive.parent / PRELOAD_NAME
    subprocess.run(["cc", "-shared", "-o", str(out), "-Wl,--whole-archive", str(archive), "-Wl,--no-whole-archive",
                    *LINK_LIBS], check=True)
    return out


def flavour_of(module_dir):
    if module_dir is None:
        return FLAVOUR
    for flavour, path in FLAVOUR_DIRS.items():
        # Both resolved: target/ may be a symlink.
        if pathlib.Path(module_dir).resolve() == path.resolve():
            return flavour
    raise Skip(f"static mode: no static archive of the filter built in {module_dir}")


def apply(env, module_dir):
    """Adjusts the environment of an Envoy about to start; returns the
    preloaded object's path (None when the binary links the module)."""
    flavour = flavour_of(module_dir)
    EMPTY_DIR.mkdir(parents=True, exist_ok=True)
    env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(EMPTY_DIR)
    if LINKED:
        if flavour != FLAVOUR:
            raise Skip(f"this Envoy links the {FLAVOUR} archive; the case needs the {flavour} one")
        return None
    so = preload(flavour)
    # Only Envoy gets it: a wrapper such as nohup would fail on the undefined
    # Envoy callbacks.
    env["LD_PRELOAD"] = f"{so} {env.get('LD_PRELOAD', '')}".strip()
    return so


def check_maps(pid, preloaded):
    """Raises unless the process maps no libresty_ffi_envoy*.so (and maps the
    preloaded object, when there is one)."""
    try:
        maps = pathlib.Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return  # exited already; checked when it was ready
    paths = {line.split(maxsplit=5)[5] for line in maps.splitlines() if len(line.split(maxsplit=5)) == 6}
    opened = sorted(p for p in paths if os.path.basename(p).startswith("libresty_ffi_envoy"))
    assert not opened, f"static mode, yet Envoy (pid {pid}) opened {opened}"
    # /proc/PID/maps names files by their real path (target/ may be a symlink).
    assert preloaded is None or os.path.realpath(preloaded) in paths, f"Envoy (pid {pid}) does not map {preloaded}"
