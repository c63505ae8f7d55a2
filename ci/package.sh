#!/usr/bin/env bash
# Builds the install packages into target/dist/ (prerequisites first, as
# ci/test.sh does; then `bazel build //packaging:packages`):
#   libnginx-mod-http-resty-ffi_<version>_<arch>.deb   apt install ./it (Debian's nginx)
#   resty_ffi-envoy-<version>-linux-<machine>.tar.gz   the Envoy bundle (README.md inside)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash ci/install.sh
log=$(mktemp)
if ! bazel build //packaging:packages >"$log" 2>&1; then
  grep -vE "linux-sandbox|^(Loading|Analyzing)" "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
dist=$root/target/dist
mkdir -p "$dist"
deb=$dist/libnginx-mod-http-resty-ffi_${version}_$(dpkg --print-architecture).deb
bundle=$dist/resty_ffi-envoy-$version-linux-$(uname -m).tar.gz
install -m 644 bazel-bin/packaging/resty_ffi_nginx.deb "$deb"
install -m 644 bazel-bin/packaging/resty_ffi_envoy.tar.gz "$bundle"
echo "$deb"
echo "$bundle"
