"""Version lifecycle: readiness, hot swap under load, broken versions, labels moved at runtime."""
from __future__ import annotations

import os
import threading
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.predictor.helpers import (
    NOT_SERVED,
    UNKNOWN_LABEL,
    config,
    eventually,
    expected,
    images,
    predict_request,
    rest,
    served_version,
    stubs,
)

pytestmark = pytest.mark.slow


def version_states(server) -> dict[str, str]:
    status, body = rest(server, "GET", "/v1/models/optic-disc")
    return {} if status != 200 else {v["version"]: v["state"] for v in body["model_version_status"]}


def test_ready_only_once_a_version_is_published(tmp_path, publish, start_server):
    base = tmp_path / "optic-disc"
    base.mkdir()
    server = start_server(config(model_name="optic-disc", model_base_path=base))
    status, body = rest(server, "GET", "/readyz")
    assert status == 503 and body["status"] == "not ready"
    assert rest(server, "GET", "/healthz")[0] == 200
    assert rest(server, "POST", "/v1/models/optic-disc:predict", {"instances": images(1).tolist()})[0] == 404

    publish(base, 1)
    eventually(lambda: rest(server, "GET", "/readyz")[0] == 200, timeout=10)
    assert served_version(server) == 1


def test_hot_swap_under_load_drops_nothing(tmp_path, publish, start_server):
    base = tmp_path / "optic-disc"
    publish(base, 1)
    server = start_server(config(model_name="optic-disc", model_base_path=base))
    assert server.wait_until_ready(30)
    seen: Counter = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def grpc_client() -> None:
        predict, _ = stubs(server)
        while not stop.is_set():
            try:
                response = predict.Predict(predict_request("optic-disc", images(0.5)), timeout=10)
                version = response.model_spec.version.value
                value = tf.make_ndarray(response.outputs["disc_probability"])[0, 0, 0, 0]
                if not np.isclose(value, expected(0.5, version)):
                    failures.append(f"version {version} answered {value}")
                seen[version] += 1
            except Exception as exc:  # any error is a dropped request
                failures.append(repr(exc))

    def rest_client() -> None:
        while not stop.is_set():
            status, body = rest(server, "POST", "/v1/models/optic-disc:predict",
                                {"instances": images(0.5).tolist()})
            if status != 200:
                failures.append(f"REST {status} {body}")
            elif not any(np.isclose(body["predictions"][0][0][0][0], expected(0.5, k)) for k in (1, 2)):
                failures.append(f"REST answered {body['predictions'][0][0][0]}")

    clients = [threading.Thread(target=grpc_client) for _ in range(2)] + [threading.Thread(target=rest_client)]
    for client in clients:
        client.start()
    try:
        eventually(lambda: seen[1] >= 5, timeout=10)
        publish(base, 2)  # atomic rename, as the training job publishes
        eventually(lambda: seen[2] >= 5, timeout=10)
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert not failures, failures[:5]
    eventually(lambda: version_states(server) == {"2": "AVAILABLE", "1": "END"}, timeout=10)


def test_incomplete_and_broken_versions_are_never_served(tmp_path, publish, start_server):
    base = tmp_path / "optic-disc"
    publish(base, 1)
    server = start_server(config(model_name="optic-disc", model_base_path=base))
    assert server.wait_until_ready(30)

    (base / "5" / "variables").mkdir(parents=True)  # half-written: no saved_model.pb
    publish(base, 4, corrupt=True)  # complete-looking but unreadable
    (base / ".tmp-6").mkdir()
    (base / "latest").mkdir()
    eventually(lambda: version_states(server).get("4") == "END", timeout=10)

    _, body = rest(server, "GET", "/v1/models/optic-disc/versions/4")
    [failed] = body["model_version_status"]
    assert failed["status"]["error_code"] != "OK" and failed["status"]["error_message"]
    assert set(version_states(server)) == {"1", "4"}  # 5, .tmp-6 and latest are not versions
    assert served_version(server) == 1 and server.ready

    publish(base, 2)  # the newest usable version wins; 4 stays out until its saved_model.pb changes
    eventually(lambda: served_version(server) == 2, timeout=10)
    assert served_version(server, version=4) == NOT_SERVED

    os.rename(base / "4", base / "old-4")
    publish(base, 4, k=4)  # republished correctly: now loads
    eventually(lambda: served_version(server) == 4, timeout=10)


def write_config(path, base, versions, labels) -> None:
    """Rewrite the model config atomically, as a rollout tool would."""
    policy = " ".join(f"versions: {v}" for v in versions)
    label_text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    staging = path.with_suffix(".tmp")
    staging.write_text(f"""
        model_config_list {{
          config {{
            name: "optic-disc" base_path: "{base}" model_platform: "tensorflow"
            model_version_policy {{ specific {{ {policy} }} }}
            {label_text}
          }}
        }}""")
    os.replace(staging, path)


def test_labels_from_model_config_move_at_runtime(tmp_path, publish, start_server, caplog):
    base = tmp_path / "optic-disc"
    for version in (1, 2, 3):
        publish(base, version)
    models_config = tmp_path / "models.config"
    write_config(models_config, base, [1, 2], {"stable": 1, "canary": 2})
    server = start_server(config(model_config_file=models_config))
    eventually(lambda: served_version(server, label="stable") == 1 and served_version(server, label="canary") == 2)

    assert served_version(server) == 2  # no version asked: the highest served
    assert served_version(server, version=3) == NOT_SERVED  # on disk but not in the policy
    status, body = rest(server, "POST", "/v1/models/optic-disc/labels/stable:predict",
                        {"instances": images(0.5).tolist()})
    assert status == 200 and np.isclose(body["predictions"][0][0][0][0], expected(0.5, 1))
    assert rest(server, "POST", "/v1/models/optic-disc/labels/gold:predict", {"instances": [[0]]})[0] == 400

    write_config(models_config, base, [2, 3], {"stable": 2, "canary": 3})
    eventually(lambda: served_version(server, label="stable") == 2 and served_version(server, label="canary") == 3)
    eventually(lambda: version_states(server).get("1") == "END", timeout=10)

    with caplog.at_level("ERROR", logger="serving.predictor.model_manager"):
        models_config.write_text("model_config_list { this is not a config")  # a broken edit is ignored
        eventually(lambda: "Keeping the previous model config" in caplog.text)  # it was read, and refused
    assert served_version(server, label="stable") == 2 and served_version(server, label="canary") == 3
    assert server.ready


def test_grpc_health_and_busy_port(tmp_path, publish, start_server):
    import grpc
    from google.protobuf import wrappers_pb2

    from serving.predictor.config import ConfigError

    base = tmp_path / "optic-disc"
    server = start_server(config(model_name="optic-disc", model_base_path=base))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    check = channel.unary_unary("/grpc.health.v1.Health/Check",  # HealthCheckRequest/Response wire format
                                request_serializer=wrappers_pb2.StringValue.SerializeToString,
                                response_deserializer=wrappers_pb2.Int32Value.FromString)
    assert check(wrappers_pb2.StringValue(), timeout=10).value == 2  # NOT_SERVING: nothing loaded yet
    publish(base, 1)
    eventually(lambda: check(wrappers_pb2.StringValue(), timeout=10).value == 1)  # SERVING

    with pytest.raises(ConfigError, match="REST port"):
        start_server(config(model_name="optic-disc", model_base_path=base, rest_api_port=server.rest_port))
    assert check(wrappers_pb2.StringValue(value="tensorflow.serving.PredictionService"), timeout=10).value == 1


def test_config_file_written_after_start_takes_over_from_the_base_path(tmp_path, publish, start_server):
    """`fundus-seg serve` starts with both flags; a later local rollout writes models.config."""
    base = tmp_path / "optic-disc"
    for version in (1, 2):
        publish(base, version)
    models_config = tmp_path / "models.config"
    server = start_server(config(model_name="optic-disc", model_base_path=base, model_config_file=models_config))
    eventually(lambda: served_version(server) == 2)  # no config yet: latest from the base path
    assert served_version(server, label="stable") == UNKNOWN_LABEL

    write_config(models_config, base, [1, 2], {"stable": 1, "canary": 2})
    eventually(lambda: served_version(server, label="stable") == 1 and served_version(server, label="canary") == 2)
