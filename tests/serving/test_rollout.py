"""Canary rollout: the metrics gate, the local label files, and the KServe target against an HTTP
fake of the Kubernetes API (tests/serving/test_rollout_fakeapi.py) through the real client."""
from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import pytest
import yaml

from fundus_seg.model_card import ModelCard
from serving.rollout import cli as rollout_cli
from serving.rollout import moves
from serving.rollout.errors import RolloutError
from serving.rollout.gate import GateFailed, check_gate, compare_metrics
from serving.rollout.kserve import KServeTarget
from serving.rollout.local import LocalTarget
from serving.rollout.record import STABLE_LABEL, RecordError, RolloutRecord
from tests.serving.helpers import kube_api_client

REPO = Path(__file__).resolve().parents[2]
NS = "fundus"
ISVC = "inferenceservices"


def card(version, **datasets) -> ModelCard:
    return ModelCard.from_dict(metrics(version, **datasets))


def metrics(version, **datasets):
    return {"model_name": "optic-disc", "version": version, "mode": "full", "base_version": None,
            "data": [], "trainable_params": 900000, "training_seconds": 1.0, "config": {},
            "test_metrics": {name: {"n": 50, "dice_mean": dice, "dice_std": 0.02, "dice_min": 0.8,
                                    "dice_max": 0.98, "rrp": rrp} for name, (dice, rrp) in datasets.items()}}


GOOD = {"drishti-gs1": (0.95, 96.0), "rim-one-dl": (0.90, 90.0)}


def publish(repo: Path, version: int, datasets=GOOD, model="optic-disc"):
    directory = repo / model / str(version)
    (directory / "variables").mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(b"\x08\x01")
    (directory / "metrics.json").write_text(json.dumps(metrics(version, **datasets)))


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "models"
    publish(root, 1, {"drishti-gs1": (0.90, 92.0), "rim-one-dl": (0.85, 85.0)})
    publish(root, 2)
    publish(root, 3, {"drishti-gs1": (0.951, 96.5), "rim-one-dl": (0.895, 89.5)})  # within 0.01 / 1 point
    publish(root, 4, {"drishti-gs1": (0.97, 97.0), "rim-one-dl": (0.80, 80.0)})  # regresses on rim-one-dl
    return root


# ---------------------------------------------------------------------------------------------
# Gate


def test_gate_passes_within_tolerance():
    gate = compare_metrics(card(2, **GOOD), card(3, **{"drishti-gs1": (0.941, 95.1), "rim-one-dl": (0.9, 90)}),
                           0.01, serving_version=2, candidate_version=3)
    assert gate.passed and gate.compared == ("drishti-gs1", "rim-one-dl")
    assert "gate passed" in gate.summary()


@pytest.mark.parametrize("candidate,bad", [
    ({"drishti-gs1": (0.93, 96.0), "rim-one-dl": (0.90, 90.0)}, ("drishti-gs1", "dice_mean")),
    ({"drishti-gs1": (0.95, 94.5), "rim-one-dl": (0.90, 90.0)}, ("drishti-gs1", "rrp")),  # rrp: 100 x tolerance
    ({"drishti-gs1": (0.95, 96.0)}, ("rim-one-dl", "dice_mean")),  # a dataset the candidate lacks
])
def test_gate_reports_each_regression(candidate, bad):
    gate = compare_metrics(card(2, **GOOD), card(3, **candidate), 0.01, serving_version=2, candidate_version=3)
    assert not gate.passed
    assert (gate.regressions[0].dataset, gate.regressions[0].metric) == bad
    assert bad[0] in gate.summary() and "FAILED" in gate.summary()


def test_gate_ignores_datasets_only_the_candidate_has():
    candidate = metrics(3, **GOOD, **{"refuge": (0.5, 10.0)})
    assert compare_metrics(card(2, **GOOD), ModelCard.from_dict(candidate), 0.0).passed


@pytest.mark.parametrize("scores", [{"n": 50, "dice_mean": float("nan"), "rrp": 96.0}, {"n": 50, "rrp": 96.0},
                                    {"n": 50, "dice_mean": 0.95, "rrp": "n/a"}, {}, None],
                         ids=["nan", "missing", "not-a-number", "empty", "null"])
def test_gate_refuses_a_serving_version_without_usable_metrics(scores):
    serving = metrics(2, **GOOD)
    serving["test_metrics"]["drishti-gs1"] = scores
    gate = compare_metrics(ModelCard.from_dict(serving), card(3, **GOOD), 0.01, serving_version=2, candidate_version=3)
    assert not gate.passed and "FAILED" in gate.summary()
    assert "the serving version has no usable metrics for dataset drishti-gs1" in gate.summary()


def test_local_gate_refuses_nan_serving_metrics_unless_forced(repo, capsys):
    path = repo / "optic-disc" / "2" / "metrics.json"
    record = json.loads(path.read_text())
    record["test_metrics"]["rim-one-dl"]["dice_mean"] = float("nan")
    path.write_text(json.dumps(record))  # json writes NaN, and reads it back as nan
    target = LocalTarget(repo)
    with pytest.raises(GateFailed, match="serving version has no usable metrics for dataset rim-one-dl.*--force"):
        moves.start(target, 3, report=print)
    assert not (repo / "rollout.json").exists() and not (repo / "models.config").exists()
    assert moves.start(target, 3, force=True, report=print).canary == 3
    assert "forced" in capsys.readouterr().out


def test_gate_reads_metrics_from_the_repository(repo):
    gate = check_gate(str(repo), "optic-disc", 2, 4, 0.01)
    assert not gate.passed and [r.dataset for r in gate.regressions] == ["rim-one-dl", "rim-one-dl"]
    (repo / "optic-disc" / "2" / "metrics.json").unlink()
    with pytest.raises(RolloutError, match="cannot read the serving version's metrics"):
        check_gate(str(repo), "optic-disc", 2, 3, 0.01)


def test_version_resolution(repo):
    assert moves.resolve_version("latest", None, str(repo), "optic-disc") == 4
    assert moves.resolve_version("3", None, str(repo), "optic-disc") == 3
    with pytest.raises(RolloutError, match="not published"):
        moves.resolve_version("9", None, str(repo), "optic-disc")
    record = json.loads((repo / "optic-disc" / "3" / "metrics.json").read_text())
    (repo / "optic-disc" / "3" / "metrics.json").write_text(json.dumps({**record, "run_id": "nightly-7"}))
    assert moves.resolve_version(None, "nightly-7", str(repo), "optic-disc") == 3
    with pytest.raises(RolloutError, match="run id"):
        moves.resolve_version(None, "nope", str(repo), "optic-disc")


def test_state_transitions_refuse_nonsense():
    state = RolloutRecord(model_name="optic-disc", stable=2)
    with pytest.raises(RolloutError, match="already the serving version"):
        moves.started(state, 2, 10)
    canary = moves.started(state, 3, 10)
    with pytest.raises(RolloutError, match="already a canary"):
        moves.started(canary, 4, 10)
    with pytest.raises(RolloutError, match="between 1 and 99"):
        moves.started(state, 3, 100)
    with pytest.raises(RolloutError, match="not 4"):
        moves.promoted(canary, 4)
    with pytest.raises(RolloutError, match="no canary"):
        moves.rolled_back(state)
    assert moves.promoted(canary) == RolloutRecord(model_name="optic-disc", stable=3)
    assert moves.rolled_back(canary) == state


# ---------------------------------------------------------------------------------------------
# The rollout.json record, written by the targets and read by the transformer's routing


def test_record_dumps_the_file_format_and_parses_it_back():
    record = RolloutRecord(2, 3, 10, model_name="optic-disc")
    document = json.loads(record.dumps(isvc="optic-disc"))
    assert {k: document[k] for k in ("model_name", "stable", "canary", "canary_percent", "isvc")} == \
        {"model_name": "optic-disc", "stable": 2, "canary": 3, "canary_percent": 10, "isvc": "optic-disc"}
    assert type(document["canary_percent"]) is int and document["updated_at"].endswith("+00:00")
    assert RolloutRecord.parse(record.dumps()) == record
    assert RolloutRecord.parse('{"stable": 3, "canary": 4, "canary_percent": 12.5}') == RolloutRecord(3, 4, 12.5)
    assert RolloutRecord.parse(b'{"stable": 3, "canary": null}') == RolloutRecord(3)
    assert record.describe() == "optic-disc: stable version 2 90%, canary version 3 10%"


@pytest.mark.parametrize("data, message", [
    ("{ half written", "not JSON"),
    ("[]", "not a JSON object"),
    ("{}", "no stable version"),
    ('{"stable": "3"}', "stable must be a version number"),
    ('{"stable": 3.0}', "stable must be a version number"),
    ('{"stable": true}', "stable must be a version number"),
    ('{"stable": -1}', "stable must be a version number"),
    ('{"stable": 1, "canary": "2", "canary_percent": 10}', "canary must be a version number"),
    ('{"stable": 1, "canary": 2, "canary_percent": 150}', "canary_percent must be a number from 0 to 100"),
    ('{"stable": 1, "canary": 2, "canary_percent": NaN}', "canary_percent must be a number from 0 to 100"),
    ('{"stable": 1, "canary": 2, "canary_percent": null}', "canary_percent must be a number from 0 to 100"),
    ('{"stable": 1, "canary": 2, "canary_percent": "10"}', "canary_percent must be a number from 0 to 100"),
    ('{"stable": 1, "canary": null, "canary_percent": 10}', "there is no canary"),
    ('{"stable": 1, "model_name": ""}', "model_name must be a non-empty string"),
], ids=lambda value: value if len(value) < 30 else None)
def test_record_parse_rejects_malformed_records(data, message):
    with pytest.raises(RecordError, match=message):
        RolloutRecord.parse(data)


def test_unreadable_records_are_rollout_errors(repo):
    (repo / "rollout.json").write_text('{"model_name": "optic-disc", "stable": "2"}')
    with pytest.raises(RolloutError, match=r"unreadable rollout record .*rollout.json: stable must be a version"):
        LocalTarget(repo).state()


# ---------------------------------------------------------------------------------------------
# Local target: models.config + rollout.json


def read_models_config(repo: Path):
    """Parsed by the predictor's own reader (TF Serving's protos)."""
    from serving.predictor.config import read_model_config_file

    return {m.name: m for m in read_model_config_file(repo / "models.config")}


def test_local_start_promote(repo):
    target = LocalTarget(repo)
    state = moves.start(target, 3, percent=10, report=lambda line: None)
    assert state == RolloutRecord(model_name="optic-disc", stable=2, canary=3, canary_percent=10)
    model = read_models_config(repo)["optic-disc"]
    assert model.base_path == repo.resolve() / "optic-disc"
    assert model.version_policy.kind == "specific" and model.version_policy.versions == {2, 3}
    assert model.version_labels == {"stable": 2, "canary": 3}
    record = json.loads((repo / "rollout.json").read_text())
    assert {k: record[k] for k in ("model_name", "stable", "canary", "canary_percent")} == \
        {"model_name": "optic-disc", "stable": 2, "canary": 3, "canary_percent": 10}
    assert "updated_at" in record

    assert moves.start(target, 3, percent=50, report=lambda line: None).canary_percent == 50
    with pytest.raises(RolloutError, match="already a canary"):
        moves.start(target, 1, percent=10, report=lambda line: None)

    assert moves.promote(target, 3) == RolloutRecord(model_name="optic-disc", stable=3)
    model = read_models_config(repo)["optic-disc"]
    assert model.version_labels == {"stable": 3} and model.version_policy.versions == {3}
    assert json.loads((repo / "rollout.json").read_text())["canary"] is None
    assert not [p.name for p in repo.iterdir() if p.name.endswith(".tmp")]


def test_local_gate_refuses_then_force(repo, capsys):
    target = LocalTarget(repo)
    with pytest.raises(GateFailed, match=r"rim-one-dl: dice_mean 0.8 vs serving 0.895 \(drop 0.095 > 0.01\)"):
        moves.start(target, 4, report=print)  # serving: 3 (latest below 4)
    assert not (repo / "models.config").exists() and not (repo / "rollout.json").exists()
    assert "v3" in capsys.readouterr().out  # the comparison table was shown
    state = moves.start(target, 4, force=True, report=print)
    assert state == RolloutRecord(model_name="optic-disc", stable=3, canary=4, canary_percent=10)
    assert "forced" in capsys.readouterr().out


def test_local_rollback_keeps_other_models(repo):
    (repo / "models.config").write_text(
        'model_config_list { config { name: "vessels" base_path: "/srv/vessels" model_platform: "tensorflow" } }')
    target = LocalTarget(repo)
    moves.start(target, 3, report=lambda line: None)
    assert moves.rollback(target) == RolloutRecord(model_name="optic-disc", stable=2)
    models = read_models_config(repo)
    assert models["vessels"].base_path == Path("/srv/vessels")
    assert models["optic-disc"].version_labels == {"stable": 2}
    with pytest.raises(RolloutError, match="no canary"):
        moves.rollback(target)


@pytest.mark.parametrize("end, stable", [(moves.promote, 3), (moves.rollback, 2)], ids=["promote", "rollback"])
def test_local_rollout_ends_with_a_final_record_and_the_transformer_stays_on_stable(repo, end, stable):
    """rollout.json is never deleted by a rollout; if someone deletes it, the transformer keeps the stable label."""
    from serving.transformer.routing import VersionRouter

    target = LocalTarget(repo)
    router = VersionRouter(repo / "rollout.json", check_every_s=0.0)
    moves.start(target, 3, percent=50, report=lambda line: None)
    assert router.split == RolloutRecord(2, 3, 50.0, model_name="optic-disc")
    end(target)
    record = json.loads((repo / "rollout.json").read_text())
    assert (record["stable"], record["canary"], record["canary_percent"]) == (stable, None, 0)
    assert router.split == RolloutRecord(stable, model_name="optic-disc") and read_models_config(repo)["optic-disc"].version_labels == {"stable": stable}

    moves.start(target, 4, percent=50, force=True, report=lambda line: None)
    assert router.split == RolloutRecord(stable, 4, 50.0, model_name="optic-disc")
    (repo / "rollout.json").unlink()  # by hand, mid-canary: the predictor's latest version is the canary
    assert {router.choose() for _ in range(200)} == {STABLE_LABEL} and router.split.version_for(STABLE_LABEL) == stable
    assert read_models_config(repo)["optic-disc"].version_labels["stable"] == stable  # the label still resolves
    assert target.state() == RolloutRecord(model_name="optic-disc", stable=stable, canary=4, canary_percent=0)  # as routed
    assert "is missing: the transformer sends every request to the stable" in "\n".join(target.status_lines())
    assert moves.rollback(target) == RolloutRecord(model_name="optic-disc", stable=stable)  # and the CLI can still end it
    assert json.loads((repo / "rollout.json").read_text())["stable"] == stable


def test_local_cli(repo, capsys):
    run(["rollout", "start", "--local", str(repo), "--version", "3", "--percent", "20"])
    run(["rollout", "status", "--local", str(repo)])
    out = capsys.readouterr().out
    assert "stable version 2 80%, canary version 3 20%" in out and "rollout.json" in out
    assert run(["rollout", "status", "--local", str(repo), "--watch"]) == 0  # nothing to wait for locally
    assert run(["rollout", "promote", "--local", str(repo), "--wait"]) == 0
    assert json.loads((repo / "rollout.json").read_text())["stable"] == 3


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fundus-seg")
    rollout_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# ---------------------------------------------------------------------------------------------
# KServe target against the fake API server


def deployed_isvc(repo: Path, version: int, mode: str) -> dict:
    """k8s/base's InferenceService (= the chart's default rendering) serving `version` of `repo`,
    with the status KServe >= 0.16 writes: `status.deploymentMode` carries the new names
    (`Knative`, `Standard`) even where the annotation still has a legacy one
    (pkg/constants/constants.go, `ParseDeploymentMode`: Serverless -> Knative, RawDeployment -> Standard)."""
    isvc = yaml.safe_load((REPO / "k8s" / "base" / "inferenceservice.yaml").read_text())
    isvc["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": mode}
    isvc["spec"]["predictor"]["storageUris"] = [
        {"uri": f"{repo}/optic-disc/{version}", "mountPath": f"/mnt/models/{version}"}]
    written = {"serverless": "Knative", "rawdeployment": "Standard"}.get(mode.lower(), mode)
    isvc["status"] = {"deploymentMode": written,
                      "conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 1,
                      "url": "http://optic-disc.fundus.svc.cluster.local"}
    return isvc


@pytest.fixture
def cluster(kube_api, repo):
    def deploy(version=2, mode="Knative"):
        kube_api.put(ISVC, NS, deployed_isvc(repo, version, mode))
        return KServeTarget(kube_api_client(kube_api), "optic-disc", NS)
    return deploy


def stored(kube_api) -> dict:
    return kube_api.get(ISVC, NS, "optic-disc")


def record(kube_api) -> dict:
    return json.loads(kube_api.get("configmaps", NS, "optic-disc-rollout")["data"]["rollout.json"])


def quiet(line):
    pass


def reconcile(kube_api, revision="optic-disc-predictor-00003"):
    """What KServe does once the latest spec serves: Ready, the current generation observed."""
    status = {**stored(kube_api)["status"], "conditions": [{"type": "Ready", "status": "True"}],
              "components": {"predictor": {"latestCreatedRevision": revision, "latestReadyRevision": revision}}}
    kube_api.set_status(ISVC, NS, "optic-disc", status)


@pytest.mark.parametrize("annotation", ["Knative", "Serverless"])
def test_knative_start_patches_storage_and_canary_percent(kube_api, cluster, repo, annotation):
    """Both the v0.16+ name and the legacy one in the annotation; status says `Knative` (what
    KServe >= 0.16 writes): before, "unsupported KServe deployment mode 'Knative'" failed every rollout."""
    target = cluster(mode=annotation)
    assert target.state() == RolloutRecord(model_name="optic-disc", stable=2)
    assert target.model_repo == str(repo) and target.model_name == "optic-disc"
    before = stored(kube_api)

    state = moves.start(target, 3, percent=10, report=quiet)
    assert state == RolloutRecord(model_name="optic-disc", stable=2, canary=3, canary_percent=10)
    (patch,) = kube_api.writes(ISVC)
    assert patch["method"] == "PATCH" and patch["content_type"] == "application/merge-patch+json"
    assert patch["body"]["metadata"] == {"resourceVersion": before["metadata"]["resourceVersion"]}
    predictor = stored(kube_api)["spec"]["predictor"]
    assert predictor["storageUris"] == [{"uri": f"{repo}/optic-disc/3", "mountPath": "/mnt/models/3"}]
    assert predictor["canaryTrafficPercent"] == 10
    assert stored(kube_api)["spec"]["transformer"] == before["spec"]["transformer"]  # nothing else touched
    assert {k: record(kube_api)[k] for k in ("stable", "canary", "canary_percent", "deployment_mode")} == \
        {"stable": 2, "canary": 3, "canary_percent": 10, "deployment_mode": "Knative"}
    assert target.state() == state  # the stable version comes from the record during the canary

    assert moves.start(target, 3, percent=30, report=quiet).canary_percent == 30
    assert stored(kube_api)["spec"]["predictor"]["canaryTrafficPercent"] == 30


@pytest.mark.parametrize("name,mode", [("Knative", "Knative"), ("Serverless", "Knative"), ("serverless", "Knative"),
                                       ("Standard", "Standard"), ("RawDeployment", "Standard")])
def test_mode_names_old_and_new(name, mode):
    from serving.rollout.kserve import normalize_mode

    assert normalize_mode(name) == mode


def test_unknown_mode_is_refused(kube_api, cluster):
    target = cluster()
    isvc = stored(kube_api)
    isvc["status"]["deploymentMode"] = "ModelMesh"
    kube_api.put(ISVC, NS, isvc)
    with pytest.raises(RolloutError, match="unsupported KServe deployment mode 'ModelMesh'"):
        target.state()


def test_knative_promote_removes_canary_percent(kube_api, cluster):
    target = cluster()
    moves.start(target, 3, report=quiet)
    assert moves.promote(target, 3) == RolloutRecord(model_name="optic-disc", stable=3)
    predictor = stored(kube_api)["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["storageUris"][0]["uri"].endswith("/optic-disc/3")
    assert record(kube_api)["stable"] == 3 and record(kube_api)["canary"] is None
    assert target.state() == RolloutRecord(model_name="optic-disc", stable=3)


def test_knative_rollback_pins_traffic_then_unpins_once_ready(kube_api, cluster):
    """Rollback: `canaryTrafficPercent: 0` pins the traffic to the previous rolled-out revision
    (upstream docs/samples/v1beta1/rollout/README.md: with canaryTrafficPercent set, KServe keeps
    the last revision rolled out at 100 % at 100 - P % and gives the latest P %). Left there, the
    next revision -- the next `helm upgrade` -- would get 0 %: once the stable version's new
    revision is ready, `settle` removes the field."""
    target = cluster()
    moves.start(target, 3, report=quiet)
    assert moves.rollback(target) == RolloutRecord(model_name="optic-disc", stable=2)
    predictor = stored(kube_api)["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 0
    assert predictor["storageUris"] == [{"uri": predictor["storageUris"][0]["uri"], "mountPath": "/mnt/models/2"}]
    assert predictor["storageUris"][0]["uri"].endswith("/optic-disc/2")
    assert target.state() == RolloutRecord(model_name="optic-disc", stable=2)
    assert target.unsettled()

    assert not target.settle(timeout=1, report=quiet)  # the new revision is not ready: stays pinned
    assert stored(kube_api)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert any("rollback not finished" in line for line in target.status_lines())
    reconcile(kube_api)
    assert target.settle(timeout=5, report=quiet)
    assert "canaryTrafficPercent" not in stored(kube_api)["spec"]["predictor"]
    assert not target.unsettled() and target.settle(timeout=1, report=quiet)  # nothing left to do
    assert target.state() == RolloutRecord(model_name="optic-disc", stable=2)
    # the next canary starts from there
    assert moves.start(target, 3, percent=5, report=quiet).canary_percent == 5
    assert stored(kube_api)["spec"]["predictor"]["canaryTrafficPercent"] == 5


def test_settle_waits_for_the_latest_revision(kube_api, cluster):
    """Ready alone is not enough while Knative's latest created revision is not the ready one
    (`status.components.predictor.latestCreatedRevision`/`latestReadyRevision`: ComponentStatusSpec
    in pkg/apis/serving/v1beta1/inference_service_status.go)."""
    target = cluster()
    moves.start(target, 3, report=quiet)
    moves.rollback(target)
    status = {**stored(kube_api)["status"], "components": {"predictor": {
        "latestCreatedRevision": "optic-disc-predictor-00003", "latestReadyRevision": "optic-disc-predictor-00002"}}}
    kube_api.set_status(ISVC, NS, "optic-disc", status)
    ready, summary = KServeTarget.readiness(stored(kube_api))
    assert not ready and "revision optic-disc-predictor-00003 not ready yet" in summary
    assert not target.settle(timeout=1, report=quiet)
    assert stored(kube_api)["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_gate_failure_touches_nothing(kube_api, cluster):
    target = cluster(version=3)
    with pytest.raises(GateFailed, match="rim-one-dl"):
        moves.start(target, 4, report=quiet)
    assert kube_api.writes() == []


def test_conflict_is_re_read_and_retried(kube_api, cluster):
    target = cluster()
    kube_api.fail_next_writes((409, "Conflict"))
    assert moves.start(target, 3, report=quiet).canary == 3
    patches = kube_api.writes(ISVC)
    assert len(patches) == 2
    assert patches[0]["body"]["metadata"]["resourceVersion"] != patches[1]["body"]["metadata"]["resourceVersion"]
    assert stored(kube_api)["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_real_concurrent_change_is_not_overwritten(kube_api, cluster):
    """Someone else starts a canary between our read and our write: we re-read and refuse."""
    target = cluster()
    original_get = target.get
    calls = []

    def get_then_race():
        obj = original_get()
        if not calls:
            calls.append(1)
            other = stored(kube_api)
            other["spec"]["predictor"]["canaryTrafficPercent"] = 50
            other["spec"]["predictor"]["storageUris"] = [{"uri": obj["spec"]["predictor"]["storageUris"][0]["uri"]
                                                          .replace("/2", "/4"), "mountPath": "/mnt/models/4"}]
            kube_api.put(ISVC, NS, other)
            kube_api.put("configmaps", NS, {"apiVersion": "v1", "kind": "ConfigMap",
                                            "metadata": {"name": "optic-disc-rollout"},
                                            "data": {"rollout.json": json.dumps(
                                                {"model_name": "optic-disc", "stable": 2, "canary": 4,
                                                 "canary_percent": 50})}})
        return obj

    target.get = get_then_race
    with pytest.raises(RolloutError, match="already a canary at 50%"):
        target.update(lambda state: moves.started(state, 3, 10))
    assert kube_api.writes(ISVC)[0]["method"] == "PATCH"  # the stale write was refused with 409
    assert stored(kube_api)["spec"]["predictor"]["canaryTrafficPercent"] == 50


def test_endless_conflicts_give_up(kube_api, cluster):
    target = cluster()
    kube_api.fail_next_writes(*[(409, "Conflict")] * 20)
    with pytest.raises(RolloutError, match="kept changing"):
        target.update(lambda state: moves.started(state, 3, 10))


def test_missing_isvc_forbidden_and_unavailable(kube_api, repo):
    from fundus_seg.errors import exit_code

    target = KServeTarget(kube_api_client(kube_api), "nope", NS)
    with pytest.raises(RolloutError, match="InferenceService fundus/nope not found"):
        target.state()
    kube_api.put(ISVC, NS, deployed_isvc(repo, 2, "Knative"))
    target = KServeTarget(kube_api_client(kube_api), "optic-disc", NS)
    kube_api.fail_next_writes((403, "Forbidden"))
    with pytest.raises(RolloutError, match="not allowed to patch") as refused:
        target.update(lambda s: moves.started(s, 3, 10))
    assert exit_code(refused.value) == 2  # the retrain Job fails at once (podFailurePolicy)
    kube_api.fail_next_writes((503, "ServiceUnavailable"))
    with pytest.raises(RolloutError, match="try again") as unavailable:
        target.update(lambda s: moves.started(s, 3, 10))
    assert exit_code(unavailable.value) == 1  # the Job may retry this one


def test_unmanaged_canary_is_refused(kube_api, cluster):
    target = cluster()
    isvc = stored(kube_api)
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 20
    kube_api.put(ISVC, NS, isvc)
    with pytest.raises(RolloutError, match="does not say which version is stable"):
        target.state()


def test_single_storage_uri_is_explained(kube_api, repo):
    isvc = deployed_isvc(repo, 2, "Knative")
    del isvc["spec"]["predictor"]["storageUris"]
    isvc["spec"]["predictor"]["model"]["storageUri"] = f"{repo}/optic-disc"
    kube_api.put(ISVC, NS, isvc)
    with pytest.raises(RolloutError, match="needs one spec.predictor.storageUris entry"):
        KServeTarget(kube_api_client(kube_api), "optic-disc", NS).state()


@pytest.mark.parametrize("mode", ["Standard", "RawDeployment"])
def test_standard_mode_canary_is_refused_before_the_gate(kube_api, cluster, mode, monkeypatch):
    """No Standard-mode canary (docs/KUBERNETES.md, "Canary mechanics"): `spec.canary` is not in
    v0.16.0's CRD (the API server would prune it: see test_a_canary_would_be_pruned_before_v0_20),
    and on v0.20+ the canary pod would get no model (issue #13's reading of the v0.20.0 predictor
    reconciler: no storage URIs are passed to the canary's, so no storage-initializer; not
    re-checked line by line here). Refused before the gate reads a metric, nothing written."""
    target = cluster(mode=mode)
    monkeypatch.setattr(moves, "check_gate", lambda *a, **k: pytest.fail("gate ran"))
    with pytest.raises(RolloutError, match="Standard-mode canaries are not supported") as refused:
        moves.start(target, 3, percent=20, force=True, report=quiet)
    assert "--set model.version=N" in str(refused.value) and "deploymentMode=Knative" in str(refused.value)
    assert kube_api.writes() == []
    with pytest.raises(RolloutError, match="Standard-mode canaries are not supported"):
        target.update(lambda state: moves.started(state, 3, 20))  # the move itself refuses too
    assert kube_api.writes() == []


def existing_standard_canary(kube_api, repo, version):
    """A `spec.canary` made outside fundus-seg rollout (by hand, or an older fundus-seg)."""
    isvc = stored(kube_api)
    canary = {**isvc["spec"]["predictor"], "name": f"v{version}",
              "model": {**isvc["spec"]["predictor"]["model"], "name": "kserve-container"},
              "storageUris": [{"uri": f"{repo}/optic-disc/{version}", "mountPath": f"/mnt/models/{version}"}]}
    isvc["spec"]["canary"] = [{"trafficPercent": 20, "predictor": canary}]
    kube_api.put(ISVC, NS, isvc)


def test_an_existing_standard_canary_can_still_be_promoted_or_rolled_back(kube_api, cluster, repo):
    target = cluster(mode="Standard")
    existing_standard_canary(kube_api, repo, 3)
    assert target.state() == RolloutRecord(model_name="optic-disc", stable=2, canary=3, canary_percent=20)
    assert moves.promote(target) == RolloutRecord(model_name="optic-disc", stable=3)
    spec = stored(kube_api)["spec"]
    assert "canary" not in spec
    assert spec["predictor"]["storageUris"] == [{"uri": f"{repo}/optic-disc/3", "mountPath": "/mnt/models/3"}]

    existing_standard_canary(kube_api, repo, 4)
    assert moves.rollback(target, 4) == RolloutRecord(model_name="optic-disc", stable=3)
    assert "canary" not in stored(kube_api)["spec"]
    assert not target.unsettled() and target.settle(timeout=1, report=quiet)  # nothing to unpin


def test_canary_readiness_is_canary_predictor_ready(kube_api, cluster, repo):
    """With a spec.canary the condition is `CanaryPredictorReady` (KServe v0.21.0-rc0 release
    notes, "CanaryPredictorReady gating"; KServe's raw-canary e2e test waits for
    `CanaryPredictorReady` with reason `AllCanariesReady`) -- the former `CanaryReady` never
    appears, so `--wait` always timed out."""
    cluster(mode="Standard")
    existing_standard_canary(kube_api, repo, 3)
    isvc = stored(kube_api)
    isvc["status"]["observedGeneration"] = isvc["metadata"]["generation"]
    isvc["status"]["conditions"] = [{"type": "Ready", "status": "True"},
                                    {"type": "CanaryPredictorReady", "status": "False", "reason": "Pending"}]
    ready, summary = KServeTarget.readiness(isvc)
    assert not ready and "CanaryPredictorReady=False (Pending)" in summary
    isvc["status"]["conditions"][1]["status"] = "True"
    assert KServeTarget.readiness(isvc) == (True, "Ready=True, CanaryPredictorReady=True")


def test_a_canary_would_be_pruned_before_v0_20():
    """Why Standard canaries are refused on the oldest supported release: v0.16.0's CRD has no
    `spec.canary`, so its API server prunes it (the manifests' check flags exactly that)."""
    from tests.k8s.manifests import validation_errors

    isvc = deployed_isvc(Path("/repo"), 2, "Standard")
    isvc.pop("status")
    isvc["metadata"] = {"name": "optic-disc"}
    canary = {**isvc["spec"]["predictor"], "name": "v3",
              "model": {**isvc["spec"]["predictor"]["model"], "name": "kserve-container"}}  # required there
    isvc["spec"]["canary"] = [{"trafficPercent": 20, "predictor": canary}]
    problems = validation_errors(isvc)
    assert problems and all("(KServe v0.16.0)" in p for p in problems), problems
    assert any("canary" in p for p in problems)


def test_patched_objects_validate_against_every_supported_release(kube_api, cluster):
    """Every object the moves leave behind (start, its percent change, promote, rollback and its
    unpinning) validates against the CRD of v0.16.0, v0.20.0 and main: no field a supported API
    server would prune."""
    from tests.k8s.manifests import ISVC_CRDS, validation_errors

    assert list(ISVC_CRDS) == ["v0.16.0", "v0.20.0", "main"]
    target = cluster()
    seen = []

    def check(step):
        isvc = stored(kube_api)
        isvc.pop("status")
        isvc["metadata"] = {k: isvc["metadata"][k] for k in ("name", "namespace", "labels", "annotations")}
        assert validation_errors(isvc) == [], step
        seen.append(step)

    moves.start(target, 3, report=quiet)
    check("start")
    moves.start(target, 3, percent=40, report=quiet)
    check("percent")
    moves.promote(target)
    check("promote")
    moves.start(target, 4, force=True, report=quiet)
    moves.rollback(target)
    check("rollback")
    reconcile(kube_api)
    assert target.settle(timeout=5, report=quiet)
    check("unpinned")
    assert len(seen) == 5


def test_wait_ready_follows_the_watch(kube_api, cluster):
    target = cluster()
    moves.start(target, 3, report=quiet)
    isvc = stored(kube_api)
    assert isvc["metadata"]["generation"] == 2
    lines = []
    assert not target.wait_ready(timeout=1.5, report=lines.append)  # generation 2 not observed
    assert "generation 2 not observed yet" in lines[0]

    def controller():
        kube_api.set_status(ISVC, NS, "optic-disc", {**isvc["status"], "conditions": [
            {"type": "Ready", "status": "False", "reason": "RevisionMissing"}]})
        threading.Timer(0.3, kube_api.set_status, (ISVC, NS, "optic-disc", {**isvc["status"], "components": {
            "predictor": {"traffic": [{"revisionName": "optic-disc-predictor-00001", "percent": 90, "tag": "prev"},
                                      {"revisionName": "optic-disc-predictor-00002", "percent": 10,
                                       "latestRevision": True}]}}})).start()

    threading.Timer(0.3, controller).start()
    lines = []
    assert target.wait_ready(timeout=10, report=lines.append)
    assert any("RevisionMissing" in line for line in lines) and lines[-1] == "optic-disc: Ready=True"
    status = "\n".join(target.status_lines())
    assert "90% -> optic-disc-predictor-00001 (prev)" in status and "10% -> optic-disc-predictor-00002 (latest)" in status


def write_kubeconfig(kube_api, tmp_path) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": kube_api.url}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me", "namespace": NS}}]}))
    return kubeconfig


def test_cli_against_the_fake_cluster(kube_api, cluster, tmp_path, capsys):
    cluster()
    base = ["--isvc", "optic-disc", "--kubeconfig", str(write_kubeconfig(kube_api, tmp_path))]
    assert run(["rollout", "start", *base, "--version", "latest", "--force", "--percent", "15"]) == 0
    assert stored(kube_api)["spec"]["predictor"]["canaryTrafficPercent"] == 15
    assert run(["rollout", "status", *base]) == 0
    # rollback waits for the stable revision, then unpins; here it is not ready in time: exit 1
    assert run(["rollout", "rollback", *base, "--version", "4", "--timeout", "1"]) == 1
    captured = capsys.readouterr()
    assert "canary version 4 15%" in captured.out
    assert "target: InferenceService fundus/optic-disc (Knative mode)" in captured.out
    assert "run the same rollback command again" in captured.err
    assert stored(kube_api)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    reconcile(kube_api)
    assert run(["rollout", "rollback", *base, "--timeout", "5"]) == 0  # again: finishes it
    assert "canaryTrafficPercent" not in stored(kube_api)["spec"]["predictor"]
    assert all(r["path"].startswith(("/apis/serving.kserve.io/", "/api/v1/namespaces/fundus/configmaps"))
               for r in kube_api.requests)
    with pytest.raises(RolloutError, match="no canary"):
        run(["rollout", "promote", *base])
    with pytest.raises(RolloutError, match="no canary"):
        run(["rollout", "rollback", *base])


def test_cli_refuses_a_standard_canary(kube_api, cluster, tmp_path):
    from fundus_seg.errors import exit_code

    cluster(mode="Standard")
    base = ["--isvc", "optic-disc", "--kubeconfig", str(write_kubeconfig(kube_api, tmp_path))]
    with pytest.raises(RolloutError, match="Standard-mode canaries are not supported") as refused:
        run(["rollout", "start", *base, "--version", "3", "--percent", "10"])
    assert exit_code(refused.value) == 2
    assert kube_api.writes() == []
