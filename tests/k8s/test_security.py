"""Security posture of everything the charts and k8s/ render, on real `helm template` and
`kubectl kustomize` output:

* every container of every workload (Job, CronJob, Deployment-like kinds, and the pods an
  InferenceService describes: predictor, transformer, canaries) meets the Kubernetes "restricted"
  Pod Security Standard -- checked on the effective values (container over pod) the way the
  PodSecurity admission controller does -- plus the project's own rules: read-only root
  filesystem, uid/gid 1000, an emptyDir at /tmp for our Python processes;
* no ServiceAccount token in pods that do not call the API (the serving pods, the CronJob, the
  training container); the retrain Job's rollout container alone mounts one;
* the InferenceService is cluster-local unless `inferenceService.public=true`;
* values.schema.json refuses values that would break the above.

The PSS rules are those of https://kubernetes.io/docs/concepts/security/pod-security-standards/
(baseline + restricted, latest). Containers KServe, Knative or Istio inject at admission
(storage-initializer, queue-proxy, istio-proxy) are not in these manifests; see docs/KUBERNETES.md.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest

from tests.k8s.manifests import (
    CASES,
    IDS,
    OVERLAYS,
    REPO,
    build,
    by_kind,
    load_documents,
    one,
    render,
    run_tool,
    values_args,
)

VISIBILITY = "networking.kserve.io/visibility"
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
POD_KINDS = {"Pod": (), "Deployment": ("template",), "StatefulSet": ("template",), "DaemonSet": ("template",),
             "ReplicaSet": ("template",), "Job": ("template",), "CronJob": ("jobTemplate", "spec", "template")}
OUR_UID = OUR_GID = 1000


@dataclass
class PodView:
    """One pod a manifest describes: its pod-level fields and every container it runs."""

    where: str
    spec: dict
    containers: list[dict] = field(default_factory=list)
    serving: bool = False  # an InferenceService component (never talks to the API server)
    component: str = ""


def pod_views(obj: dict) -> list[PodView]:
    kind, name = obj["kind"], obj["metadata"]["name"]
    if kind in POD_KINDS:
        spec = obj["spec"]
        for key in POD_KINDS[kind]:
            spec = spec[key]
        spec = spec if kind == "Pod" else spec["spec"]
        containers = [c for key in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(key, [])]
        return [PodView(f"{kind}/{name}", spec, containers)]
    if kind == "InferenceService":
        views = []
        components = [(c, obj["spec"][c]) for c in ("predictor", "transformer", "explainer") if obj["spec"].get(c)]
        components += [(f"canary {i}", entry["predictor"]) for i, entry in enumerate(obj["spec"].get("canary") or [])]
        for component, spec in components:
            containers = ([spec["model"]] if "model" in spec else []) + spec.get("initContainers", []) \
                + spec.get("containers", [])
            views.append(PodView(f"{kind}/{name} {component}", spec, containers, serving=True, component=component))
        return views
    return []


def _effective(container: dict, pod: dict, key: str):
    value = (container.get("securityContext") or {}).get(key)
    return (pod.get("securityContext") or {}).get(key) if value is None else value


def pss_restricted_violations(view: PodView) -> list[str]:
    """What the PodSecurity admission controller at level `restricted` would reject."""
    pod, psc, problems = view.spec, view.spec.get("securityContext") or {}, []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{view.where}: {key}")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"{view.where}: volume {volume['name']} of type {sorted(kinds)}")
    for sysctl in psc.get("sysctls", []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"{view.where}: sysctl {sysctl.get('name')}")
    if psc.get("runAsNonRoot") is False:
        problems.append(f"{view.where}: pod runAsNonRoot false")
    for context, where in [(psc, f"{view.where} (pod)")] + [
            (c.get("securityContext") or {}, f"{view.where} container {c.get('name', 'kserve-container')}")
            for c in view.containers]:
        if context.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser 0")
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{where}: seccompProfile Unconfined")
        if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{where}: appArmorProfile Unconfined")
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            problems.append(f"{where}: seLinuxOptions {selinux}")
    for container in view.containers:
        where = f"{view.where} container {container.get('name', 'kserve-container')}"
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"{where}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{where}: capabilities.drop lacks ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: capabilities.add {capabilities['add']}")
        if _effective(container, pod, "runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if (_effective(container, pod, "seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: no RuntimeDefault/Localhost seccompProfile")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount {context['procMount']}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{where}: hostPort")
    return problems


def project_violations(view: PodView) -> list[str]:
    """Our rules on top of PSS: read-only root, uid/gid 1000, /tmp emptyDir, mounts that resolve."""
    problems = []
    volumes = {v["name"]: v for v in view.spec.get("volumes", [])}
    for container in view.containers:
        name = container.get("name", "kserve-container")
        where = f"{view.where} container {name}"
        if (container.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        uid, gid = _effective(container, view.spec, "runAsUser"), _effective(container, view.spec, "runAsGroup")
        if (uid, gid) != (OUR_UID, OUR_GID):
            problems.append(f"{where}: runs as {uid}:{gid}, not {OUR_UID}:{OUR_GID}")
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        for mount in mounts.values():
            if mount["name"] not in volumes:
                problems.append(f"{where}: volumeMount {mount['name']} has no volume")
        if view.component.startswith(("predictor", "canary")) and container is view.spec.get("model"):
            # TF Serving only reads /mnt/models (KServe mounts it). A Standard-mode canary copies
            # the predictor's `model` but not its pod-level volumes: a mount here would dangle.
            if container.get("volumeMounts"):
                problems.append(f"{where}: the predictor's model container must not mount pod-level volumes")
            continue
        tmp = mounts.get("/tmp")  # our Python processes: HOME, caches and tempfiles live there
        if tmp is None or "emptyDir" not in volumes.get(tmp["name"], {}):
            problems.append(f"{where}: no emptyDir at /tmp under the read-only root filesystem")
    return problems


@pytest.fixture(scope="module")
def renderings(k8s_tools) -> list[tuple[str, list[dict]]]:
    """(case, objects) for both charts with defaults and every preset, a public fundus-seg, and
    every k8s/ overlay."""
    cases = [(case_id, render(k8s_tools, chart, *values_args(chart, values)))
             for case_id, (chart, values) in zip(IDS, CASES)]
    cases.append(("fundus-seg:public", render(k8s_tools, "fundus-seg", sets={"inferenceService.public": "true"})))
    return cases + [(f"k8s/overlays/{overlay}", build(k8s_tools, overlay)) for overlay in OVERLAYS]


def all_views(renderings) -> list[tuple[str, PodView]]:
    return [(case, view) for case, objects in renderings for obj in objects for view in pod_views(obj)]


# ---------------------------------------------------------------------------------------------
# Pod Security Standard "restricted" + read-only root filesystem


def test_every_workload_is_covered(renderings):
    """The checks below cannot pass vacuously: every workload kind and container is in them."""
    views = all_views(renderings)
    wheres = {view.where.split("/")[0] + " " + view.component for _, view in views}
    assert {"InferenceService predictor", "InferenceService transformer", "Job ", "CronJob "} <= wheres, wheres
    names = {c.get("name", "kserve-container") for _, view in views for c in view.containers}
    assert {"kserve-container", "train", "rollout", "dicom-node"} <= names, names
    init_trains = [v for _, v in views if any(c["name"] == "train" for c in v.spec.get("initContainers", []))]
    assert init_trains, "the rollout preset (train as an init container) is not covered"
    kinds = {obj["kind"] for _, objects in renderings for obj in objects}
    assert not kinds & (set(POD_KINDS) - {"Job", "CronJob", "Deployment"}), f"new workload kinds to cover: {kinds}"


def test_every_container_meets_the_restricted_pod_security_standard(renderings):
    problems = [f"[{case}] {p}" for case, view in all_views(renderings) for p in pss_restricted_violations(view)]
    assert not problems, "restricted PSS violations:\n" + "\n".join(problems)


def test_every_container_has_a_read_only_root_and_runs_as_1000(renderings):
    problems = [f"[{case}] {p}" for case, view in all_views(renderings) for p in project_violations(view)]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_violations(k8s_tools):
    """Each rule fires on a manifest broken in that one way (the checker is not a no-op)."""
    isvc = one(render(k8s_tools, "fundus-seg"), "InferenceService")
    assert [p for v in pod_views(isvc) for p in pss_restricted_violations(v) + project_violations(v)] == []
    broken = copy.deepcopy(isvc)
    predictor, transformer = broken["spec"]["predictor"], broken["spec"]["transformer"]
    predictor["model"]["securityContext"]["allowPrivilegeEscalation"] = True
    predictor["model"]["securityContext"]["runAsUser"] = 0
    predictor["model"]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    del transformer["containers"][0]["securityContext"]["seccompProfile"]
    transformer["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"], "add": ["SYS_ADMIN"]}
    transformer["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    transformer["volumes"] = [{"name": "tmp", "hostPath": {"path": "/tmp"}}]
    transformer["hostNetwork"] = True
    problems = [p for v in pod_views(broken) for p in pss_restricted_violations(v) + project_violations(v)]
    for needle in ("predictor container kserve-container: allowPrivilegeEscalation",
                   "predictor container kserve-container: runAsUser 0",
                   "must not mount pod-level volumes",
                   "transformer container kserve-container: no RuntimeDefault",
                   "capabilities.drop lacks ALL", "capabilities.add ['SYS_ADMIN']",
                   "transformer container kserve-container: readOnlyRootFilesystem",
                   "volume tmp of type ['hostPath']", "no emptyDir at /tmp", "transformer: hostNetwork"):
        assert any(needle in p for p in problems), (needle, problems)
    # runAsNonRoot may come from the pod instead of the container, but one of them must say true.
    job = one(render(k8s_tools, "retrain-job"), "Job")
    (view,) = pod_views(job)
    assert pss_restricted_violations(view) == []
    del view.spec["securityContext"]["runAsNonRoot"]
    assert any("runAsNonRoot is not true" in p for p in pss_restricted_violations(view))


# ---------------------------------------------------------------------------------------------
# ServiceAccount tokens


def test_serving_pods_get_no_service_account_token(renderings):
    serving = [(case, v) for case, v in all_views(renderings) if v.serving]
    assert serving
    for case, view in serving:
        assert view.spec.get("automountServiceAccountToken") is False, f"[{case}] {view.where}"
        for container in view.containers:
            assert not any(m["mountPath"].startswith(TOKEN_PATH) for m in container.get("volumeMounts", [])), \
                f"[{case}] {view.where}"
    accounts = [(case, sa) for case, objects in renderings for sa in by_kind(objects, "ServiceAccount")]
    assert accounts
    for case, account in accounts:  # the serving accounts, and the training ones (see below)
        assert account.get("automountServiceAccountToken") is False, f"[{case}] {account['metadata']['name']}"


def _token_volumes(view: PodView) -> set[str]:
    return {v["name"] for v in view.spec.get("volumes", [])
            if any("serviceAccountToken" in source for source in (v.get("projected") or {}).get("sources", []))}


def test_only_the_rollout_container_holds_an_api_token(renderings):
    """Training never calls the API; `fundus-seg rollout start` does, so only it mounts a token --
    at the path the kubernetes client's in-cluster config reads, with the CA and namespace."""
    jobs = [(case, v) for case, v in all_views(renderings) if v.where.startswith(("Job/", "CronJob/"))]
    with_rollout = 0
    for case, view in jobs:
        assert view.spec.get("automountServiceAccountToken") is False, f"[{case}] {view.where}"
        tokens = _token_volumes(view)
        for container in view.containers:
            mounted = {m["name"]: m for m in container.get("volumeMounts", [])}
            if container["name"] != "rollout":
                assert not set(mounted) & tokens, f"[{case}] {view.where} {container['name']} holds a token"
                continue
            with_rollout += 1
            (token,) = [m for m in mounted.values() if m["name"] in tokens]
            assert token["mountPath"] == TOKEN_PATH and token["readOnly"] is True
            volume = next(v for v in view.spec["volumes"] if v["name"] == token["name"])
            paths = {item["path"] for source in volume["projected"]["sources"]
                     for item in ([source["serviceAccountToken"]] if "serviceAccountToken" in source
                                  else (next(iter(source.values())).get("items") or []))}
            assert paths == {"token", "ca.crt", "namespace"}, paths
            # It shares no writable volume with the training container (HOME=/tmp holds ~/.kube).
            train = next(c for c in view.containers if c["name"] == "train")
            writable = {m["name"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert not writable & {m["name"] for m in train.get("volumeMounts", [])}
    assert with_rollout, "no rendering with the rollout step"


# ---------------------------------------------------------------------------------------------
# InferenceService visibility


@pytest.mark.parametrize("chart,values", [c for c in CASES if c[0] == "fundus-seg"],
                         ids=[i for i, c in zip(IDS, CASES) if c[0] == "fundus-seg"])
def test_isvc_is_cluster_local_by_default(k8s_tools, chart, values):
    isvc = one(render(k8s_tools, chart, *values_args(chart, values)), "InferenceService")
    assert isvc["metadata"]["labels"][VISIBILITY] == "cluster-local"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_plain_isvc_is_cluster_local(k8s_tools, overlay):
    isvc = one(build(k8s_tools, overlay), "InferenceService")
    assert isvc["metadata"]["labels"][VISIBILITY] == "cluster-local"


def test_isvc_is_public_only_when_the_value_says_so(k8s_tools):
    isvc = one(render(k8s_tools, "fundus-seg", sets={"inferenceService.public": "true"}), "InferenceService")
    assert VISIBILITY not in isvc["metadata"]["labels"]
    isvc = one(render(k8s_tools, "fundus-seg", sets={"inferenceService.public": "false"}), "InferenceService")
    assert isvc["metadata"]["labels"][VISIBILITY] == "cluster-local"
    # Not through the back door of extra labels, in either direction.
    for value in ("exposed", "cluster-local"):
        result = run_tool(k8s_tools, "helm", "template", "t", str(REPO / "charts/fundus-seg"),
                          "--set", f"inferenceService.labels.networking\\.kserve\\.io/visibility={value}", check=False)
        assert result.returncode != 0 and "inferenceService.public" in result.stderr, result.stderr
    result = run_tool(k8s_tools, "helm", "template", "t", str(REPO / "charts/fundus-seg"),
                      "--set-string", "inferenceService.public=yes", check=False)
    assert result.returncode != 0 and "public" in result.stderr, result.stderr


def test_notes_warn_when_public(k8s_tools):
    def notes(*sets):
        args = ["helm", "install", "t", str(REPO / "charts/fundus-seg"), "--dry-run=client"]
        for s in sets:
            args += ["--set", s]
        return run_tool(k8s_tools, *args).stdout.split("NOTES:", 1)[1]

    assert "cluster-local" in notes() and "/v2/repository" not in notes()
    public = notes("inferenceService.public=true")
    assert "PUBLIC" in public and "/v2/repository" in public


# ---------------------------------------------------------------------------------------------
# values.schema.json


@pytest.mark.parametrize("chart,sets,needle", [
    ("fundus-seg", {"transformer.securityContext.allowPrivilegeEscalation": "true"}, "allowPrivilegeEscalation"),
    ("fundus-seg", {"transformer.securityContext.runAsNonRoot": "false"}, "runAsNonRoot"),
    ("fundus-seg", {"transformer.securityContext.capabilities.drop": "{NET_RAW}"}, "drop"),
    ("fundus-seg", {"transformer.securityContext.seccompProfile": "null"}, "seccompProfile"),
    ("fundus-seg", {"transformer.securityContext": "null"}, "securityContext"),
    ("fundus-seg", {"predictor.securityContext.runAsUser": "0"}, "runAsUser"),
    ("fundus-seg", {"predictor.securityContext.privileged": "true"}, "privileged"),
    ("fundus-seg", {"predictor.securityContext.seccompProfile.type": "Unconfined"}, "seccompProfile"),
    ("fundus-seg", {"predictor.securityContext.capabilities.add": "{SYS_ADMIN}"}, "add"),
    ("retrain-job", {"securityContext.allowPrivilegeEscalation": "true"}, "allowPrivilegeEscalation"),
    ("retrain-job", {"securityContext.capabilities": "null"}, "capabilities"),
    ("retrain-job", {"podSecurityContext.runAsUser": "0"}, "runAsUser"),
    ("retrain-job", {"podSecurityContext.runAsNonRoot": "false"}, "runAsNonRoot"),
    ("retrain-job", {"podSecurityContext.seccompProfile": "null"}, "seccompProfile"),
])
def test_schema_refuses_insecure_security_contexts(k8s_tools, chart, sets, needle):
    args = ["helm", "template", "t", str(REPO / "charts" / chart)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    result = run_tool(k8s_tools, *args, check=False)
    assert result.returncode != 0 and "schema" in result.stderr and needle in result.stderr, result.stderr


def test_schema_accepts_other_restricted_choices(k8s_tools):
    """The schema pins the PSS fields, not the choices PSS leaves open."""
    objects = render(k8s_tools, "fundus-seg", sets={"transformer.securityContext.runAsUser": "2000",
                                                    "predictor.securityContext.readOnlyRootFilesystem": "false",
                                                    "predictor.securityContext.capabilities.add": "{NET_BIND_SERVICE}"})
    isvc = one(objects, "InferenceService")
    assert isvc["spec"]["transformer"]["containers"][0]["securityContext"]["runAsUser"] == 2000
    assert all(not pss_restricted_violations(v) for v in pod_views(isvc))
    docs = load_documents(run_tool(k8s_tools, "helm", "template", "t", str(REPO / "charts/retrain-job"),
                                   "--set", "securityContext.seccompProfile.type=RuntimeDefault").stdout)
    assert one(docs, "Job")
