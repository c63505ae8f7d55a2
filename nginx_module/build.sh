#!/usr/bin/env bash
# Builds ngx_http_resty_ffi_module.so against Debian's nginx-dev sources, with
# the exact module ABI of the packaged nginx (its conf_flags, --with-compat).
#
# build.sh <out dir> <include dir> <lib dir>
#   <out dir>      a directory (made if needed), not a file: it receives
#                  ngx_http_resty_ffi_module.so and a copy of libresty_ffi.so,
#                  which the module finds next to itself ($ORIGIN): keep the two together
#   <include dir>  the directory holding resty_ffi.h (cargo: target/release/include)
#   <lib dir>      the directory holding libresty_ffi.so (cargo: target/release)
# e.g. cargo build --release -p resty_ffi && nginx_module/build.sh out target/release/include target/release
set -euo pipefail
if [[ $# -ne 3 ]]; then
  echo "usage: nginx_module/build.sh <out dir> <include dir> <lib dir> (see the comment at its top)" >&2
  exit 2
fi
for need in "$2/resty_ffi.h" "$3/libresty_ffi.so"; do
  if [[ ! -f "$need" ]]; then
    echo "nginx_module/build.sh: no $need (cargo build --release -p resty_ffi makes it)" >&2
    exit 2
  fi
done
out=$(mkdir -p "$1" && readlink -f "$1")
header_dir=$(readlink -f "$2")
lib_dir=$(readlink -f "$3")
module_dir=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")

# A configured copy of the nginx sources, reused while the module's config and
# directory are unchanged (the configured Makefile compiles that directory's source).
stamp=$( (cat /usr/share/nginx/src/conf_flags "$module_dir/config"; echo "$module_dir") | sha1sum | cut -c1-12)
build="${RESTY_FFI_CACHE:-$HOME/.cache/resty_ffi}/nginx-build-$stamp"
# Inputs live at fixed paths inside the build dir, so the configured Makefile
# stays valid whichever tree (cargo's or Bazel's) they come from.
export RESTY_FFI_INCLUDE="$build/resty_ffi/include"
export RESTY_FFI_LINK_OPTS="$build/resty_ffi/link.opts"
if [[ ! -f "$build/objs/Makefile" ]]; then
  rm -rf "$build" && mkdir -p "$(dirname "$build")"
  cp -r /usr/share/nginx/src "$build"
  (
    cd "$build"
    source ./conf_flags
    ./configure "${NGX_CONF_FLAGS[@]}" --add-dynamic-module="$module_dir" >configure.log 2>&1 \
      || { cat configure.log >&2; exit 1; }
  )
fi
mkdir -p "$RESTY_FFI_INCLUDE"
cp -f "$header_dir/resty_ffi.h" "$RESTY_FFI_INCLUDE/"
cp -f "$lib_dir/libresty_ffi.so" "$build/resty_ffi/"
printf '%s\n' "-L$build/resty_ffi -lresty_ffi -Wl,-rpath,\$ORIGIN" >"$RESTY_FFI_LINK_OPTS"
make -s -C "$build" -f objs/Makefile modules >"$build/make.log" 2>&1 || { cat "$build/make.log" >&2; exit 1; }
cp -f "$build/objs/ngx_http_resty_ffi_module.so" "$out/"
cp -f "$lib_dir/libresty_ffi.so" "$out/"
