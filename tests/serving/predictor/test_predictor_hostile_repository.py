"""A hostile model repository: odd version names, half-copied versions, SavedModels that cannot
serve or answer NaN. None of them may take the service down or replace a version that serves."""
from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from serving.predictor.config import PredictorConfig, SignatureContract, TensorContract
from serving.predictor.model_manager import ModelManager, ModelRef, State
from tests.serving.predictor.helpers import (
    SIZE,
    bundled_version,
    config,
    eventually,
    fake_load,
    images,
    make_version,
    predict_request,
    rest,
    run,
    served_version,
    settled,
    stubs,
    until,
)

LATEST = ModelRef("optic-disc")
PROJECT_CONTRACT = SignatureContract("serving_default",
                                     inputs=(TensorContract("images", "uint8|float32", (-1, 128, 128, 3)),),
                                     outputs=(TensorContract("disc_probability", "float32", (-1, 128, 128, 1)),))


def manager_for(base: Path, load=fake_load) -> ModelManager:
    manager = ModelManager(PredictorConfig(model_name="optic-disc", model_base_path=base), load=load)
    manager.read_config()
    return manager


def load_needing_variables(path: Path):
    """Like a real SavedModel: unusable until variables/ has arrived."""
    if not (path / "variables" / "variables.index").exists():
        raise ValueError("variables/variables.index not found")
    return fake_load(path)


# -- fast: the manager with a fake loader -----------------------------------------------------

def test_version_names_beyond_int64_are_ignored_once_and_status_still_renders(tmp_path, caplog):
    from serving.predictor.grpc_service import status_response

    async def main() -> None:
        make_version(tmp_path, 1)
        for name in ("9" * 20, "18446744073709551616", "0001"):  # beyond int64 (twice); a second spelling of 1
            (tmp_path / name).mkdir()
            (tmp_path / name / "saved_model.pb").write_bytes(b"ok")
        manager = manager_for(tmp_path)
        with caplog.at_level(logging.WARNING, logger="serving.predictor.model_manager"):
            for _ in range(3):
                manager.poll()
                await until(manager.is_ready)
        ignored = [r.getMessage() for r in caplog.records if "Ignoring" in r.getMessage()]
        assert len(ignored) == 3, ignored  # once each, not once per poll
        assert sum("int64" in message for message in ignored) == 2
        assert any("0001: another name for the same version" in message for message in ignored)
        response = status_response(manager.status(LATEST))
        assert [(s.version, s.state) for s in response.model_version_status] == [(1, State.AVAILABLE)]
        assert manager.resolve(LATEST).path == tmp_path / "1"
        await manager.close()
    run(main)


def test_a_failed_version_is_retried_when_any_of_its_files_change(tmp_path):
    """`cp -r` lands saved_model.pb before variables/: the first load fails, the finished copy loads."""
    loads: list[str] = []

    def load(path: Path):
        loads.append(path.name)
        return load_needing_variables(path)

    async def main() -> None:
        for version in (1, 2):
            make_version(tmp_path, version)
        (tmp_path / "1" / "variables").mkdir()
        (tmp_path / "1" / "variables" / "variables.index").write_bytes(b"1")
        manager = manager_for(tmp_path, load)
        manager.poll()
        await until(lambda: manager.is_ready() and manager.status(LATEST)[0].state == State.END)
        assert "variables.index not found" in manager.status(ModelRef("optic-disc", version=2))[0].error
        assert manager.resolve(LATEST).version == 1

        manager.poll()
        await settled(manager)  # whatever that poll started has finished
        assert loads.count("2") == 1  # unchanged: not retried

        (tmp_path / "2" / "variables").mkdir()  # the copy goes on
        (tmp_path / "2" / "variables" / "variables.index").write_bytes(b"2")
        manager.poll()
        await until(lambda: manager.resolve(LATEST).version == 2)
        assert loads.count("2") == 2
        await manager.close()
    run(main)


def test_a_version_whose_files_change_while_loading_is_not_served(tmp_path, caplog):
    started, finish = threading.Event(), threading.Event()
    loads: list[str] = []

    def slow_load(path: Path):
        loads.append(path.name)
        if path.name == "2" and not finish.is_set():
            started.set()
            assert finish.wait(5)
        return fake_load(path)

    async def main() -> None:
        make_version(tmp_path, 1)
        manager = manager_for(tmp_path, slow_load)
        manager.poll()
        await until(manager.is_ready)
        make_version(tmp_path, 2)
        manager.poll()
        await until(started.is_set)
        (tmp_path / "2" / "assets").mkdir()  # still being written while it loads
        assert manager.resolve(LATEST).version == 1
        finish.set()
        # Refused, and loaded again at once: its files now differ from what the first load saw.
        await until(lambda: manager.resolve(LATEST).version == 2)
        assert loads.count("2") == 2
        assert any("changed while it was loading" in r.getMessage() for r in caplog.records)
        await manager.close()
    run(main)


def test_problems_report_a_dead_poll_task_and_a_closed_loader(tmp_path):
    async def main() -> None:
        make_version(tmp_path, 1)
        manager = manager_for(tmp_path)
        poller = asyncio.get_running_loop().create_task(manager.run())
        await until(manager.is_ready)
        assert manager.problems() == []
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        assert manager.problems() == ["the model repository is no longer polled"]
        await manager.close()
        assert "the model loader is shut down" in manager.problems()
    run(main)


# -- slow: real SavedModels -------------------------------------------------------------------

def build(path: Path, output=None, size: int = SIZE, signature: str = "serving_default") -> Path:
    """A variable-free SavedModel whose one signature maps `images` to `output(images)`."""
    import tensorflow as tf

    output = output or (lambda x: {"disc_probability": tf.sigmoid(tf.reduce_mean(x, -1, keepdims=True))})

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def serve(self, images):
            return output(images)

    model = Model()
    tf.saved_model.save(model, str(path), signatures={signature: model.serve})
    return path


def version_status(server) -> dict[int, tuple[str, str]]:
    from tensorflow_serving.apis import get_model_status_pb2

    _, models = stubs(server)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "optic-disc"
    response = models.GetModelStatus(request, timeout=10)
    return {s.version: (get_model_status_pb2.ModelVersionStatus.State.Name(s.state), s.status.error_message)
            for s in response.model_version_status}


@pytest.mark.slow
def test_a_half_copied_version_is_loaded_once_the_copy_completes(tmp_path, publish, model_templates, start_server):
    base = tmp_path / "optic-disc"
    publish(base, 1)
    server = start_server(config(model_name="optic-disc", model_base_path=base))
    assert server.wait_until_ready(30)

    template = model_templates(2)
    (base / "2").mkdir()
    shutil.copy(template / "saved_model.pb", base / "2")  # `cp -r`: saved_model.pb first ...
    eventually(lambda: version_status(server).get(2, ("",))[0] == "END")
    assert version_status(server)[2][1] and served_version(server) == 1 and server.ready

    shutil.copytree(template, base / "2", dirs_exist_ok=True)  # ... then the rest
    eventually(lambda: served_version(server) == 2, timeout=15)
    assert version_status(server)[2] == ("AVAILABLE", "")


@pytest.mark.slow
def test_versions_that_cannot_serve_never_replace_one_that_can(tmp_path, publish, start_server):
    import tensorflow as tf

    base = tmp_path / "optic-disc"
    publish(base, 1)
    build(base / "2", signature="other")
    build(base / "3", output=lambda x: {"mask": tf.reduce_mean(x, -1, keepdims=True)})
    build(base / "4", size=2 * SIZE)
    build(base / "5", output=lambda x: {"disc_probability": x[..., :1] / tf.reduce_sum(x)})  # 0/0 on zeros
    contract = SignatureContract(inputs=(TensorContract("images", "float32", (-1, SIZE, SIZE, 3)),),
                                 outputs=(TensorContract("disc_probability", "float32"),))
    server = start_server(config(model_name="optic-disc", model_base_path=base, required_signature=contract))

    eventually(lambda: all(version_status(server).get(v, ("",))[0] == "END" for v in (2, 3, 4, 5)), timeout=30)
    eventually(lambda: server.ready)
    status = version_status(server)
    assert status[1] == ("AVAILABLE", "")
    assert 'required signature "serving_default" is missing (signatures: other)' in status[2][1]
    assert "output 'disc_probability' is missing" in status[3][1]
    assert "input 'images' is float32 [-1, 16, 16, 3], not [-1, 8, 8, 3]" in status[4][1]
    assert "produced non-finite outputs: disc_probability" in status[5][1]
    assert served_version(server) == 1
    assert rest(server, "GET", "/v1/models/optic-disc")[0] == 200


@pytest.mark.slow
def test_non_finite_outputs_are_data_loss_not_silent(tmp_path, start_server):
    import tensorflow as tf

    base = tmp_path / "optic-disc"
    build(base / "1", output=lambda x: {"disc_probability": tf.sqrt(1 - tf.reduce_mean(x, -1, keepdims=True))})
    server = start_server(config(model_name="optic-disc", model_base_path=base))
    assert server.wait_until_ready(30)  # finite on the zero warm-up input
    predict, _ = stubs(server)

    with pytest.raises(grpc.RpcError) as caught:
        predict.Predict(predict_request("optic-disc", images(2.0)), timeout=10)  # sqrt(-1)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert caught.value.details() == "model version 1 produced non-finite outputs (disc_probability)"
    status, body = rest(server, "POST", "/v1/models/optic-disc:predict", {"instances": images(2.0).tolist()})
    assert (status, body) == (500, {"error": "model version 1 produced non-finite outputs (disc_probability)"})

    with pytest.raises(grpc.RpcError) as caught:
        predict.Predict(predict_request("optic-disc", images(np.nan)), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "inputs hold NaN" in caught.value.details()
    assert predict.Predict(predict_request("optic-disc", images(0.5)), timeout=10).outputs
    assert server.ready


@pytest.mark.slow
def test_the_bundled_model_meets_the_project_contract():
    from serving.predictor.servable import Servable

    version = bundled_version()
    if version is None:
        pytest.skip("no bundled model version published")
    servable = Servable.load(version, contract=PROJECT_CONTRACT)
    assert set(servable.signature("").outputs) == {"disc_probability"}


def test_contract_mismatches_are_named(tmp_path):
    from tensorflow.core.framework import types_pb2

    from serving.predictor.servable import CannotServe, Servable, TensorSpec

    def spec(key, shape, dtype=types_pb2.DT_FLOAT):
        return TensorSpec(key, dtype, shape)

    signature = SimpleNamespace(inputs={"images": spec("images", (-1, 128, 128, 3))},
                                outputs={"disc_probability": spec("disc_probability", (-1, -1, -1, 1))})
    servable = Servable.__new__(Servable)
    servable.signatures = {"serving_default": signature}
    servable.check(PROJECT_CONTRACT)  # an output less specific than the contract is fine
    signature.inputs = {"images": spec("images", (-1, 128, 128, 3), types_pb2.DT_UINT8)}
    servable.check(PROJECT_CONTRACT)  # either of the dtypes the contract names

    signature.inputs = {"images": spec("images", (1, 128, 128, 3), types_pb2.DT_DOUBLE)}
    with pytest.raises(CannotServe, match="'images' is float64 \\[1, 128, 128, 3\\], not uint8 or float32"):
        servable.check(PROJECT_CONTRACT)
    signature.inputs = {"images": spec("images", (1, 128, 128, 3))}  # batch of exactly 1: too narrow
    with pytest.raises(CannotServe, match="not \\[-1, 128, 128, 3\\]"):
        servable.check(PROJECT_CONTRACT)
    signature.inputs = {"images": spec("images", None), "mask": spec("mask", None)}
    with pytest.raises(CannotServe, match="inputs are \\{images,mask\\}, not \\{images\\}"):
        servable.check(PROJECT_CONTRACT)
