"""`--accelerator cpu|gpu|tpu|auto` as a tf.distribute strategy and the global batch it implies.

`--batch-size` is per replica: with N GPUs (or TPU cores) every step sees N times as many images,
so an epoch of `--steps-per-epoch` steps covers N times the data while a step takes about as
long. The learning rate is not scaled.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import tensorflow as tf

from fundus_seg.errors import FundusSegError

log = logging.getLogger(__name__)


class AcceleratorError(FundusSegError):
    """The requested accelerator is not there (no GPU visible, no TPU reachable)."""


@dataclass(frozen=True)
class Accelerator:
    kind: str  # "cpu" | "gpu" | "tpu"
    strategy: tf.distribute.Strategy
    devices: tuple[str, ...]

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def global_batch(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def describe(self) -> dict:
        return {"kind": self.kind, "replicas": self.replicas, "devices": list(self.devices),
                "strategy": type(self.strategy).__name__}


def visible_gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def cpu() -> Accelerator:
    """The default strategy on the CPU; GPUs are hidden so that `cpu` means what it says."""
    if visible_gpus():
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as exc:  # TensorFlow already placed something on a GPU
            log.warning("--accelerator cpu: could not hide the GPUs (%s)", exc)
    return Accelerator("cpu", tf.distribute.get_strategy(), ("CPU:0",))


def gpu() -> Accelerator:
    """MirroredStrategy over every visible GPU (one replica each, gradients all-reduced)."""
    gpus = visible_gpus()
    if not gpus:
        raise AcceleratorError(
            "--accelerator gpu: TensorFlow sees no GPU (is this the CUDA image, does the pod request "
            f"nvidia.com/gpu, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}?)")
    names = tuple(g.name.replace("/physical_device:", "") for g in gpus)
    return Accelerator("gpu", tf.distribute.MirroredStrategy([f"/{n}" for n in names]), names)


def tpu(name: str | None = None) -> Accelerator:
    """TPUStrategy on the TPU named by `TPU_NAME` (default "local": the TPU VM / GKE TPU node itself)."""
    name = name or os.environ.get("TPU_NAME") or "local"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        if name != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AcceleratorError(f"--accelerator tpu: no TPU reachable as {name!r} ({first_line}); "
                               "set TPU_NAME, or use the TPU image on a TPU node") from None
    devices = tuple(d.name for d in tf.config.list_logical_devices("TPU"))
    return Accelerator("tpu", strategy, devices)


def choose(accelerator: str = "auto") -> Accelerator:
    """The strategy for `accelerator`; AcceleratorError (one clear line) when it is not available."""
    if accelerator == "auto":
        accelerator = "gpu" if visible_gpus() else "cpu"
    factories = {"cpu": cpu, "gpu": gpu, "tpu": tpu}
    if accelerator not in factories:
        raise AcceleratorError(f"unknown accelerator {accelerator!r}; choose from auto, {', '.join(factories)}")
    chosen = factories[accelerator]()
    log.info("accelerator %s: %s with %d replica(s) on %s", chosen.kind, type(chosen.strategy).__name__,
             chosen.replicas, ", ".join(chosen.devices))
    return chosen
