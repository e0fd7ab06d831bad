"""One loaded model version: its SignatureDefs exactly as stored, and the functions that run them.

The signatures are read from the SavedModel itself (the `serve` MetaGraphDef in saved_model.pb),
which is also what TF Serving reports as metadata; nothing here knows how the model was built.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fundus_seg.model_repository import SERVING_SIGNATURE as DEFAULT_SIGNATURE  # TF Serving's default too
from fundus_seg.units import MiB
from serving.predictor.config import SignatureContract, TensorContract
from serving.predictor.errors import FailedPrecondition, InvalidArgument, PredictorError
from serving.predictor.tensors import dtype_name, numpy_dtype

log = logging.getLogger(__name__)

SERVING_TAG = "serve"


class CannotServe(ValueError):
    """A loadable version that would fail requests (contract not met, warm-up failed): never AVAILABLE."""


def all_finite(array: np.ndarray) -> bool:
    """False when a float array holds NaN or Infinity (other dtypes always pass); one vectorised pass."""
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of a signature: dtype enum and shape (-1 = any size, None = any rank)."""

    key: str
    dtype: int
    shape: tuple[int, ...] | None

    @classmethod
    def from_tensor_info(cls, key: str, info) -> TensorSpec:
        shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        return cls(key, info.dtype, shape)

    @property
    def numpy_dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype)

    def check(self, array: np.ndarray) -> None:
        expected = self.numpy_dtype
        if array.dtype != expected and not (expected.kind == "O" and array.dtype.kind in "SUO"):
            raise InvalidArgument(
                f"Expects arg[{self.key}] to be {dtype_name(self.dtype)} but {array.dtype.name} is provided")
        if self.shape is not None and (len(array.shape) != len(self.shape) or any(
                want not in (-1, got) for want, got in zip(self.shape, array.shape, strict=True))):
            raise InvalidArgument(
                f"input '{self.key}' has shape {list(array.shape)} but the signature expects "
                f"{list(self.shape)} (-1 = any size)")

    def dummy(self, max_bytes: int) -> np.ndarray | None:
        """A one-example zero input for warm-up, or None when the shape is unknown.

        Larger than `max_bytes` (the request limit) no request could carry it: CannotServe.
        """
        if self.shape is None:
            return None
        shape = tuple(1 if size < 0 else size for size in self.shape)
        if int(np.prod(shape, dtype=object)) * self.numpy_dtype.itemsize > max_bytes:
            raise CannotServe(f"one example of input '{self.key}' {list(self.shape)} is larger than the "
                              f"request limit of {max_bytes} bytes")
        return np.zeros(shape, dtype=self.numpy_dtype) if self.numpy_dtype.kind != "O" \
            else np.full(shape, b"", dtype=object)

    def problem(self, want: TensorContract, is_input: bool) -> str | None:
        """How this tensor falls short of `want`, or None. An input must accept every shape the
        contract allows (its -1 stays -1); an output may be less specific than the contract."""
        import tensorflow as tf

        have = f"{tf.as_dtype(self.dtype).name} {list(self.shape) if self.shape is not None else 'of any rank'}"
        if want.dtypes and self.dtype not in {tf.as_dtype(name).as_datatype_enum for name in want.dtypes}:
            return f"'{self.key}' is {have}, not {' or '.join(want.dtypes)}"
        if want.shape is None or self.shape is None:
            return None
        fits = _dim_fits_input if is_input else _dim_fits_output
        if len(self.shape) == len(want.shape) and all(map(fits, self.shape, want.shape)):
            return None
        return f"'{self.key}' is {have}, not {list(want.shape)} (-1 = any size)"


def _dim_fits_input(got: int, wanted: int) -> bool:
    return got == -1 or got == wanted


def _dim_fits_output(got: int, wanted: int) -> bool:
    return got == -1 or wanted == -1 or got == wanted


class Signature:
    """A callable SignatureDef that validates its inputs the way TF Serving reports errors."""

    def __init__(self, name: str, signature_def, function) -> None:
        self.name = name
        self.method_name = signature_def.method_name
        self.inputs = {k: TensorSpec.from_tensor_info(k, v) for k, v in signature_def.inputs.items()}
        self.outputs = {k: TensorSpec.from_tensor_info(k, v) for k, v in signature_def.outputs.items()}
        self._function = function
        # Merging requests along axis 0 is only sound when every tensor has a free batch dimension.
        self.batchable = bool(self.inputs) and all(
            spec.shape and spec.shape[0] == -1
            for spec in (*self.inputs.values(), *self.outputs.values()))

    def validate(self, inputs: Mapping[str, np.ndarray]) -> None:
        if inputs.keys() != self.inputs.keys():
            sent, wanted = set(inputs), set(self.inputs)
            raise InvalidArgument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
        for key, array in inputs.items():
            self.inputs[key].check(array)

    def select_outputs(self, output_filter: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(output_filter)) or list(self.outputs)
        for key in wanted:
            if key not in self.outputs:
                raise InvalidArgument(
                    f"output tensor alias not found in signature: {key} Outputs expected to be in the "
                    f"set {{{','.join(sorted(self.outputs))}}}.")
        return wanted

    def batch_rows(self, inputs: Mapping[str, np.ndarray]) -> int | None:
        """Rows the request contributes to a merged batch, or None when it cannot be merged."""
        if not self.batchable:
            return None
        rows = {array.shape[0] for array in inputs.values()}
        return rows.pop() if len(rows) == 1 else None

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the model (blocking; run it in a worker thread)."""
        import tensorflow as tf

        try:
            outputs = self._function(**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.OpError as exc:
            raise PredictorError.from_tensorflow(exc) from exc
        return {key: np.asarray(value.numpy()) for key, value in outputs.items()}  # scalars too


class Servable:
    """A SavedModel version ready to predict: loaded, signatures indexed, warmed up."""

    def __init__(self, path: Path, signature_defs, loaded) -> None:
        self.path = path
        self.signature_defs = signature_defs  # proto map name -> SignatureDef, reported as metadata
        self._loaded = loaded  # keeps variables alive for the signature functions
        self.signatures = {name: Signature(name, signature_defs[name], function)
                           for name, function in loaded.signatures.items() if name in signature_defs}

    @classmethod
    def load(cls, path: str | Path, warm_up: bool = True, contract: SignatureContract | None = None,
             max_input_bytes: int = 64 * MiB) -> Servable:
        """Load, check against `contract` and warm up one version directory; raises on anything
        broken or unservable (the caller marks the version failed)."""
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        path = Path(path)
        saved_model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
        meta_graph = next((mg for mg in saved_model.meta_graphs
                           if SERVING_TAG in mg.meta_info_def.tags), None)
        if meta_graph is None:
            raise ValueError(f"{path} has no MetaGraphDef tagged '{SERVING_TAG}'")
        servable = cls(path, meta_graph.signature_def, tf.saved_model.load(str(path), tags=[SERVING_TAG]))
        if contract is not None:
            servable.check(contract)
        if warm_up:
            servable.warm_up(contract.name if contract is not None else DEFAULT_SIGNATURE, max_input_bytes)
            servable.replay_warmup_requests(max_input_bytes)
        return servable

    def check(self, contract: SignatureContract) -> None:
        """Raise CannotServe unless the signature `contract` describes is here and callable as described."""
        signature = self.signatures.get(contract.name)
        if signature is None:
            raise CannotServe(f'the required signature "{contract.name}" is missing '
                              f"(signatures: {', '.join(sorted(self.signatures)) or 'none'})")
        wrong = []
        if contract.inputs and signature.inputs.keys() != {t.key for t in contract.inputs}:
            wrong.append(f"inputs are {{{','.join(sorted(signature.inputs))}}}, not "
                         f"{{{','.join(sorted(t.key for t in contract.inputs))}}}")
        for tensors, wants, is_input in ((signature.inputs, contract.inputs, True),
                                         (signature.outputs, contract.outputs, False)):
            for want in wants:
                if want.key not in tensors:
                    wrong.append(f"{'input' if is_input else 'output'} '{want.key}' is missing")
                elif (problem := tensors[want.key].problem(want, is_input)) is not None:
                    wrong.append(f"{'input' if is_input else 'output'} {problem}")
        if wrong:
            raise CannotServe(f'signature "{contract.name}" does not match the required one: {"; ".join(wrong)}')

    def signature(self, name: str) -> Signature:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise FailedPrecondition(f'Serving signature key "{name}" not found.')
        return self.signatures[name]

    def signature_def_map(self):
        from tensorflow_serving.apis import get_model_metadata_pb2

        result = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in self.signature_defs.items():
            result.signature_def[name].CopyFrom(signature_def)
        return result

    def warm_up(self, name: str = DEFAULT_SIGNATURE, max_input_bytes: int = 64 * MiB) -> None:
        """One zero-input predict, so the first real request does not pay for tracing/allocation and
        a version that fails it, or answers NaN/Infinity, is never served (skipped when a shape is unknown)."""
        signature = self.signatures.get(name)
        if signature is None:
            return
        dummies = {key: spec.dummy(max_input_bytes) for key, spec in signature.inputs.items()}
        if any(value is None for value in dummies.values()):
            return
        try:
            outputs = signature.run(dummies)
        except PredictorError as exc:
            raise CannotServe(f'warm-up predict on signature "{name}" failed: {exc}') from exc
        bad = sorted(key for key, value in outputs.items() if not all_finite(value))
        if bad:
            raise CannotServe(f'warm-up predict on signature "{name}" produced non-finite outputs: {", ".join(bad)}')

    def replay_warmup_requests(self, max_input_bytes: int = 64 * MiB) -> int:
        """Replay the version's TF Serving warm-up file (`assets.extra/tf_serving_warmup_requests`,
        `serving.warmup`), as TF Serving does before a version becomes AVAILABLE: every request must
        succeed with finite outputs, else the version is not served. Returns how many were replayed."""
        from serving.predictor.tensors import decode_inputs
        from serving.warmup import WARMUP_FILE, read_warmup_requests

        count = 0
        try:
            for count, request in enumerate(read_warmup_requests(self.path), start=1):
                signature = self.signature(request.model_spec.signature_name)
                inputs = decode_inputs(request.inputs, max_input_bytes)
                signature.validate(inputs)
                wanted = signature.select_outputs(request.output_filter)
                outputs = signature.run(inputs)
                bad = sorted(key for key in wanted if not all_finite(outputs[key]))
                if bad:
                    raise CannotServe(f"warm-up request {count} produced non-finite outputs: {', '.join(bad)}")
        except CannotServe:
            raise
        except Exception as exc:  # a failed request, a malformed or corrupt record (TF's DataLossError)
            raise CannotServe(f"replaying {WARMUP_FILE} failed: {exc}") from exc
        if count:
            log.info("%s: replayed %d warm-up requests", self.path, count)
        return count
