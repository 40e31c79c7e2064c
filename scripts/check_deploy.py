"""The checks of scripts/check-deploy.sh that need more than a tool call:
Dockerfile COPY sources, KEDA objects against KEDA's CRDs, and the
ConfigMap's sagas.toml against the binary and the workloads.

Usage: check_deploy.py SAGAFLOW_BINARY KEDA_SCHEMA_DIR (from the repo root).
Prints each problem with its file and what to change; exits 1 if any.
"""

import glob
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

# The trigger metadata KEDA v2.20.2's azure-servicebus scaler reads
# (pkg/scalers/azure_servicebus_scaler.go: its `keda:"name=..."` tags, the
# connectionFromEnv form of `connection`, and the cloud/endpointSuffix keys
# of azure.ParseEnvironmentProperty):
# KEDA's CRD leaves trigger metadata a free map, so a misspelt key would
# pass the schema and be ignored at run time.
SERVICEBUS_METADATA = {
    "messageCount", "activationMessageCount", "queueName", "topicName",
    "subscriptionName", "namespace", "useRegex", "operation",
    "cloud", "endpointSuffix", "connectionFromEnv",
}

problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def documents():
    """Every (file, object) in deploy/, schemas excluded."""
    for path in sorted(glob.glob("deploy/*/*.yaml")):
        if path.startswith("deploy/schemas/"):
            continue
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    yield path, doc


def check_dockerfile():
    with open("Dockerfile") as f:
        text = f.read().replace("\\\n", " ")
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        for src in args[:-1]:
            if not glob.glob(src):
                problem("Dockerfile", f"COPY {src}: no such path in the build context; fix the COPY or add the file")


def keda_schemas(schema_dir):
    """kind -> the openAPIV3Schema of its served version."""
    schemas = {}
    for path in glob.glob(os.path.join(schema_dir, "*.yaml")):
        with open(path) as f:
            crd = yaml.safe_load(f)
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                kind = crd["spec"]["names"]["kind"]
                api = f'{crd["spec"]["group"]}/{version["name"]}'
                schemas[(api, kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def check_keda(schema_dir, objects):
    schemas = keda_schemas(schema_dir)
    workloads = {(o["kind"], o["metadata"]["name"]) for _, o in objects}
    auths = {o["metadata"]["name"] for _, o in objects if o["kind"] == "TriggerAuthentication"}
    scaled = 0
    for path, obj in objects:
        if not obj.get("apiVersion", "").startswith("keda.sh/"):
            continue
        key = (obj["apiVersion"], obj["kind"])
        schema = schemas.get(key)
        if schema is None:
            problem(path, f"{key}: not in KEDA's CRDs under {schema_dir}")
            continue
        validator = jsonschema.Draft7Validator(schema)
        for error in validator.iter_errors(obj):
            at = "/".join(str(p) for p in error.absolute_path)
            problem(path, f'{obj["kind"]} {obj["metadata"]["name"]}: at {at or "top"}: {error.message}')
        if obj["kind"] != "ScaledObject":
            continue
        scaled += 1
        target = obj["spec"]["scaleTargetRef"]
        kind = target.get("kind", "Deployment")
        if kind != "Deployment" or (kind, target["name"]) not in workloads:
            problem(path, f'scaleTargetRef {kind}/{target["name"]}: KEDA may scale only a Deployment in deploy/ (the Temporal engine); the embedded StatefulSet owns a journal per pod and is scaled by hand')
        for trigger in obj["spec"]["triggers"]:
            if trigger["type"] != "azure-servicebus":
                continue
            unknown = set(trigger.get("metadata", {})) - SERVICEBUS_METADATA
            if unknown:
                problem(path, f"azure-servicebus metadata {sorted(unknown)}: not read by KEDA's scaler; use {sorted(SERVICEBUS_METADATA)}")
            ref = trigger.get("authenticationRef", {}).get("name")
            if ref and ref not in auths:
                problem(path, f"authenticationRef {ref}: no TriggerAuthentication of that name in deploy/")
    if scaled == 0:
        problem("deploy/", "no KEDA ScaledObject found")


def check_config(binary, objects):
    maps = [o for _, o in objects if o["kind"] == "ConfigMap" and "sagas.toml" in o.get("data", {})]
    if len(maps) != 1:
        problem("deploy/common/configmap.yaml", f"expected one ConfigMap holding sagas.toml, found {len(maps)}")
        return
    toml_text = maps[0]["data"]["sagas.toml"]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml_text)
    try:
        out = subprocess.run([binary, "check-config", f.name], capture_output=True, text=True)
        if out.returncode != 0:
            problem("deploy/common/configmap.yaml", f"sagas.toml: {out.stderr.strip() or out.stdout.strip()}")
            return
        ours = subprocess.run([binary, "check-config", "sagas.toml"], capture_output=True, text=True, check=True)
    finally:
        os.unlink(f.name)
    sagas = lambda text: {l for l in text.splitlines() if l.startswith(("saga checkout:", "saga refund:"))}
    if sagas(out.stdout) != sagas(ours.stdout):
        problem("deploy/common/configmap.yaml", f"its checkout and refund sagas differ from ./sagas.toml ({sorted(sagas(out.stdout))} vs {sorted(sagas(ours.stdout))}); copy them over")
    names = set(re.findall(r'^\s*\w+_env\s*=\s*"([A-Z0-9_]+)"', toml_text, re.M))
    for path, obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            env = {e["name"] for e in c.get("env", [])}
            for missing in sorted(names - env):
                problem(path, f'{obj["kind"]} {obj["metadata"]["name"]}: sagas.toml names {missing} but the container does not set it; add it from the sagaflow Secret')
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref.get("name") != "sagaflow":
                    problem(path, f'{e["name"]}: refers to Secret {ref.get("name")}; every credential comes from the Secret "sagaflow" (docs/deploy.md)')
            probes = {p: c.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")}
            if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
                problem(path, f"{c['name']}: probes {probes}: use /healthz for liveness and /readyz for readiness")


def main():
    binary, schema_dir = sys.argv[1], sys.argv[2]
    objects = list(documents())
    check_dockerfile()
    check_keda(schema_dir, objects)
    check_config(binary, objects)
    for p in problems:
        print(f"check-deploy: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    kinds = sorted({f'{o["kind"]}/{o["metadata"]["name"]}' for _, o in objects})
    print(f"check-deploy: ok ({len(objects)} objects: {', '.join(kinds)})")


if __name__ == "__main__":
    main()
