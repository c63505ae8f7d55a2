#!/usr/bin/env bash
# Builds the Node.js loader into the directory of <output .so>:
#   libffi_nodejs.so  the loader (C++, linked against Debian's libnode.so.108)
#   resty_ffi.js      require('resty_ffi'), found by the loader next to itself
# build.sh <output .so> [dir of resty_ffi.h]; LIBNODE_PREFIX overrides the prefix
# install.sh unpacked libnode into.
set -euo pipefail
mkdir -p "$(dirname "$1")"
dir=$(readlink -f "$(dirname "$1")")
out=$dir/$(basename "$1")
src=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
include=${2:-$src/../../target/release/include}
prefix=${LIBNODE_PREFIX:-$HOME/.cache/resty_ffi/libnode}
lib=$prefix/usr/lib/x86_64-linux-gnu

# -z nodelete: Node cannot be torn down and started again within a process.
g++ -std=c++17 -O2 -g -Wall -Werror -shared -fPIC -pthread -I"$include" -I"$prefix/usr/include/node" \
  -o "$out" "$src/ffi_nodejs.cc" "$lib/libnode.so.108" -Wl,-rpath,"$lib" -Wl,-z,nodelete
cp "$src/lib/resty_ffi.js" "$dir/resty_ffi.js"
