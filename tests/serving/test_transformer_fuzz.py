"""Fuzzing the transformer's request codecs: any body, header or version is a 4xx-class error or a batch."""
from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from serving.transformer.codec import decode_request, parse_version
from serving.transformer.server import UnsupportedMediaType, v1_payload, v2_payload

MAX_IMAGES = 4
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(
        st.sampled_from(["instances", "image_bytes", "b64", "inputs", "name", "datatype", "shape", "data", "x"]),
        children, max_size=5),
    max_leaves=30)


def _accepts_or_refuses(call) -> None:
    try:
        batch = call()
    except (InvalidInput, UnsupportedMediaType):
        return
    if hasattr(batch, "images"):
        assert 1 <= len(batch.images) <= MAX_IMAGES
        assert all(isinstance(image, bytes) for image in batch.images)


@FUZZ
@given(document=json_values, content_type=st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "", None, "text/plain", "application/x+json"]))
def test_v1_bodies(document, content_type):
    body = json.dumps(document).encode()
    _accepts_or_refuses(lambda: decode_request(v1_payload(body, content_type, MAX_IMAGES), MAX_IMAGES))


@FUZZ
@given(st.binary(max_size=512))
def test_v1_raw_bytes(body):
    _accepts_or_refuses(lambda: v1_payload(body, "application/json", MAX_IMAGES))
    _accepts_or_refuses(lambda: decode_request(v1_payload(body, None, MAX_IMAGES), MAX_IMAGES))


@FUZZ
@given(document=json_values)
def test_v2_rest_bodies(document):
    body = json.dumps(document).encode()
    _accepts_or_refuses(lambda: decode_request(v2_payload(body, "optic-disc", MAX_IMAGES), MAX_IMAGES))


@FUZZ
@given(shape=st.lists(st.integers(-3, 2**62), max_size=3), data=st.lists(
    st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=8), max_size=6),
    datatype=st.sampled_from(["BYTES", "FP32", "INT8"]), version=st.text(max_size=30) | st.none())
def test_v2_requests(shape, data, datatype, version):
    def build():
        tensor = InferInput("image_bytes", shape, datatype, data)
        return decode_request(InferRequest("optic-disc", [tensor], model_version=version), MAX_IMAGES)
    _accepts_or_refuses(build)


@FUZZ
@given(st.text(max_size=40) | st.from_regex(r"[0-9]{1,40}", fullmatch=True))
def test_versions(text):
    try:
        version = parse_version(text)
    except InvalidInput:
        return
    assert version is None or (version.isdigit() and int(version) < 2**63) or not version[0].isdigit()
