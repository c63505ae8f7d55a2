#!/usr/bin/env bash
# Builds the Java loader and its jars into the directory of <output .so>:
#   libffi_java.so  the loader (JNI, linked against JDK 17's libjvm)
#   resty_ffi.jar   the resty.ffi API, found by the loader next to itself
#   examples.jar    the demo runtimes (demo.jnr needs jnr-ffi at run time)
# build.sh <output .so> [dir of resty_ffi.h]; JAVA_HOME overrides the JDK.
set -euo pipefail
mkdir -p "$(dirname "$1")"
dir=$(readlink -f "$(dirname "$1")")
out=$dir/$(basename "$1")
src=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
include=${2:-$src/../../target/release/include}
jdk=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
jnr=$(printf '/usr/share/java/%s.jar:' jnr-ffi jffi jnr-x86asm asm asm-commons asm-analysis asm-tree asm-util)

# -z nodelete: a JVM cannot be unloaded, and its threads run our natives.
cc -O2 -g -Wall -Werror -shared -fPIC -pthread -I"$include" -I"$jdk/include" -I"$jdk/include/linux" \
  -o "$out" "$src/ffi_java.c" -L"$jdk/lib/server" -ljvm -Wl,-rpath,"$jdk/lib/server" -Wl,-z,nodelete

classes=$(mktemp -d)
trap 'rm -rf "$classes"' EXIT
"$jdk/bin/javac" -nowarn --release 17 -d "$classes/api" "$src"/resty/ffi/*.java
"$jdk/bin/jar" --create --file "$dir/resty_ffi.jar" -C "$classes/api" .
"$jdk/bin/javac" -nowarn --release 17 -cp "$dir/resty_ffi.jar:$jnr" -d "$classes/demo" \
  "$src"/demo/*/*.java
"$jdk/bin/jar" --create --file "$dir/examples.jar" -C "$classes/demo" .
