"""The transformer's REST app in-process (Starlette's test client, a fake predictor): routes and health."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from kserve.model_repository import ModelRepository

from serving.transformer.config import TransformerConfig
from serving.transformer.model import FundusTransformer
from serving.transformer.server import ReadyDataPlane, RequestLimits, build_app
from tests.serving.helpers import FakePredictor


@pytest.fixture
def served():
    config = TransformerConfig(ready_cache_s=0.0)
    model = FundusTransformer(config, predictor=FakePredictor())
    registry = ModelRepository()
    registry.update(model)
    app = RequestLimits(build_app(ReadyDataPlane(model_registry=registry), model, config), config)
    with TestClient(app) as client:
        yield client, model


def test_liveness_fails_once_the_transformer_cannot_serve(served):
    client, model = served
    assert client.get("/").json() == {"status": "alive"} and client.get("/v2/health/live").status_code == 200
    model.stop()
    assert client.get("/").status_code == 503 and client.get("/v2/health/live").json() == {"live": False}


def test_draining_turns_readiness_off_but_not_liveness(served):
    client, model = served
    assert client.get("/v2/health/ready").json() == {"ready": True}
    model.draining = True
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v1/models/optic-disc").status_code == 503
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("path", ["/v2/repository/models/optic-disc/unload", "/v2/repository/models/optic-disc/load",
                                  "/v2/repository/index", "/docs", "/openapi.json"])
def test_nothing_that_changes_the_service_is_routed(served, path):
    client, model = served
    assert client.post(path).status_code in (404, 405) and client.get(path).status_code in (404, 405)
    assert model.live() and client.get("/v2/health/ready").status_code == 200


def test_server_metadata_lists_no_extensions(served):
    client, _ = served
    assert client.get("/v2").json()["extensions"] == []
    assert client.get("/v2/models").json() == {"models": ["optic-disc"]}
