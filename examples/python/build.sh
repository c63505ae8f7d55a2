#!/usr/bin/env bash
# Builds libffi_python3.so against the CPython found by python3-config
# (PYTHON_CONFIG overrides), with an rpath to its libpython, and next to it
# libresty_ffi_python.so, the name the original's examples load it by: a
# symlink, so that dlopen finds the object already loaded under either name.
# build.sh <output .so>
set -euo pipefail
mkdir -p "$(dirname "$1")"
out=$(readlink -f "$(dirname "$1")")/$(basename "$1")
src=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
config=${PYTHON_CONFIG:-python3-config}
prefix=$("$config" --prefix)
# -z nodelete: an interpreter cannot be finalized and started again.
# shellcheck disable=SC2046 # the flags are lists
cc -O2 -g -Wall -Werror -shared -fPIC -pthread $("$config" --includes) \
  -DPYTHON_PREFIX="\"$prefix\"" -o "$out" "$src/ffi_python3.c" \
  $("$config" --embed --ldflags) -Wl,-rpath,"$prefix/lib" -Wl,-z,nodelete
alias=$(dirname "$out")/libresty_ffi_python.so
if [[ "$alias" != "$out" ]]; then
  ln -sfn "$(basename "$out")" "$alias"
fi
