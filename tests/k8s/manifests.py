"""Offline Kubernetes checks: real `helm`/`kubectl` binaries, schemas, no cluster.

* `helm lint --strict` and `helm template` for every chart and every `ci/*-values.yaml` preset,
  `kubectl kustomize` for every overlay under `k8s/overlays/`;
* every rendered built-in object validates with `kubernetes-validate` in strict mode (unknown
  properties are errors) against the oldest and the newest Kubernetes version we support, and
  a kind it has no schema for is an error too (its CLI only warns about those);
* every InferenceService validates against the CRD schema of every KServe release in the
  supported range that `<repo>/../shared/schemas` holds (v0.16.0, the oldest supported; v0.20.0;
  main), made strict the same way: an unknown field anywhere is an error, as with kubectl's
  default `--validate=strict` -- and it is exactly what that release's API server would prune
  (structural schemas drop unknown fields, with only a warning) from an apply or a patch.

The binaries come from `tools/install-k8s-tools.sh`; when it cannot install them the tests that
need them are skipped with the installer's message.
"""
from __future__ import annotations

import copy
import functools
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / ".." / "shared" / "schemas"
ISVC_CRD = SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml"
# The supported range is KServe 0.16-0.21 (charts/*/Chart.yaml, docs/KUBERNETES.md); these are
# the releases of it whose CRD we have: oldest first.
ISVC_CRDS = {
    "v0.16.0": SCHEMAS / "kserve" / "v0.16.0" / "serving.kserve.io_inferenceservices.yaml",
    "v0.20.0": SCHEMAS / "kserve" / "v0.20.0" / "serving.kserve.io_inferenceservices.yaml",
    "main": ISVC_CRD,
}
TOOLS_BIN = REPO / "tools" / "bin"
# Oldest (the charts' kubeVersion) and newest Kubernetes versions the manifests must satisfy.
KUBE_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
CRD_KINDS = {("serving.kserve.io/v1beta1", "InferenceService")}


@functools.cache
def install_tools() -> str | None:
    """Run the installer once; return why it failed, or None."""
    if (TOOLS_BIN / "helm").exists() and (TOOLS_BIN / "kubectl").exists():
        return None
    try:
        result = subprocess.run([str(REPO / "tools" / "install-k8s-tools.sh")], capture_output=True,
                                text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"tools/install-k8s-tools.sh did not run: {exc}"
    if result.returncode != 0:
        return f"tools/install-k8s-tools.sh failed: {(result.stderr or result.stdout).strip()[-500:]}"
    return None


def run_tool(tools: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(tools / args[0]), *args[1:]], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def load_documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(tools: Path, chart: str, *values_files: str | Path, namespace: str = "fundus",
           release: str = "test", sets: dict[str, str] | None = None) -> list[dict]:
    args = ["helm", "template", release, str(REPO / "charts" / chart), "--namespace", namespace]
    for values_file in values_files:
        args += ["-f", str(values_file)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return load_documents(run_tool(tools, *args).stdout)


# --------------------------------------------------------------------------------------------
# Validation


def _strict(schema: object) -> object:
    """Close every object schema that lists properties: unknown fields become errors."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def isvc_validator(release: str = "main") -> jsonschema.protocols.Validator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRD is 39k lines
    crd = yaml.load(ISVC_CRDS[release].read_text(), Loader=loader)
    served = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"][0]
    schema = copy.deepcopy(served["schema"]["openAPIV3Schema"])
    schema = _strict(schema)
    # metadata is `type: object` in CRDs (the API server checks it); we check the essentials.
    schema["properties"]["metadata"] = {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                       "namespace": {"type": "string"},
                       "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                       "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
        "additionalProperties": False}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return jsonschema.Draft7Validator(schema)


def validation_errors(obj: dict) -> list[str]:
    """Everything wrong with one manifest ([] when it is valid)."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    name = f"{kind}/{obj.get('metadata', {}).get('name')}"
    if (api_version, kind) in CRD_KINDS:
        return [f"{name} (KServe {release}): {'.'.join(map(str, e.absolute_path))}: {e.message}"
                for release in ISVC_CRDS for e in isvc_validator(release).iter_errors(obj)]
    errors = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name} (k8s {version}): {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            # The CLI prints this as a WARN and passes; an unknown kind is an error here.
            errors.append(f"{name}: {exc.message}")
    return errors


def assert_valid(objects: list[dict]) -> None:
    assert objects, "nothing rendered"
    problems = [problem for obj in objects for problem in validation_errors(obj)]
    assert not problems, "invalid manifests:\n" + "\n".join(problems)


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


# -- what the tests render: every chart with its defaults and every preset, every overlay ---------

CHARTS = ("fundus-seg", "retrain-job")
CASES = [(chart, None) for chart in CHARTS] + [
    (chart, path.relative_to(REPO / "charts" / chart))
    for chart in CHARTS for path in sorted((REPO / "charts" / chart / "ci").glob("*-values.yaml"))]
IDS = [f"{chart}:{values or 'defaults'}" for chart, values in CASES]


def values_args(chart, values):
    return [REPO / "charts" / chart / values] if values else []


OVERLAYS = sorted(path.name for path in (REPO / "k8s" / "overlays").iterdir() if path.is_dir())


def build(tools, overlay: str) -> list[dict]:
    return load_documents(run_tool(tools, "kubectl", "kustomize", str(REPO / "k8s" / "overlays" / overlay)).stdout)
