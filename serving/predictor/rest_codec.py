"""TF Serving's REST predict JSON: row format ("instances" -> "predictions") and columnar
("inputs" -> "outputs"), with {"b64": ...} for binary strings.

JSON numbers are converted to the dtype the signature declares (as TF Serving does), so a REST
client never has to care about float32 vs float64.

Hostile bodies get 4xx, never a 500 or a memory blow-up: JSON is strict (no NaN/Infinity, no
numbers outside the input's dtype), nesting deeper than the recursion limit is a parse error, and
a body holding more JSON values than `max_values` is refused (413) before it is parsed, because
parsed JSON costs up to ~70 bytes of Python objects per value. Values are counted from the
structural bytes (`,` `[` `{`): an upper bound (commas inside strings count too) that costs three
bytes.count() calls.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.predictor.errors import InvalidArgument, RequestTooLarge
from serving.predictor.servable import Signature
from serving.predictor.tensors import MAX_RANK, dtype_name


@dataclass
class RestPredictRequest:
    signature_name: str
    row_format: bool
    payload: Any

    @classmethod
    def parse(cls, body: bytes, max_values: int) -> RestPredictRequest:
        values = body.count(b",") + 2 * (body.count(b"[") + body.count(b"{")) + 1
        if values > max_values:
            raise RequestTooLarge(f"the request body holds up to {values} JSON values; at most {max_values} "
                                  "are accepted (send large tensors over gRPC, or split the request)")
        try:
            document = json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"JSON Parse error: {exc}") from None
        except RecursionError:
            raise InvalidArgument("JSON Parse error: the document is nested too deeply") from None
        if not isinstance(document, dict):
            raise InvalidArgument("JSON Value: request body must be a JSON object")
        has_rows, has_columns = "instances" in document, "inputs" in document
        if not has_rows and not has_columns:
            raise InvalidArgument("Missing 'inputs' or 'instances' key")
        if has_rows and has_columns:
            raise InvalidArgument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists")
        signature_name = document.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise InvalidArgument("'signature_name' must be a string")
        return cls(signature_name, has_rows, document["instances" if has_rows else "inputs"])

    def decode(self, signature: Signature) -> dict[str, np.ndarray]:
        """Inputs as arrays of the signature's dtypes (called once the signature is known)."""
        if self.row_format:
            instances = self.payload
            if not isinstance(instances, list) or not instances:
                raise InvalidArgument("'instances' must be a non-empty JSON array")
            if all(_is_named(instance) for instance in instances):
                keys = instances[0].keys()
                if any(instance.keys() != keys for instance in instances):
                    raise InvalidArgument("Failed to process element: every instance must name the same inputs")
                columns = {key: [instance[key] for instance in instances] for key in keys}
            else:
                columns = {_single_input(signature, "instance"): instances}
        else:
            columns = self.payload if _is_named(self.payload) else {_single_input(signature, "inputs"): self.payload}
        return {key: _to_array(key, value, signature) for key, value in columns.items()}


def encode_response(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    """{"predictions": [...]} (one entry per example) or {"outputs": ...}, like TF Serving."""
    converted = {key: _to_json(key, array) for key, array in outputs.items()}
    if not row_format:
        document = {"outputs": next(iter(converted.values())) if len(converted) == 1 else converted}
    elif len(converted) == 1:
        document = {"predictions": next(iter(converted.values()))}
    else:
        sizes = {key: array.shape[0] if array.ndim else None for key, array in outputs.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise InvalidArgument(f"Tensor name: outputs have inconsistent batch sizes {sizes}; "
                                  "use the columnar format ('inputs') for this signature")
        rows = next(iter(sizes.values()))
        document = {"predictions": [{key: value[i] for key, value in converted.items()} for i in range(rows)]}
    return json.dumps(document, separators=(",", ":")).encode()


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {"b64"}


def _single_input(signature: Signature, what: str) -> str:
    if len(signature.inputs) != 1:
        raise InvalidArgument(
            f"The signature has {len(signature.inputs)} inputs {sorted(signature.inputs)}: each {what} "
            "must be a JSON object keyed by input name")
    return next(iter(signature.inputs))


def _to_array(key: str, value: Any, signature: Signature) -> np.ndarray:
    spec = signature.inputs.get(key)
    if spec is None:
        return np.empty(0)  # Signature.validate reports unknown inputs with TF Serving's message
    try:
        if spec.numpy_dtype.kind == "O":
            return np.array(_decode_strings(value, 0), dtype=object)
        with np.errstate(over="raise"):  # 1e39 as float32 is a client error, not a silent Infinity
            return np.asarray(value, dtype=spec.numpy_dtype)
    except (ValueError, TypeError, ArithmeticError, binascii.Error) as exc:
        raise InvalidArgument(f"input '{key}': cannot read JSON as {dtype_name(spec.dtype)}: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _decode_strings(value: Any, depth: int) -> Any:
    if _is_b64(value):
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, list):
        if depth >= MAX_RANK:
            raise ValueError(f"more than {MAX_RANK} nested arrays")
        return [_decode_strings(item, depth + 1) for item in value]
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected a string or {{'b64': ...}}, got {type(value).__name__}")


def _to_json(key: str, array: np.ndarray) -> Any:
    if array.dtype.kind not in "OSU":
        return array.tolist()
    # TF Serving: string outputs whose name ends in "_bytes" are base64 objects, others UTF-8 text.
    def convert(item: Any) -> Any:
        if isinstance(item, list):
            return [convert(i) for i in item]
        if isinstance(item, str):
            item = item.encode()
        if key.endswith("_bytes"):
            return {"b64": base64.b64encode(item).decode()}
        return item.decode("utf-8", errors="replace")
    return convert(array.tolist())
