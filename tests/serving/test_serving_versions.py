"""Model versions while serving: readiness before and after a model exists, a hot swap under load,
and the one-machine canary split (models.config labels + rollout.json)."""
from __future__ import annotations

import json
import threading

import pytest

from serving.client import GrpcClient, RestClient
from tests.serving.helpers import eventually, http, logs_of

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("predictor_api", ["grpc", "rest"])
def test_ready_only_with_a_model_then_hot_swap_without_failures(tmp_path, start_stack, publish_version,
                                                                image_bytes, predictor_api):
    repo = tmp_path / "repo"
    stack = start_stack(repo, predictor_api=predictor_api)
    url, model = stack.config.url, "/v1/models/optic-disc"

    # No version yet: alive, not ready, and predictions are a clear 503.
    assert http(f"{url}/")[0] == 200
    assert http(f"{url}{model}")[0] == 503
    assert http(f"{url}/v2/health/ready")[0] == 503
    grpc_client = GrpcClient(stack.config.grpc_target)
    assert grpc_client.ready() is False
    pb = grpc_client.pb
    assert grpc_client._stub.ServerReady(pb.ServerReadyRequest()).ready is False
    status, body = http(f"{url}{model}:predict", {"instances": [{"b64": "AA=="}]})
    assert status == 503 and "not ready" in body["error"]

    publish_version(repo, 1)
    eventually(stack.ready, timeout=60)
    assert http(f"{url}/v2/health/ready") == (200, {"ready": True}) and grpc_client.ready()

    # Requests flow over both protocols while version 2 is published.
    rest_client = RestClient(url)
    seen: dict[str, list[int]] = {"rest": [], "grpc": []}
    failures: list[str] = []
    stop = threading.Event()

    def load(name, client) -> None:
        while not stop.is_set():
            try:
                seen[name].append(client.segment([image_bytes])[0].model_version)
            except Exception as exc:  # every failure counts
                failures.append(f"{name}: {exc}")

    threads = [threading.Thread(target=load, args=item) for item in (("rest", rest_client), ("grpc", grpc_client))]
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: all(len(v) >= 3 for v in seen.values()), timeout=60)
        publish_version(repo, 2)
        eventually(lambda: all(v[-3:] == [2, 2, 2] for v in seen.values()), timeout=90)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    for versions in seen.values():
        assert versions[0] == 1 and versions[-1] == 2
        first_two = versions.index(2)
        assert set(versions[first_two:]) == {2}, versions  # once 2 answers, 1 never does again
    text = http(f"{url}/metrics")[1]
    gauge = 'fundus_transformer_model_version{model="optic-disc"} 2.0'  # refreshed by readiness checks
    eventually(lambda: http(f"{url}{model}")[0] == 200 and gauge in http(f"{url}/metrics")[1], timeout=10)
    assert 'fundus_transformer_images_total{model="optic-disc",version="2"}' in text
    grpc_client.close()
    rest_client.close()


MODELS_CONFIG = """model_config_list {{
  config {{
    name: "optic-disc"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}
"""


@pytest.mark.parametrize("predictor_api", ["grpc", "rest"])
def test_canary_split_from_rollout_json(tmp_path, start_stack, publish_version, image_bytes, predictor_api):
    repo = tmp_path / "repo"
    publish_version(repo, 1)
    publish_version(repo, 2)
    (repo / "models.config").write_text(MODELS_CONFIG.format(base=repo / "optic-disc"))
    rollout = repo / "rollout.json"
    rollout.write_text(json.dumps({"model_name": "optic-disc", "stable": 1, "canary": 2, "canary_percent": 50}))
    stack = start_stack(repo, predictor_api=predictor_api)
    assert stack.wait_ready(60), logs_of(stack)[-2000:]
    eventually(lambda: "AVAILABLE" in json.dumps(
        http(f"http://127.0.0.1:{stack.config.predictor_rest_port}/v1/models/optic-disc/versions/2")[1]), timeout=60)
    client = RestClient(stack.config.url)
    versions = [client.segment([image_bytes])[0].model_version for _ in range(40)]
    assert set(versions) == {1, 2}, versions  # 50 %: both answer (all one way: p = 2^-39)

    splits_read = logs_of(stack).count("traffic split from")
    assert splits_read >= 1
    rollout.write_text(json.dumps({"model_name": "optic-disc", "stable": 1, "canary": None, "canary_percent": 0}))

    def new_split_read() -> bool:  # the transformer looks at the file at most every 0.5 s, on a request
        client.segment([image_bytes])
        return logs_of(stack).count("traffic split from") > splits_read
    eventually(new_split_read, timeout=30)
    assert {client.segment([image_bytes])[0].model_version for _ in range(10)} == {1}
    assert {r.model_version for r in client.segment([image_bytes], version=2)} == {2}  # explicit version wins
    client.close()
    assert "Traceback" not in logs_of(stack)
