"""The one Predict path shared by gRPC and REST: resolve, validate, (batch), run, filter, count.

The protocols differ only in how inputs are decoded (TensorProto vs JSON, the latter needing the
signature's dtypes) and how outputs are encoded; everything between lives here once.

Float outputs holding NaN or Infinity are refused (downstream they would become silent empty
masks): DATA_LOSS (HTTP 500), the model's fault, or INVALID_ARGUMENT when the inputs already held
NaN or Infinity.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from serving.predictor.batching import Batcher
from serving.predictor.config import BatchingConfig
from serving.predictor.errors import DataLoss, InvalidArgument, PredictorError
from serving.predictor.metrics import UNKNOWN_MODEL, PredictorMetrics
from serving.predictor.model_manager import ModelManager, ModelRef, ModelVersion
from serving.predictor.servable import Signature, all_finite

log = logging.getLogger(__name__)

Decoder = Callable[[Signature], Mapping[str, np.ndarray]]


@dataclass
class Prediction:
    model_version: int
    signature_name: str
    outputs: dict[str, np.ndarray]  # only the requested outputs, in request order


class PredictionCore:
    def __init__(self, manager: ModelManager, executor: Executor, metrics: PredictorMetrics,
                 batching: BatchingConfig | None = None) -> None:
        self._manager = manager
        self._executor = executor
        self._metrics = metrics
        self._batcher = Batcher(batching, executor) if batching else None

    async def predict(self, ref: ModelRef, signature_name: str, decode: Decoder,
                      output_filter: Iterable[str] = (), api: str = "grpc",
                      decode_in_thread: bool = False) -> Prediction:
        """Run one request; `decode_in_thread` keeps slow decoders (JSON lists) off the event loop."""
        started = time.perf_counter()
        version, status = "", "OK"
        try:
            with self._manager.lease(ref) as mv:
                version = str(mv.version)
                signature = mv.servable.signature(signature_name)
                wanted = signature.select_outputs(output_filter)
                inputs = (await asyncio.get_running_loop().run_in_executor(None, decode, signature)
                          if decode_in_thread else decode(signature))
                signature.validate(inputs)
                outputs = await self._run(mv, signature, inputs)
                selected = {key: outputs[key] for key in wanted}
                _check_finite(mv.version, inputs, selected)
                return Prediction(mv.version, signature.name, selected)
        except PredictorError as exc:
            status = exc.code.name
            raise
        except BaseException as exc:
            status = "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "INTERNAL"
            if status == "INTERNAL":
                log.exception("Predict failed for %s", ref)  # the request payload is never logged
            raise
        finally:
            model = ref.name if self._manager.knows(ref.name) else UNKNOWN_MODEL
            self._metrics.observe_request(model, version, api, status, time.perf_counter() - started)

    async def _run(self, mv: ModelVersion, signature: Signature,
                   inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = signature.batch_rows(inputs)
        batch_size = self._metrics.batch_size.labels(mv.model, str(mv.version))

        def run(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = signature.run(batch)
            if rows is not None:
                batch_size.observe(signature.batch_rows(batch))
            return outputs

        if self._batcher is not None and rows:
            key = (signature, tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(inputs.items())))
            return await self._batcher.submit(key, run, inputs, rows)
        return await asyncio.get_running_loop().run_in_executor(self._executor, run, inputs)


def _check_finite(version: int, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
    bad = [key for key, value in outputs.items() if not all_finite(value)]
    if not bad:
        return
    if not all(all_finite(value) for value in inputs.values()):
        raise InvalidArgument(f"the inputs hold NaN or Infinity, and model version {version} produced "
                              f"non-finite outputs ({', '.join(bad)})")
    raise DataLoss(f"model version {version} produced non-finite outputs ({', '.join(bad)})")
