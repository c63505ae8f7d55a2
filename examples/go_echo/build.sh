#!/usr/bin/env bash
# Builds libgo_echo.so with the system Go (Debian's golang-go), offline, and
# next to it libffi_go_echo.so, the name the original's README and Go example
# load it by: a symlink, so that dlopen finds the object already loaded under
# either name (two Go runtimes cannot live in one process).
# build.sh <output .so>
set -euo pipefail
mkdir -p "$(dirname "$1")"
out=$(readlink -f "$(dirname "$1")")/$(basename "$1")
src=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# Bazel runs genrules with a minimal environment: give Go its caches.
home=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
export HOME="$home" GOPATH="${GOPATH:-$home/.cache/go}" GOCACHE="${GOCACHE:-$home/.cache/go-build}"
export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=1
cd "$src"
go build -buildmode=c-shared -trimpath -o "$out" .
rm -f "${out%.so}.h"
alias=$(dirname "$out")/libffi_go_echo.so
if [[ "$alias" != "$out" ]]; then
  ln -sfn "$(basename "$out")" "$alias"
fi
