"""The KServe transformer: images in, disc masks and measurements out; the U-Net runs in the predictor.

KServe calls preprocess -> predict -> postprocess (timing each stage in its own histograms):

* preprocess: decode every image with limits and prepare it for the model with `preprocessing`,
  the very code path training used, always in the thread pool (never on the event loop, which
  must keep answering probes and other callers), each image holding its share of the pixel
  budget while its full-size arrays exist;
* predict: ONE batched TF Serving Predict for all images of the request, to the version the
  caller named, else the rollout split's label, else the predictor's latest;
* postprocess: the shared pipeline's `finish` (back to full resolution, threshold, largest
  component, hole filling), geometry and a 1-bit PNG per image, again in the pool.

Errors become KServe's exceptions, so KServe answers with the right status: InvalidInput (400 /
INVALID_ARGUMENT), ModelNotFound (404 / NOT_FOUND), ModelNotReady (503 / UNAVAILABLE). Images
and their bytes are never logged.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferRequest

from fundus_seg.model_card import ModelCard, ModelCardError
from preprocessing.decode import image_size
from preprocessing.errors import ImageDecodeError
from preprocessing.pipeline import Prepared, prepare
from preprocessing.transform import PreprocessConfig
from serving.transformer import metrics
from serving.transformer.budget import Budget, BudgetExhausted
from serving.transformer.codec import (
    RAW,
    V1,
    V2_GRPC,
    V2_REST,
    ImageAnswer,
    ImageBatch,
    decode_request,
    encode_response,
)
from serving.transformer.config import TransformerConfig
from serving.transformer.predictor_client import (
    CardResult,
    Predictor,
    PredictorCallError,
    PredictorUnavailable,
    PredictResult,
    VersionNotFound,
    make_predictor,
)
from serving.transformer.result import segment_probability
from serving.transformer.routing import VersionRouter

log = logging.getLogger(__name__)

VERSION_HEADER = "fundus-seg-model-version"
"""Request header naming a version number or label; set by the /versions/ and /labels/ routes."""


class UnknownVersion(ModelNotFound):
    """A version or label the caller asked for is not loaded: 404 / NOT_FOUND with our message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass(frozen=True)
class Served:
    """Who answers a request, and how its images must be prepared: the version's own card."""

    target: str | None  # what Predict is called with: the version number once known
    version: int | None
    preprocess: PreprocessConfig
    threshold: float


@dataclass
class Work:
    """One request on its way through the three stages."""

    batch: ImageBatch
    served: Served
    prepared: list[Prepared]
    prepare_ms: list[float]
    started: float
    result: PredictResult | None = None
    predict_ms: float = 0.0


class FundusTransformer(Model):
    def __init__(self, config: TransformerConfig, predictor: Predictor | None = None) -> None:
        super().__init__(config.model_name)
        self.config = config
        self.predictor = predictor or make_predictor(config.predictor_api, config.predictor_host,
                                                     config.model_name, config.predictor_timeout_s)
        self.router = VersionRouter(config.rollout_file)
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="fundus-transformer")
        self.pixels = Budget(config.pixel_budget, "pixel")
        self._health: tuple[float, bool] = (float("-inf"), False)
        self._health_lock: asyncio.Lock | None = None
        self._warned: set[str] = set()
        self._resolved: dict[str | None, tuple[float, Served]] = {}  # target -> (when, who answers it)
        self._cards: dict[int, tuple[PreprocessConfig, float]] = {}  # version -> its card's preprocessing
        self._stopped = False
        self.draining = False  # set on SIGTERM: not ready any more, in-flight requests finish
        self.ready = True  # the transformer itself is up; healthy() says whether the predictor is

    def load(self) -> bool:
        self.ready = True
        return True

    def stop(self) -> None:
        self.ready, self._stopped = False, True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def live(self) -> bool:
        """Liveness: this process can still answer requests (restarting it would help otherwise)."""
        return self.ready and not self._stopped and not self._pool._shutdown

    # -- readiness -------------------------------------------------------------------------------

    async def healthy(self) -> bool:
        """Ready only while the predictor has a model version AVAILABLE (checked at most every
        `ready_cache_s`, because KServe asks on every request), and not while draining."""
        if self.draining or self._stopped:
            return False
        if time.monotonic() - self._health[0] < self.config.ready_cache_s:
            return self._health[1]
        if self._health_lock is None:
            self._health_lock = asyncio.Lock()
        async with self._health_lock:
            if time.monotonic() - self._health[0] >= self.config.ready_cache_s:
                versions = await self.predictor.available_versions()
                metrics.MODEL_VERSION.labels(self.name).set(versions[-1] if versions else 0)
                metrics.READY.labels(self.name).set(1 if versions else 0)
                self._health = (time.monotonic(), bool(versions))
        return self._health[1]

    # -- the three stages ------------------------------------------------------------------------

    async def __call__(self, body: Any, headers: dict[str, str] | None = None,
                       verb: InferenceVerb = InferenceVerb.PREDICT):
        protocol = _protocol(body)
        started, outcome = time.perf_counter(), "ok"
        try:
            return await super().__call__(body, headers, verb)
        except InvalidInput:
            outcome = "invalid_input"
            raise
        except ModelNotFound:
            outcome = "not_found"
            raise
        except ModelNotReady:
            outcome = "unavailable"
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            metrics.REQUESTS.labels(protocol, outcome).inc()
            metrics.LATENCY.labels(protocol).observe(time.perf_counter() - started)

    def validate(self, payload: Any) -> Any:
        return payload  # preprocess already validated the request and returns a Work

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Work:
        started = time.perf_counter()
        version = (headers or {}).get(VERSION_HEADER) or None
        if isinstance(payload, (bytes, bytearray)):  # a raw image: nothing to decode
            batch = decode_request(payload, self.config.max_images, version)
        else:  # base64 of up to max_request_bytes decodes off the event loop
            batch = await asyncio.get_running_loop().run_in_executor(
                None, decode_request, payload, self.config.max_images, version)
        served = await self._serving(batch.version)
        work = Work(batch, served, [], [], started)
        await self._prepare_all(work)
        metrics.STAGES.labels("decode_preprocess").observe(time.perf_counter() - started)
        return work

    async def _prepare_all(self, work: Work) -> None:
        done = await asyncio.gather(*(self._prepare(i, data, work.served.preprocess)
                                      for i, data in enumerate(work.batch.images)))
        work.prepared, work.prepare_ms = [p for p, _ in done], [ms for _, ms in done]

    # -- which version answers, with which preprocessing -----------------------------------------

    async def _serving(self, requested: str | None, fresh: bool = False) -> Served:
        """The version that answers `requested` (else the rollout split's label, else the latest)
        and its card, from the version itself through the predictor (cached `ready_cache_s`)."""
        target = requested if requested is not None else self._route()
        cached = self._resolved.get(target)
        if cached is not None and not fresh and time.monotonic() - cached[0] < self.config.ready_cache_s:
            return cached[1]
        try:
            try:
                answer = await self.predictor.model_card(target)
            except VersionNotFound:
                if requested is not None or target is None:
                    raise
                # The split names a label the predictor has not loaded (yet): serve, don't fail.
                if target not in self._warned:
                    self._warned.add(target)
                    log.warning("version %s from the rollout split is not loaded; using the latest", target)
                answer = await self.predictor.model_card(None)
        except PredictorCallError as exc:
            raise self._kserve_error(exc, requested) from None
        if answer.version is None and target is None:  # a version without a card does not say who it is
            versions = await self.predictor.available_versions()
            answer = CardResult(answer.card, versions[-1] if versions else None)
        served = self._served_by(answer, target)
        self._resolved[target] = (time.monotonic(), served)
        return served

    def _kserve_error(self, exc: PredictorCallError, requested: str | None) -> Exception:
        """What the caller gets for a failed predictor call: 404 for a version they asked for,
        503 for nothing loaded or an unreachable predictor, 500 otherwise."""
        if isinstance(exc, VersionNotFound):
            return UnknownVersion(str(exc)) if requested is not None else ModelNotReady(self.name, str(exc))
        if isinstance(exc, PredictorUnavailable):
            return ModelNotReady(self.name, str(exc))
        log.error("predictor call failed: %s", exc)
        return InferenceError(str(exc))

    def _served_by(self, answer: CardResult, target: str | None) -> Served:
        version = answer.version
        known = self._cards.get(version) if version is not None else None
        if known is None:
            if answer.card is None:
                known = (self.config.preprocess, self.config.threshold)
                if f"card-{version}" not in self._warned:
                    self._warned.add(f"card-{version}")
                    log.warning("model version %s carries no model card; serving it with the default preprocessing",
                                version)
            else:
                try:
                    card = ModelCard.from_json(answer.card)
                except ModelCardError as exc:
                    raise ModelNotReady(self.name, f"model version {version} has an unreadable card: {exc}") from None
                known = (card.preprocess, card.threshold)
                log.info("model version %s: preprocessing %s, threshold %g (from its card)", version, *known)
            if version is not None:
                self._cards[version] = known
        return Served(str(version) if version is not None else target, version, *known)

    async def _in_pool(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    @contextlib.asynccontextmanager
    async def _pixels(self, count: int):
        """Hold `count` full-size pixels of the budget; a budget that stays full is a 503 (retry)."""
        try:
            taken = await self.pixels.take(count, self.config.budget_wait_s)
        except BudgetExhausted as exc:
            raise ModelNotReady(self.name, f"{exc}; retry shortly") from None
        try:
            yield
        finally:
            self.pixels.give(taken)

    async def _prepare(self, index: int, data: bytes, preprocess: PreprocessConfig) -> tuple[Prepared, float]:
        """Header (limits first) in the pool, the pixels from the budget, then decode in the pool."""
        started = time.perf_counter()
        try:
            width, height = await self._in_pool(image_size, data, self.config.decode_limits)
            async with self._pixels(width * height):
                prepared = await self._in_pool(prepare, data, preprocess, self.config.decode_limits)
        except ImageDecodeError as exc:
            raise InvalidInput(f"image {index}: {exc}") from None
        return prepared, _ms(started)

    async def predict(self, work: Work, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> Work:
        started = time.perf_counter()
        try:
            try:
                work.result = await self._predict(work)
            except VersionNotFound:
                # The pinned version was replaced between its card and this call (a hot swap):
                # ask again who answers, and prepare again if the new version wants it otherwise.
                served = await self._serving(work.batch.version, fresh=True)
                prepare_again = served.preprocess != work.served.preprocess
                work.served = served
                if prepare_again:
                    await self._prepare_all(work)
                work.result = await self._predict(work)
        except PredictorCallError as exc:
            raise self._kserve_error(exc, work.batch.version) from None
        work.batch.images = []  # the bytes are no longer needed; drop them early
        work.predict_ms = _ms(started)
        metrics.STAGES.labels("predict").observe(work.predict_ms / 1000)
        return work

    async def _predict(self, work: Work) -> PredictResult:
        return await self.predictor.predict(np.stack([p.input for p in work.prepared]), work.served.target)

    def _route(self) -> str | None:
        label = self.router.choose()
        if label is not None and self.config.predictor_api == "rest":
            version = self.router.split.version_for(label)  # REST pins numbers to know who answered
            return None if version is None else str(version)
        return label

    async def postprocess(self, work: Work, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None):
        started = time.perf_counter()
        probability = work.result.probability
        if probability.shape[0] != len(work.prepared):
            raise InferenceError(f"predictor returned {probability.shape[0]} maps for {len(work.prepared)} images")
        if not np.isfinite(probability).all():
            raise InferenceError(f"model version {work.result.version} returned non-finite probabilities: "
                                 "it cannot serve")
        results = await asyncio.gather(*(self._finish(probability[i], p.box, work.served.threshold)
                                         for i, p in enumerate(work.prepared)))
        total = _ms(work.started)
        for result, prepare_ms in zip(results, work.prepare_ms, strict=True):
            result.timings_ms = {"decode_preprocess": round(prepare_ms, 2), "predict": round(work.predict_ms, 2),
                                 "postprocess": result.timings_ms["postprocess"], "total": round(total, 2)}
        version = work.result.version
        metrics.IMAGES.labels(self.name, str(version)).inc(len(results))
        metrics.STAGES.labels("postprocess").observe(time.perf_counter() - started)
        return encode_response(work.batch, results, self.name, version)

    async def _finish(self, probability: np.ndarray, box, threshold: float) -> ImageAnswer:
        started = time.perf_counter()
        async with self._pixels(box.width * box.height):
            png, disc = await self._in_pool(segment_probability, probability, box, threshold)
        return ImageAnswer(png, disc, {"postprocess": round(_ms(started), 2)})


def _protocol(body: Any) -> str:
    if isinstance(body, InferRequest):
        return V2_GRPC if body.from_grpc else V2_REST
    return RAW if isinstance(body, (bytes, bytearray)) else V1


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
