#!/usr/bin/env bash
# Unpacks Debian's embeddable Node 18 (libnode108 + libnode-dev) into a private
# prefix: apt refuses to install them next to the machine's nodesource nodejs 20,
# which they conflict with. apt-installs what libnode.so.108 needs: its libraries,
# libuv1-dev (Node's headers include uv.h) and the JS packages whose files it
# loads at start from /usr/share/nodejs (acorn, cjs-module-lexer, undici; their
# dependency on nodejs is met by the machine's nodejs, which stays).
# Idempotent. LIBNODE_PREFIX overrides the prefix.
set -euo pipefail
prefix=${LIBNODE_PREFIX:-$HOME/.cache/resty_ffi/libnode}

if [[ -f $prefix/usr/lib/x86_64-linux-gnu/libnode.so.108 && -f $prefix/usr/include/node/node.h && -f /usr/include/uv.h
      && -f /usr/share/nodejs/undici/undici-fetch.js && -f /usr/share/nodejs/acorn/dist/acorn.js
      && -f /usr/share/nodejs/cjs-module-lexer/lexer.js ]]; then
  exit 0
fi

echo "examples/nodejs/install.sh: unpacking libnode108 and libnode-dev into $prefix"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends libuv1 libuv1-dev libc-ares2 libbrotli1 libicu72 \
  libnghttp2-14 libssl3 zlib1g node-acorn node-cjs-module-lexer node-undici >/dev/null 2>&1

debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
(cd "$debs" && apt-get download -qq libnode108 libnode-dev 2>/dev/null)
mkdir -p "$prefix"
for deb in "$debs"/*.deb; do
  dpkg -x "$deb" "$prefix"
done
