#!/usr/bin/env bash
# ./build.sh /path/to/resty_ffi.jar  ->  my_runtime.jar (next to this script).
# resty_ffi.jar is built next to the Java loader (libffi_java.so).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
api=${1:?usage: build.sh /path/to/resty_ffi.jar}
classes=$(mktemp -d)
trap 'rm -rf "$classes"' EXIT
javac --release 17 -cp "$api" -d "$classes" "$here"/src/my_runtime/*.java
jar --create --file "$here/my_runtime.jar" -C "$classes" .
