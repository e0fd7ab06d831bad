"""Plain manifests for kubectl-only users: the kustomize base and its cpu/gpu/tpu overlays."""
from __future__ import annotations

import pytest

from tests.k8s.manifests import OVERLAYS, assert_valid, build, one, render


def train_container(objects):
    pod = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (train,) = [c for c in pod["containers"] if c["name"] == "train"]
    return pod, train


def env_of(container):
    return {e["name"]: e for e in container["env"]}


def test_required_overlays_exist():
    assert {"cpu", "gpu", "tpu"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_validates(k8s_tools, overlay):
    objects = build(k8s_tools, overlay)
    assert_valid(objects)
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "CronJob", "InferenceService",
                                                  "ServiceAccount", "ServiceAccount"]
    assert {o["metadata"]["namespace"] for o in objects} == {"fundus-seg"}
    pod, train = train_container(objects)
    assert env_of(train)["ACCELERATOR"]["value"] == overlay
    # The generated ConfigMap (name with a content hash) is what the CronJob mounts.
    config = one(objects, "ConfigMap")["metadata"]["name"]
    assert {v["name"]: v for v in pod["volumes"]}["config"]["configMap"]["name"] == config
    assert pod["serviceAccountName"] in {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}


def test_cronjob_recipe_fields(k8s_tools):
    cron = one(build(k8s_tools, "cpu"), "CronJob")
    assert cron["metadata"]["name"] == "fundus-seg-retrain"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 0 and job["ttlSecondsAfterFinished"] > 0
    pod, train = train_container([cron])
    args = train["args"]
    assert args[args.index("--run-id") + 1] == "$(RUN_ID)"
    # the Job's uid: a Job created again under an old name (`kubectl create job --from=...`) must
    # not be "already published" and train nothing
    assert env_of(train)["RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    assert args[args.index("--accelerator") + 1] == "$(ACCELERATOR)"
    assert not any(k.startswith(("nvidia.com", "google.com")) for k in train["resources"]["limits"])


def test_gpu_overlay(k8s_tools):
    pod, train = train_container(build(k8s_tools, "gpu"))
    assert train["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "cpu" not in train["resources"]["limits"]
    assert train["image"].endswith("-gpu")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "cloud.google.com/gke-accelerator" in pod["nodeSelector"]
    from tests.k8s.test_charts import NODE_ALLOCATABLE, quantity

    cpu, memory = NODE_ALLOCATABLE[pod["nodeSelector"]["node.kubernetes.io/instance-type"]]
    assert quantity(train["resources"]["requests"]["cpu"]) <= cpu
    assert quantity(train["resources"]["requests"]["memory"]) <= memory


def test_tpu_overlay(k8s_tools):
    pod, train = train_container(build(k8s_tools, "tpu"))
    assert train["resources"]["limits"]["google.com/tpu"] == train["resources"]["requests"]["google.com/tpu"] == 4
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                                   "cloud.google.com/gke-tpu-topology": "2x2"}
    assert {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert train["image"] == "ghcr.io/fundus-seg/fundus-seg:0.1.0-tpu"  # the Cloud TPU build


def test_plain_isvc_matches_the_chart(k8s_tools):
    """k8s/ holds no second truth: its InferenceService is the chart's default rendering in the
    overlays' namespace -- the namespace-qualified predictor host included (Knative's
    cluster-local routes do not answer a bare `optic-disc-predictor`)."""
    plain = one(build(k8s_tools, "cpu"), "InferenceService")["spec"]
    chart = one(render(k8s_tools, "fundus-seg", namespace="fundus-seg"), "InferenceService")["spec"]
    for component in ("predictor", "transformer"):
        for spec in (plain, chart):
            spec[component].pop("serviceAccountName")
    args = plain["transformer"]["containers"][0]["args"]
    assert args[args.index("--predictor_host") + 1] == "optic-disc-predictor.fundus-seg.svc.cluster.local:80"
    plain["predictor"]["model"]["runtimeVersion"] = str(plain["predictor"]["model"]["runtimeVersion"])
    assert plain == chart
