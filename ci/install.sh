#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine needs to build, test and demo resty_ffi.
# Idempotent and quiet: packages already present are skipped.
set -euo pipefail

APT_PACKAGES=(
  build-essential pkg-config curl ca-certificates
  nginx-light nginx-dev libnginx-mod-http-lua lua-resty-core
  libluajit2-5.1-dev luajit2
  bazel-bootstrap
  libclang-dev clang
  valgrind wrk
  golang-go
  lua-cjson
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "ci/install.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1
fi

if ! python3 -c "import pytest" 2>/dev/null; then
  echo "ci/install.sh: installing pytest"
  python3 -m pip install -q pytest 2>&1 | grep -v "Running pip as the 'root' user" || true
fi

# The Python loader's tests run modules in the original's style, which use cffi;
# the Envoy reliability tests speak HTTP/2 with h2; envoy_filter/convert.py reads
# YAML with PyYAML (module yaml); the gRPC tests check interoperability
# against a grpcio server generated with grpcio-tools.
for module in cffi h2 yaml grpc grpc_tools; do
  if ! python3 -c "import $module" 2>/dev/null; then
    package=$module
    [ "$module" = yaml ] && package=pyyaml
    [ "$module" = grpc ] && package=grpcio
    [ "$module" = grpc_tools ] && package=grpcio-tools
    echo "ci/install.sh: installing $package"
    python3 -m pip install -q "$package" 2>&1 | grep -v "Running pip as the 'root' user" || true
  fi
done

if [[ ! -x "$HOME/.cargo/bin/cargo" ]] && ! command -v cargo >/dev/null; then
  echo "ci/install.sh: cargo is required (rustup)" >&2
  exit 1
fi

# //:tsan_test rebuilds std under ThreadSanitizer, which needs the nightly's
# rust-src. Best effort: without it (offline), ci/sanitize.sh fails and says so.
export PATH="$HOME/.cargo/bin:$PATH"
if cargo +nightly --version >/dev/null 2>&1 &&
  [[ ! -d "$(rustc +nightly --print sysroot)/lib/rustlib/src/rust/library" ]]; then
  echo "ci/install.sh: installing the nightly's rust-src"
  rustup component add rust-src --toolchain nightly >/dev/null 2>&1 || true
fi

bash "$(dirname "${BASH_SOURCE[0]}")/../envoy_filter/install.sh"

# Debian starts the packaged nginx on install; our tests and demo run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx || true
fi
pkill -f "nginx: master process /usr/sbin/nginx" 2>/dev/null || true

# The Java loader (examples/java): JDK 17, and jnr-ffi for runtimes in the original's style.
for pkg in openjdk-17-jdk-headless libjnr-ffi-java; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    echo "ci/install.sh: installing $pkg"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1
  fi
done
bash "$(dirname "${BASH_SOURCE[0]}")/../examples/nodejs/install.sh"  # Node.js loader: Debian's libnode beside nodejs 20

# ci/bench.sh draws its plots with matplotlib.
if ! python3 -c "import matplotlib" 2>/dev/null; then
  echo "ci/install.sh: installing matplotlib"
  python3 -m pip install -q matplotlib 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
