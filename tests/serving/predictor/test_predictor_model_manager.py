"""ModelManager lifecycle rules, deterministic: a fake loader stands in for TensorFlow."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from serving.predictor.config import PredictorConfig
from serving.predictor.errors import InvalidArgument, NotFound
from serving.predictor.model_manager import ModelManager, ModelRef, State

LATEST = ModelRef("optic-disc")


def make_version(base: Path, version: int, content: bytes = b"ok") -> None:
    (base / str(version)).mkdir(parents=True, exist_ok=True)
    (base / str(version) / "saved_model.pb").write_bytes(content)


def fake_load(path: Path):
    if (path / "saved_model.pb").read_bytes() == b"broken":
        raise ValueError("not a SavedModel")
    return SimpleNamespace(path=path)


async def until(condition, timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(wait(), timeout)


def run(coroutine_function, *args) -> None:
    asyncio.run(coroutine_function(*args))


def test_replaced_version_unloads_only_after_its_in_flight_requests(tmp_path):
    async def main() -> None:
        make_version(tmp_path, 1)
        manager = ModelManager(PredictorConfig(model_name="optic-disc", model_base_path=tmp_path), load=fake_load)
        manager.read_config()
        manager.poll()
        await until(manager.is_ready)
        with manager.lease(LATEST) as held:
            make_version(tmp_path, 2)
            manager.poll()
            await until(lambda: manager.resolve(LATEST).version == 2)  # new requests go to 2 at once
            await asyncio.sleep(0.05)
            assert held.version == 1 and held.state == State.UNLOADING and held.servable is not None
            with pytest.raises(NotFound):
                manager.resolve(ModelRef("optic-disc", version=1))
        await until(lambda: held.state == State.END)
        assert held.servable is None
        await manager.close()
    run(main)


def test_broken_newest_version_falls_back_and_is_retried_once_rewritten(tmp_path):
    async def main() -> None:
        make_version(tmp_path, 1)
        make_version(tmp_path, 2, b"broken")
        manager = ModelManager(PredictorConfig(model_name="optic-disc", model_base_path=tmp_path), load=fake_load)
        manager.read_config()
        manager.poll()
        await until(lambda: manager.is_ready() and manager.status(LATEST)[0].state == State.END)
        assert manager.resolve(LATEST).version == 1
        assert "not a SavedModel" in manager.status(ModelRef("optic-disc", version=2))[0].error
        manager.poll()
        await asyncio.sleep(0.05)
        assert manager.resolve(LATEST).version == 1  # not retried while unchanged

        (tmp_path / "2" / "saved_model.pb").unlink()
        make_version(tmp_path, 2, b"fixed now")
        manager.poll()
        await until(lambda: manager.resolve(LATEST).version == 2)
        await until(lambda: manager.status(ModelRef("optic-disc", version=1))[0].state == State.END)
        await manager.close()
    run(main)


def test_label_moves_only_when_its_new_target_is_available(tmp_path):
    gate = threading.Event()

    def slow_load(path: Path):
        if path.name == "3":
            assert gate.wait(5)
        return fake_load(path)

    async def main() -> None:
        base, config_file = tmp_path / "optic-disc", tmp_path / "models.config"
        for version in (1, 2, 3):
            make_version(base, version)

        def configure(versions, labels) -> None:
            policy = " ".join(f"versions: {v}" for v in versions)
            label_text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
            config_file.write_text(f'model_config_list {{ config {{ name: "optic-disc" base_path: "{base}" '
                                   f'model_version_policy {{ specific {{ {policy} }} }} {label_text} }} }}')
            manager.read_config()
            manager.poll()

        manager = ModelManager(PredictorConfig(model_config_file=config_file), load=slow_load)
        configure([1, 2], {"stable": 1, "canary": 2})
        await until(lambda: manager.labels("optic-disc") == {"stable": 1, "canary": 2})

        configure([2, 3], {"stable": 2, "canary": 3})  # 3 is still loading
        await asyncio.sleep(0.05)
        assert manager.labels("optic-disc") == {"stable": 2, "canary": 2}
        assert manager.resolve(ModelRef("optic-disc", label="canary")).version == 2
        assert manager.resolve(ModelRef("optic-disc", version=1)).version == 1  # kept until 3 is up

        gate.set()
        await until(lambda: manager.labels("optic-disc") == {"stable": 2, "canary": 3})
        await until(lambda: manager.status(ModelRef("optic-disc", version=1))[0].state == State.END)
        with pytest.raises(InvalidArgument, match="Unrecognized servable version label: gold"):
            manager.resolve(ModelRef("optic-disc", label="gold"))

        loaded = manager.status(LATEST)
        config_file.write_text("model_config_list { }")  # model removed from the config
        manager.read_config()
        manager.poll()
        assert not manager.knows("optic-disc")
        await until(lambda: all(mv.state == State.END for mv in loaded))
        with pytest.raises(NotFound):
            manager.resolve(LATEST)
        await manager.close()
    run(main)
