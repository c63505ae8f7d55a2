#!/usr/bin/env bash
# Builds the two install packages from the build's outputs (Bazel's genrule
# //packaging:packages; ci/package.sh names them and puts them in target/dist/):
#   <out>/resty_ffi_nginx.deb      libnginx-mod-http-resty-ffi, for Debian's nginx
#   <out>/resty_ffi_envoy.tar.gz   resty_ffi-envoy-<version>/, for the stock Envoy
# build.sh <out dir> <ngx_http_resty_ffi_module.so> <libresty_ffi.so (nginx's)>
#          <libresty_ffi_envoy.so> <librust_echo.so> <resty_ffi.lua> <convert.py> <Cargo.toml>
# Libraries are shipped without their debug sections (strip --strip-debug).
set -euo pipefail
out=$(mkdir -p "$1" && readlink -f "$1")
module=$2 core=$3 envoy_module=$4 echo_runtime=$5 lua=$6 convert=$7 cargo_toml=$8
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$cargo_toml" | head -1)
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------- the .deb --
pkg=libnginx-mod-http-resty-ffi
root=$work/deb
install -d "$root/DEBIAN" "$root/usr/lib/nginx/modules" "$root/usr/share/nginx/modules-available" \
  "$root/usr/share/lua/5.1" "$root/usr/share/doc/$pkg"
# The module finds libresty_ffi.so next to itself ($ORIGIN rpath).
install -m 644 "$module" "$core" "$root/usr/lib/nginx/modules/"
strip --strip-debug "$root"/usr/lib/nginx/modules/*.so
install -m 644 "$here/deb/mod-http-resty-ffi.conf" "$root/usr/share/nginx/modules-available/"
# Debian's lua-nginx-module searches /usr/share/lua/5.1 (LuaJIT's default path).
install -m 644 "$lua" "$root/usr/share/lua/5.1/resty_ffi.lua"
install -m 644 "$here/deb/copyright" "$root/usr/share/doc/$pkg/"
install -m 755 "$here/deb/postinst" "$here/deb/prerm" "$here/deb/postrm" "$root/DEBIAN/"
# The ABI the module was built against (Debian's nginx provides nginx-abi-*),
# and the newest glibc symbol version the two libraries use.
abi=$(dpkg-query -W -f='${Provides}' nginx 2>/dev/null | tr ',' '\n' | grep -o 'nginx-abi-[^ ]*' | head -1)
glibc=$(objdump -T "$module" "$core" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
installed_size=$(du -k -s "$root/usr" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: resty_ffi developers <resty-ffi@localhost>
Installed-Size: $installed_size
Depends: ${abi:?nginx does not provide nginx-abi-*: install nginx-light or nginx-core}, libnginx-mod-http-lua, lua-resty-core, libc6 (>= $glibc)
Section: httpd
Priority: optional
Description: resty_ffi for nginx: call Go, Rust, Python, Java, Node.js or C runtimes from Lua
 The nginx module of resty_ffi (lua-resty-ffi rebuilt in Rust) for Debian's nginx
 and lua-nginx-module: require("resty_ffi") installs ngx.load_ffi, which loads a
 runtime library and calls it without blocking the worker. The module is enabled
 in /etc/nginx/modules-enabled (after the Lua module); resty_ffi.lua is found
 without lua_package_path.
CONTROL
(cd "$root" && find usr -type f -exec md5sum {} + | sort -k2 >DEBIAN/md5sums)
dpkg-deb --root-owner-group -Zxz --build "$root" "$out/resty_ffi_nginx.deb" >/dev/null

# ------------------------------------------------------- the Envoy bundle --
name=resty_ffi-envoy-$version
bundle=$work/$name
install -d "$bundle/lib" "$bundle/lua" "$bundle/bin" "$bundle/examples/runtimes"
install -m 755 "$envoy_module" "$bundle/lib/libresty_ffi_envoy.so"
install -m 644 "$lua" "$bundle/lua/resty_ffi.lua"
install -m 755 "$convert" "$bundle/bin/convert.py"
install -m 644 "$here/envoy/envoy.yaml" "$bundle/examples/envoy.yaml"
install -m 755 "$echo_runtime" "$bundle/examples/runtimes/librust_echo.so"
install -m 644 "$here/envoy/README.md" "$bundle/README.md"
strip --strip-debug "$bundle/lib/libresty_ffi_envoy.so" "$bundle/examples/runtimes/librust_echo.so"
tar --owner=0 --group=0 --numeric-owner -C "$work" -czf "$out/resty_ffi_envoy.tar.gz" "$name"
