"""`--accelerator`: strategy selection, clear errors where the hardware is missing, and the
multi-replica path (MirroredStrategy) exercised on two logical CPUs in a child process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from training_job import strategy
from training_job.strategy import AcceleratorError

NO_GPU = not tf.config.list_physical_devices("GPU")


def test_cpu_is_the_default_strategy_with_the_batch_as_given():
    chosen = strategy.choose("cpu")
    assert chosen.kind == "cpu" and chosen.replicas == 1
    assert chosen.strategy is tf.distribute.get_strategy()
    assert chosen.global_batch(16) == 16
    assert chosen.describe() == {"kind": "cpu", "replicas": 1, "devices": ["CPU:0"], "strategy": "_DefaultDistributionStrategy"}


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_auto_is_cpu_without_a_gpu_and_gpu_asks_for_one():
    assert strategy.choose("auto").kind == "cpu"
    with pytest.raises(AcceleratorError, match=r"--accelerator gpu: TensorFlow sees no GPU .*nvidia.com/gpu"):
        strategy.choose("gpu")


def test_tpu_without_a_tpu_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(AcceleratorError, match=r"--accelerator tpu: no TPU reachable as 'local' .*set TPU_NAME") as caught:
        strategy.choose("tpu")
    assert "\n" not in str(caught.value)


def test_unknown_accelerator():
    with pytest.raises(AcceleratorError, match="unknown accelerator 'fpga'"):
        strategy.choose("fpga")


MIRRORED_RUN = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from training_job.config import JobOptions, RunConfig, TrainConfig
    from fundus_seg.model_repository import load_version
    from training_job.job import run_training
    from training_job.strategy import Accelerator
    from training_job.unet import UNetConfig
    import numpy as np

    data, repo = sys.argv[1:3]
    mirrored = Accelerator("cpu", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), ("CPU:0", "CPU:1"))
    run = RunConfig(data=(data,), model_repo=repo, model=UNetConfig(depth=1, width=4),
                    train=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, jit_compile=False))
    version, metrics = run_training(run, JobOptions(run_id="mirrored-1"), accelerator=mirrored)
    probability = load_version(f"{repo}/optic-disc/{version}").predict(np.zeros((1, 128, 128, 3), np.float32))
    print(json.dumps({"version": version, "global_batch": metrics["global_batch"],
                      "accelerator": metrics["accelerator"], "shape": list(probability.shape)}))
""")


@pytest.mark.slow
def test_mirrored_strategy_over_two_replicas_trains_checkpoints_and_exports(tiny_datasets, tmp_path):
    """What a multi-GPU pod does, on two logical CPUs: the global batch doubles, the SavedModel serves."""
    done = subprocess.run([sys.executable, "-c", MIRRORED_RUN, str(tiny_datasets["drishti-gs1"]), str(tmp_path / "models")],
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == 1 and result["global_batch"] == 4  # --batch-size 2 per replica x 2 replicas
    assert result["accelerator"] == {"kind": "cpu", "replicas": 2, "devices": ["CPU:0", "CPU:1"],
                                     "strategy": "MirroredStrategy"}
    assert result["shape"] == [1, 128, 128, 1]
