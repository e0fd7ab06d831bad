"""ModelManager lifecycle rules, deterministic: a fake loader stands in for TensorFlow."""
from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest

from serving.predictor.config import PredictorConfig
from serving.predictor.errors import InvalidArgument, NotFound
from serving.predictor.model_manager import LOADING_SWITCH_INTERVAL_S, ModelManager, ModelRef, State
from tests.serving.predictor.helpers import fake_load, make_version, run, settled, until

LATEST = ModelRef("optic-disc")


async def serving_version_1(base: Path, load=fake_load) -> ModelManager:
    """A manager over `base` with version 1 written, loaded and AVAILABLE."""
    make_version(base, 1)
    manager = ModelManager(PredictorConfig(model_name="optic-disc", model_base_path=base), load=load)
    manager.read_config()
    manager.poll()
    await until(manager.is_ready)
    return manager


def test_replaced_version_unloads_only_after_its_in_flight_requests(tmp_path, caplog):
    unloading = "Unloading servable version {name: optic-disc version: 1} after 1 in-flight requests"

    async def main() -> None:
        manager = await serving_version_1(tmp_path)
        with manager.lease(LATEST) as held:
            make_version(tmp_path, 2)
            manager.poll()
            await until(lambda: manager.resolve(LATEST).version == 2)  # new requests go to 2 at once
            await until(lambda: unloading in caplog.text)  # the unload has started and waits for the request
            assert held.version == 1 and held.state == State.UNLOADING and held.servable is not None
            with pytest.raises(NotFound):
                manager.resolve(ModelRef("optic-disc", version=1))
        await until(lambda: held.state == State.END)
        assert held.servable is None
        await manager.close()
    with caplog.at_level(logging.INFO, logger="serving.predictor.model_manager"):
        run(main)


def test_broken_newest_version_falls_back_and_is_retried_once_rewritten(tmp_path):
    loads: list[str] = []

    def load(path: Path):
        loads.append(path.name)
        return fake_load(path)

    async def main() -> None:
        make_version(tmp_path, 1)
        make_version(tmp_path, 2, b"broken")
        manager = ModelManager(PredictorConfig(model_name="optic-disc", model_base_path=tmp_path), load=load)
        manager.read_config()
        manager.poll()
        await until(lambda: manager.is_ready() and manager.status(LATEST)[0].state == State.END)
        assert manager.resolve(LATEST).version == 1
        assert "not a SavedModel" in manager.status(ModelRef("optic-disc", version=2))[0].error
        assert loads.count("2") == 1
        manager.poll()
        await settled(manager)  # whatever that poll started has finished
        assert loads.count("2") == 1 and manager.resolve(LATEST).version == 1  # not retried while unchanged

        (tmp_path / "2" / "saved_model.pb").unlink()
        make_version(tmp_path, 2, b"fixed now")
        manager.poll()
        await until(lambda: manager.resolve(LATEST).version == 2)
        await until(lambda: manager.status(ModelRef("optic-disc", version=1))[0].state == State.END)
        await manager.close()
    run(main)


def test_label_moves_only_when_its_new_target_is_available(tmp_path):
    gate, loading_3 = threading.Event(), threading.Event()

    def slow_load(path: Path):
        if path.name == "3":
            loading_3.set()
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

        configure([2, 3], {"stable": 2, "canary": 3})
        await until(loading_3.is_set)  # 3 is loading (and held there until the gate opens)
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


def test_a_load_runs_with_short_gil_turns_and_serving_gets_the_default_back(tmp_path):
    intervals: list[float] = []

    def load(path: Path):
        intervals.append(sys.getswitchinterval())
        if path.name == "2":
            raise RuntimeError("a load that fails restores the interval too")
        return fake_load(path)

    async def main() -> None:
        manager = await serving_version_1(tmp_path, load)
        assert sys.getswitchinterval() == default
        make_version(tmp_path, 2)
        manager.poll()
        await until(lambda: manager.status(ModelRef("optic-disc", version=2))[0].state == State.END)
        assert sys.getswitchinterval() == default
        await manager.close()

    default = sys.getswitchinterval()
    run(main)
    assert intervals == [LOADING_SWITCH_INTERVAL_S] * 2 and LOADING_SWITCH_INTERVAL_S < default
