"""Helm charts: lint, render and validate every chart with its defaults and every preset."""
from __future__ import annotations

import re

import pytest

from tests.k8s.manifests import CASES, CHARTS, IDS, REPO, assert_valid, by_kind, one, render, run_tool, values_args


def test_every_chart_has_presets():
    assert {chart for chart, values in CASES if values} == set(CHARTS)
    retrain_presets = {str(values) for chart, values in CASES if chart == "retrain-job" and values}
    assert {"ci/cpu-values.yaml", "ci/gpu-gke-values.yaml", "ci/gpu-eks-values.yaml",
            "ci/tpu-gke-values.yaml"} <= retrain_presets


@pytest.mark.parametrize("chart,values", CASES, ids=IDS)
def test_lint_strict(k8s_tools, chart, values):
    args = ["helm", "lint", "--strict", str(REPO / "charts" / chart)]
    for path in values_args(chart, values):
        args += ["-f", str(path)]
    result = run_tool(k8s_tools, *args)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("chart,values", CASES, ids=IDS)
def test_rendered_objects_validate(k8s_tools, chart, values):
    assert_valid(render(k8s_tools, chart, *values_args(chart, values)))


def undocumented_values(text: str) -> list[str]:
    """Keys in a values.yaml without a `# --` comment above them. A documented key covers its
    whole subtree (`resources:` documents requests/limits); an undocumented mapping is a section
    whose children must be documented one by one."""
    missing, covered_below = [], None  # indentation of the documented key whose subtree we are in
    lines = text.splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if covered_below is not None and indent > covered_below:
            continue
        covered_below = None
        key = stripped.split(":", 1)[0]
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#") and not lines[above].strip().startswith("# --"):
            above -= 1
        if above >= 0 and lines[above].strip().startswith("# --"):
            covered_below = indent
            continue
        following = next((l for l in lines[number + 1:] if l.strip() and not l.strip().startswith("#")), "")
        is_section = (not stripped.split(":", 1)[1].strip()
                      and len(following) - len(following.lstrip()) > indent
                      and not following.strip().startswith("-"))
        if not is_section:
            missing.append(f"line {number + 1}: {key}")
    return missing


def test_every_value_is_documented():
    for chart in CHARTS:
        missing = undocumented_values((REPO / "charts" / chart / "values.yaml").read_text())
        assert not missing, f"charts/{chart}/values.yaml: values without a `# --` comment: {missing}"
    assert undocumented_values("a:\n  b: 1\n# -- doc\nc:\n  d: 2\n") == ["line 2: b"]


# ---------------------------------------------------------------------------------------------
# fundus-seg: the InferenceService


def test_isvc_serves_one_version_under_its_number(k8s_tools):
    objects = render(k8s_tools, "fundus-seg", sets={"model.version": "7", "model.repository": "s3://b/models/"})
    isvc = one(objects, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    # TF Serving's --model_base_path=/mnt/models needs the version directory below it.
    assert predictor["storageUris"] == [{"uri": "s3://b/models/optic-disc/7", "mountPath": "/mnt/models/7"}]
    assert "storageUri" not in predictor["model"]
    assert predictor["model"]["modelFormat"] == {"name": "tensorflow"}
    assert predictor["model"]["ports"] == [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}]
    assert isvc["metadata"]["name"] == "optic-disc"


def test_no_scale_to_zero_and_ports(k8s_tools):
    isvc = one(render(k8s_tools, "fundus-seg"), "InferenceService")
    for component in ("predictor", "transformer"):
        spec = isvc["spec"][component]
        assert spec["minReplicas"] >= 1 and spec["maxReplicas"] >= spec["minReplicas"]
        assert spec["serviceAccountName"] == "test-fundus-seg"
    container = one([{"kind": "c", **c} for c in isvc["spec"]["transformer"]["containers"]], "c")
    assert container["command"] == ["python", "-m", "serving.transformer"]
    args = container["args"]
    assert args[args.index("--model_name") + 1] == "optic-disc"
    assert args[args.index("--predictor_host") + 1] == "optic-disc-predictor.fundus.svc.cluster.local:80"
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]


def test_scale_to_zero_is_rejected(k8s_tools):
    result = run_tool(k8s_tools, "helm", "template", "t", str(REPO / "charts" / "fundus-seg"),
                      "--set", "predictor.minReplicas=0", check=False)
    assert result.returncode != 0 and "minReplicas" in result.stderr


def test_grpc_preset_exposes_h2c(k8s_tools):
    isvc = one(render(k8s_tools, "fundus-seg", REPO / "charts/fundus-seg/ci/grpc-values.yaml"), "InferenceService")
    assert isvc["spec"]["transformer"]["containers"][0]["ports"] == [
        {"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]


def test_collocated_transformer_runs_in_the_predictors_pod(k8s_tools):
    """transformer.collocated: KServe's collocation (a `transformer-container` in the predictor's pod):
    no transformer component, the transformer calls TF Serving's gRPC port on localhost, owns the
    pod's one port, and TF Serving's REST port moves off the transformer's 8080."""
    isvc = one(render(k8s_tools, "fundus-seg", REPO / "charts/fundus-seg/ci/collocated-values.yaml"),
               "InferenceService")
    assert "transformer" not in isvc["spec"]
    predictor = isvc["spec"]["predictor"]
    [container] = predictor["containers"]
    assert container["name"] == "transformer-container"  # KServe mounts the model volume by this name
    assert container["command"] == ["python", "-m", "serving.transformer"]
    assert container["args"][container["args"].index("--predictor_host") + 1] == "localhost:9000"
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in predictor["volumes"]
    assert "ports" not in predictor["model"]  # Knative: one port per pod, the transformer's
    assert predictor["model"]["args"] == ["--rest_api_port=8501"]
    separate = one(render(k8s_tools, "fundus-seg"), "InferenceService")
    assert "containers" not in separate["spec"]["predictor"]
    assert separate["spec"]["transformer"]["containers"][0]["name"] == "kserve-container"
    assert {k: v for k, v in container.items() if k != "name"} == \
        {k: v for k, v in separate["spec"]["transformer"]["containers"][0].items() if k != "name"} | \
        {"args": container["args"]}  # the same container otherwise


def test_deployment_mode_annotation(k8s_tools):
    isvc = one(render(k8s_tools, "fundus-seg", REPO / "charts/fundus-seg/ci/standard-values.yaml"), "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    isvc = one(render(k8s_tools, "fundus-seg"), "InferenceService")
    assert "annotations" not in isvc["metadata"]


@pytest.mark.parametrize("given,written", [("Knative", "Knative"), ("Serverless", "Knative"),
                                           ("Standard", "Standard"), ("RawDeployment", "Standard")])
def test_deployment_mode_is_written_with_the_names_of_kserve_0_16(k8s_tools, given, written):
    """KServe >= 0.16 names the modes Knative and Standard (pkg/constants/constants.go:
    `LegacyServerless`, `LegacyRawDeployment` are the deprecated spellings) and keeps the new name
    in status.deploymentMode; the chart writes the new name so annotation and status agree."""
    isvc = one(render(k8s_tools, "fundus-seg", sets={"inferenceService.deploymentMode": given}), "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == written


def tensorflow_release() -> str:
    """The TensorFlow the training image installs (the lock)."""
    (line,) = [line for line in (REPO / "docker" / "constraints.txt").read_text().splitlines()
               if line.startswith("tensorflow==")]
    return line.split("==", 1)[1].strip()


def test_tf_serving_runs_the_training_tensorflow_release(k8s_tools):
    """KServe's kserve-tensorflow-serving runtime runs `tensorflow/serving:2.6.2` unless the
    InferenceService sets `runtimeVersion` (config/runtimes/kustomization.yaml upstream:
    tensorflow-serving:replace -> newTag 2.6.2; ../shared/schemas/README.md); a SavedModel
    exported by a newer TensorFlow uses ops 2.6 does not know. Chart and kustomize base both pin
    the locked TensorFlow release."""
    release = tensorflow_release()
    chart = one(render(k8s_tools, "fundus-seg"), "InferenceService")["spec"]["predictor"]["model"]
    assert chart["runtimeVersion"] == release
    from tests.k8s.manifests import build

    plain = one(build(k8s_tools, "cpu"), "InferenceService")["spec"]["predictor"]["model"]
    assert str(plain["runtimeVersion"]) == release


def test_predictor_bounds_grpc_connection_age(k8s_tools):
    """Standard mode: the transformer's one HTTP/2 channel to the ClusterIP Service would stay on
    one predictor pod. TF Serving's `--grpc_channel_arguments` ("A comma separated list of
    arguments to be passed to the grpc server. (e.g. grpc.max_connection_age_ms=2000)",
    tensorflow_serving/model_servers/main.cc) bounds the connection age; the InferenceService's
    model args are appended to the runtime's (KServe's MergeRuntimeContainers)."""
    model = one(render(k8s_tools, "fundus-seg"), "InferenceService")["spec"]["predictor"]["model"]
    assert model["args"] == ["--grpc_channel_arguments=grpc.max_connection_age_ms=30000,"
                             "grpc.max_connection_age_grace_ms=60000"]
    model = one(render(k8s_tools, "fundus-seg", sets={"predictor.grpcMaxConnectionAgeSeconds": "0"}),
                "InferenceService")["spec"]["predictor"]["model"]
    assert "args" not in model


def test_charts_state_the_supported_kserve_range():
    """Both charts say which KServe releases they support, and the CRDs the tests validate
    against are all inside it (the oldest one is its lower bound: storageUris needs v0.16.0)."""
    import yaml

    from tests.k8s.manifests import ISVC_CRDS

    for chart in CHARTS:
        annotations = yaml.safe_load((REPO / "charts" / chart / "Chart.yaml").read_text())["annotations"]
        assert annotations["fundus-seg.io/kserve-versions"] == ">=0.16.0 <0.22.0", chart
    assert next(iter(ISVC_CRDS)) == "v0.16.0"
    docs = (REPO / "docs" / "KUBERNETES.md").read_text()
    assert "KServe 0.16 to 0.21" in docs


def test_storage_credentials_secret_is_attached_to_the_service_account(k8s_tools):
    objects = render(k8s_tools, "fundus-seg", REPO / "charts/fundus-seg/ci/minio-values.yaml")
    secret, account = one(objects, "Secret"), one(objects, "ServiceAccount")
    assert account["secrets"] == [{"name": secret["metadata"]["name"]}]
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "minio.minio.svc.cluster.local:9000"
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "0"
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "minioadmin", "AWS_SECRET_ACCESS_KEY": "minioadmin",
                                    "AWS_ENDPOINT_URL": "http://minio.minio.svc.cluster.local:9000",
                                    "AWS_REGION": "us-east-1"}
    # Workload identity: no Secret, annotated ServiceAccount.
    objects = render(k8s_tools, "fundus-seg", REPO / "charts/fundus-seg/ci/workload-identity-values.yaml")
    assert not by_kind(objects, "Secret")
    assert "eks.amazonaws.com/role-arn" in one(objects, "ServiceAccount")["metadata"]["annotations"]


def test_the_serving_secret_gives_the_retrain_job_its_endpoint(k8s_tools):
    """One Secret for both charts: every key the retrain Job reads from `storage.existingSecret`
    is where charts/fundus-seg's Secret puts it -- the S3 endpoint included, which KServe reads
    from the annotation and boto3 (training, the rollout gate) from AWS_ENDPOINT_URL."""
    secret = one(render(k8s_tools, "fundus-seg", REPO / "charts/fundus-seg/ci/minio-values.yaml"), "Secret")
    job = one(render(k8s_tools, "retrain-job", sets={"storage.existingSecret": secret["metadata"]["name"]}), "Job")
    for name in ("train",):
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container(job["spec"]["template"]["spec"], name)["env"]
                if "secretKeyRef" in e.get("valueFrom", {})}
        assert set(refs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"}
        for ref in refs.values():
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], ref
    # and the retrain chart's own Secret has the same layout
    own = one(render(k8s_tools, "retrain-job", sets={"storage.createSecret": "true", "storage.accessKeyId": "a",
                                                     "storage.secretAccessKey": "b",
                                                     "storage.endpointUrl": "http://minio:9000"}), "Secret")
    assert own["stringData"]["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_a_broken_isvc_fails_validation(k8s_tools):
    """The CRD check is strict: a misspelt field or a wrong type is caught."""
    from tests.k8s.manifests import validation_errors

    isvc = one(render(k8s_tools, "fundus-seg"), "InferenceService")
    assert validation_errors(isvc) == []
    isvc["spec"]["predictor"]["storageUris"][0]["mountpath"] = "/mnt/models/1"
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    problems = validation_errors(isvc)
    assert any("mountpath" in p for p in problems) and any("minReplicas" in p for p in problems), problems
    for release in ("v0.16.0", "v0.20.0", "main"):  # each supported release is checked
        assert any(f"(KServe {release})" in p for p in problems), (release, problems)


def test_unknown_kinds_fail_validation():
    from tests.k8s.manifests import validation_errors

    assert validation_errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}},
                    "backofflimit": 2}}
    assert any("backofflimit" in p for p in validation_errors(job))


# ---------------------------------------------------------------------------------------------
# retrain-job: the training Job


def container(pod_spec, name):
    found = [c for c in pod_spec.get("containers", []) + pod_spec.get("initContainers", []) if c["name"] == name]
    assert len(found) == 1, f"no container {name}"
    return found[0]


def arg(args, flag):
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def test_job_defaults(k8s_tools):
    job = one(render(k8s_tools, "retrain-job", release="nightly"), "Job")
    assert re.fullmatch(r"nightly-retrain-job-1-[a-z0-9]{5}", job["metadata"]["name"]), job["metadata"]["name"]
    assert job["metadata"]["labels"]["fundus-seg.io/release-revision"] == "1"
    spec = job["spec"]
    assert spec["backoffLimit"] == 2 and spec["activeDeadlineSeconds"] == 86400
    assert spec["ttlSecondsAfterFinished"] == 604800
    fail_job, ignore = spec["podFailurePolicy"]["rules"]
    assert fail_job == {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "In",
                                                             "values": [2, 3]}}  # settings, publish gate
    assert ignore["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and "initContainers" not in pod
    train = container(pod, "train")
    assert train["command"] == ["python", "-m", "training_job"]
    args = train["args"]
    assert arg(args, "--mode") == "full" and "--base-version" not in args
    assert arg(args, "--data") == "s3://fundus-seg/datasets/drishti-gs1,s3://fundus-seg/datasets/rim-one-dl"
    assert arg(args, "--model-repo") == "s3://fundus-seg/models" and arg(args, "--model-name") == "optic-disc"
    assert arg(args, "--accelerator") == "cpu" and arg(args, "--run-id") == "$(RUN_ID)"
    assert {e["name"]: e for e in train["env"]}["RUN_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}}
    assert "--config" not in args
    assert train["image"] == "ghcr.io/fundus-seg/fundus-seg:0.1.0"
    assert not any(key.startswith(("nvidia.com", "google.com")) for key in train["resources"].get("limits", {}))


def test_incremental_with_rollout(k8s_tools):
    objects = render(k8s_tools, "retrain-job", REPO / "charts/retrain-job/ci/incremental-rollout-values.yaml",
                     namespace="training")
    job = one(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    train = container(pod, "train")
    assert [c["name"] for c in pod["initContainers"]] == ["train"]
    assert arg(train["args"], "--mode") == "incremental" and arg(train["args"], "--base-version") == "latest"
    assert arg(train["args"], "--epochs") == "10" and arg(train["args"], "--steps-per-epoch") == "50"
    assert arg(train["args"], "--config") == "/etc/fundus-seg/train.yaml"
    config = one(objects, "ConfigMap")
    assert "learning_rate: 0.0001" in config["data"]["train.yaml"]
    assert {v["name"]: v for v in pod["volumes"]}["config"]["configMap"]["name"] == config["metadata"]["name"]
    env = {e["name"]: e for e in train["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "fundus-seg-storage", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.minio.svc.cluster.local:9000"

    rollout = container(pod, "rollout")
    assert rollout["command"] == ["fundus-seg", "rollout", "start"]
    assert arg(rollout["args"], "--run-id") == arg(train["args"], "--run-id") == "$(RUN_ID)"
    assert {e["name"]: e for e in rollout["env"]}["RUN_ID"] == {e["name"]: e for e in train["env"]}["RUN_ID"]
    # a refused rollout (gate, Standard mode, RBAC: exit 2) fails the Job once, no retraining
    assert {"action": "FailJob", "onExitCodes": {"containerName": "rollout", "operator": "In", "values": [2]}} \
        in job["spec"]["podFailurePolicy"]["rules"]
    assert arg(rollout["args"], "--isvc") == "optic-disc" and arg(rollout["args"], "--namespace") == "fundus-seg"
    assert arg(rollout["args"], "--percent") == "10" and arg(rollout["args"], "--tolerance") == "0.01"
    role, binding = one(objects, "Role"), one(objects, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "fundus-seg"
    rules = {rule["apiGroups"][0]: set(rule["verbs"]) for rule in role["rules"]}
    assert {"get", "patch", "watch"} <= rules["serving.kserve.io"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "training"}]


@pytest.mark.parametrize("preset,selector", [
    ("gpu-gke", {"cloud.google.com/gke-accelerator": "nvidia-l4", "node.kubernetes.io/instance-type": "g2-standard-4"}),
    ("gpu-eks", {"eks.amazonaws.com/nodegroup": "gpu", "node.kubernetes.io/instance-type": "g6.xlarge"}),
])
def test_gpu_presets(k8s_tools, preset, selector):
    job = one(render(k8s_tools, "retrain-job", REPO / f"charts/retrain-job/ci/{preset}-values.yaml"), "Job")
    pod = job["spec"]["template"]["spec"]
    train = container(pod, "train")
    assert train["image"] == "ghcr.io/fundus-seg/fundus-seg:0.1.0-gpu"
    assert train["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == selector
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert arg(train["args"], "--accelerator") == "gpu"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in train["volumeMounts"]


def test_tpu_preset(k8s_tools):
    job = one(render(k8s_tools, "retrain-job", REPO / "charts/retrain-job/ci/tpu-gke-values.yaml"), "Job")
    pod = job["spec"]["template"]["spec"]
    train = container(pod, "train")
    assert train["image"] == "ghcr.io/fundus-seg/fundus-seg:0.1.0-tpu"  # Dockerfile.training VARIANT=tpu
    assert train["resources"]["limits"]["google.com/tpu"] == 4 == train["resources"]["requests"]["google.com/tpu"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                                   "cloud.google.com/gke-tpu-topology": "2x2", "cloud.google.com/gke-spot": "true"}
    assert {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert arg(train["args"], "--accelerator") == "tpu"


def test_each_revision_launches_a_new_job_and_keeps_the_old_ones(k8s_tools):
    """`helm upgrade` bumps .Release.Revision; Jobs are immutable, so the name carries it, plus a
    random suffix (revisions restart at 1 after an uninstall, and the kept Jobs stay). Helm
    deletes what the new manifest no longer has -- the previous revision's Job, a running
    training with its logs -- unless it is annotated `helm.sh/resource-policy: keep`
    (helm pkg/kube/client.go, `Update`: "Skipping delete ... due to annotation")."""
    template = (REPO / "charts" / "retrain-job" / "templates" / "job.yaml").read_text()
    metadata = template.split("kind: Job", 1)[1].split("spec:", 1)[0]
    name = metadata.split("name:", 1)[1].splitlines()[0]
    assert ".Release.Revision" in name and "randAlphaNum" in name
    names = set()
    for _ in range(2):
        job = one(render(k8s_tools, "retrain-job"), "Job")
        assert job["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        names.add(job["metadata"]["name"])
    assert len(names) == 2
    assert len(max(names, key=len)) <= 63


# Allocatable of the node types the presets pin, from the providers' reservation formulas
# (GKE: "Plan GKE Standard node sizes"; EKS AMI: kube-reserved 80m CPU on 4 cores, 255Mi + 11Mi x
# max pods memory, 100Mi eviction), less a margin for DaemonSets (logging, metrics, GPU device
# plugin): what a Job's requests may use. (cpu cores, memory GiB)
NODE_ALLOCATABLE = {
    "g2-standard-4": (3.92 - 0.5, 13.3 - 1.0),   # GKE, 4 vCPU / 16 GB, 1 x L4
    "g6.xlarge": (3.92 - 0.5, 14.5 - 1.0),       # EKS, 4 vCPU / 16 GiB, 1 x L4
    "ct5lp-hightpu-4t": (111.8 - 1.0, 185.0 - 2.0),  # GKE TPU v5e 2x2, 112 vCPU / 192 GB
}
TPU_MACHINES = {("tpu-v5-lite-podslice", "2x2"): "ct5lp-hightpu-4t"}


def quantity(value) -> float:
    """A Kubernetes quantity as cores or GiB."""
    text = str(value)
    for suffix, factor in (("Gi", 1.0), ("Mi", 1 / 1024), ("m", 1 / 1000)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("preset", ["gpu-gke", "gpu-eks", "tpu-gke"])
def test_preset_requests_fit_the_pinned_node_type(k8s_tools, preset):
    """A pod whose requests exceed the node's allocatable is Pending forever: 4 CPU / 16 GiB on a
    4-vCPU/16-GiB node never fits."""
    pod = one(render(k8s_tools, "retrain-job", REPO / f"charts/retrain-job/ci/{preset}-values.yaml"),
              "Job")["spec"]["template"]["spec"]
    selector = pod["nodeSelector"]
    machine = selector.get("node.kubernetes.io/instance-type") or TPU_MACHINES[
        (selector["cloud.google.com/gke-tpu-accelerator"], selector["cloud.google.com/gke-tpu-topology"])]
    cpu, memory = NODE_ALLOCATABLE[machine]
    resources = container(pod, "train")["resources"]
    assert quantity(resources["requests"]["cpu"]) <= cpu, (machine, resources)
    assert quantity(resources["requests"]["memory"]) <= memory, (machine, resources)
    assert quantity(resources["limits"]["memory"]) <= memory + 1.0, (machine, resources)


def preset_uris(values: dict) -> list[str]:
    training = {**{"data": [], "modelRepo": "s3://fundus-seg/models"}, **(values.get("training") or {})}
    return [*training["data"], training["modelRepo"], training.get("checkpointDir") or "s3://"]


@pytest.mark.parametrize("values", sorted((REPO / "charts" / "retrain-job" / "ci").glob("*-values.yaml")),
                         ids=lambda p: p.name)
def test_presets_use_storage_the_training_job_can_read(values):
    """The training job and the rollout gate read s3:// (fundus_seg/storage.py, `_split_s3`):
    GKE Workload Identity gives Google credentials, which no s3:// request accepts. So no preset
    pairs `iam.gke.io/gcp-service-account` with s3:// URIs; the GKE presets reach GCS through its
    S3-compatible XML API with HMAC keys in a Secret."""
    import yaml

    preset = yaml.safe_load(values.read_text())
    annotations = (preset.get("serviceAccount") or {}).get("annotations") or {}
    default_data = yaml.safe_load((REPO / "charts/retrain-job/values.yaml").read_text())["training"]["data"]
    uris = [u for u in preset_uris({"training": {"data": default_data, **(preset.get("training") or {})}})]
    assert all(u.startswith("s3://") for u in uris), uris
    assert "iam.gke.io/gcp-service-account" not in annotations
    selectors = {**((preset.get("gpu") or {}).get("nodeSelector") or {}), **((preset.get("tpu") or {}).get("nodeSelector") or {})}
    on_gke = preset.get("accelerator") == "tpu" or any(k.startswith("cloud.google.com/") for k in selectors)
    if on_gke:
        storage = preset["storage"]
        assert storage["existingSecret"] and storage["endpointUrl"] == "https://storage.googleapis.com"


def test_every_image_variant_the_charts_and_overlays_use_is_built():
    """`-gpu` and `-tpu` images exist only if Dockerfile.training builds those VARIANTs."""
    dockerfile = (REPO / "Dockerfile.training").read_text()
    for variant in ("gpu", "tpu"):
        assert f'"$VARIANT" = {variant}' in dockerfile
        assert f"--build-arg VARIANT={variant} -t ghcr.io/fundus-seg/fundus-seg:0.1.0-{variant}" in dockerfile
    assert "tensorflow-tpu==$tf_version" in dockerfile  # the TPU build of the locked release


@pytest.mark.parametrize("sets,needle", [
    ({"accelerator": "fpga"}, "accelerator"),
    ({"training.mode": "partial"}, "mode"),
    ({"tpu.topology": "big", "accelerator": "tpu"}, "topology"),
    ({"rollout.percent": "100"}, "percent"),
    ({"storage.createSecret": "true"}, "storage.accessKeyId is required"),
])
def test_bad_values_are_rejected(k8s_tools, sets, needle):
    args = ["helm", "template", "r", str(REPO / "charts" / "retrain-job")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    result = run_tool(k8s_tools, *args, check=False)
    assert result.returncode != 0 and needle in result.stderr, result.stderr


def test_storage_env_comes_from_one_secret(k8s_tools):
    job = one(render(k8s_tools, "retrain-job", sets={"storage.existingSecret": "creds"}), "Job")
    env = {e["name"]: e for e in container(job["spec"]["template"]["spec"], "train")["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["AWS_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "AWS_ENDPOINT_URL",
                                                                    "optional": True}
    job = one(render(k8s_tools, "retrain-job"), "Job")  # workload identity: no keys at all
    env = {e["name"] for e in container(job["spec"]["template"]["spec"], "train")["env"]}
    assert not env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}


def test_kubernetes_validate_cli_passes_everything_rendered(k8s_tools, tmp_path):
    """The `kubernetes-validate --strict` command itself, on every built-in object of every chart,
    preset and overlay; its unknown-kind WARN lines count as failures (shown with the isvc)."""
    import subprocess
    import sys

    import yaml

    from tests.k8s.manifests import CRD_KINDS, KUBE_VERSIONS, load_documents

    objects = [obj for chart, values in CASES for obj in render(k8s_tools, chart, *values_args(chart, values))]
    for overlay in ("cpu", "gpu", "tpu"):
        objects += load_documents(run_tool(k8s_tools, "kubectl", "kustomize", str(REPO / "k8s/overlays" / overlay)).stdout)
    builtin = [o for o in objects if (o["apiVersion"], o["kind"]) not in CRD_KINDS]
    assert {o["kind"] for o in builtin} >= {"Job", "CronJob", "ServiceAccount", "Secret", "ConfigMap", "Role", "RoleBinding"}

    def validate(docs, version):
        path = tmp_path / "all.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet",
                                 "-k", version, str(path)], capture_output=True, text=True, timeout=300)
        return result.returncode, result.stdout + result.stderr

    for version in KUBE_VERSIONS:
        code, output = validate(builtin, version)
        assert code == 0 and "WARN" not in output and "ERROR" not in output, output
    isvc = next(o for o in objects if o["kind"] == "InferenceService")
    code, output = validate([isvc], KUBE_VERSIONS[-1])
    assert code == 0 and "WARN" in output  # why the CLI alone is not enough for custom kinds


@pytest.mark.parametrize("sets,needle", [
    ({"inferenceService.deploymentMode": "Knative", "predictor.scaleMetric": "cpu"}, "needs the HPA autoscaler"),
    ({"inferenceService.deploymentMode": "Serverless", "predictor.scaleMetric": "cpu"}, "needs the HPA autoscaler"),
    ({"inferenceService.deploymentMode": "Standard", "transformer.scaleMetric": "rps"}, "Knative-only"),
    ({"inferenceService.deploymentMode": "RawDeployment", "transformer.scaleMetric": "rps"}, "Knative-only"),
])
def test_scale_metric_must_fit_the_mode(k8s_tools, sets, needle):
    args = ["helm", "template", "t", str(REPO / "charts" / "fundus-seg")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    result = run_tool(k8s_tools, *args, check=False)
    assert result.returncode != 0 and needle in result.stderr, result.stderr
    hpa = run_tool(k8s_tools, *args, "--set", "inferenceService.annotations.serving\\.kserve\\.io/autoscalerClass=hpa",
                   check=False)
    assert (hpa.returncode == 0) == (sets["inferenceService.deploymentMode"] in ("Knative", "Serverless"))
