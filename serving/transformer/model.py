"""The KServe transformer: images in, disc (and cup) masks and measurements out; the U-Nets run in the predictor.

KServe calls preprocess -> predict -> postprocess (timing each stage in its own histograms):

* preprocess: decode every image with limits and prepare stage 1's input with `preprocessing`,
  the very code path training used, always in the thread pool (never on the event loop, which
  must keep answering probes and other callers), each image holding its share of the pixel
  budget while it is decoded and prepared;
* predict: ONE batched TF Serving Predict (`serving_default`) for all images of the request, to the
  version the caller named, else the rollout split's label, else the predictor's latest. A
  two-stage version (its card has `segment`) then runs `preprocessing.two_stage` with predictor
  calls in place of its functions, pinned to the version that answered stage 1: every image's
  disc-centred crop is cut from its decoded pixels (kept from preprocess, within the
  `retained_pixels` budget; an image that did not fit is decoded again), ONE batched `segment`
  Predict for all crops, then the second look: the images whose crop `refine` rejects are cut again
  and sent in one more batched `segment` Predict (those only). The decoded pixels go as soon as
  an image's last crop is cut;
* postprocess: the shared pipeline's `finish` (back to full resolution, threshold, largest
  component, hole filling, the cup, measurements, confidence), geometry and 1-bit PNGs per image,
  again in the pool and under the pixel budget. A single-stage version answers through
  `finish_single_stage` in the same form (no cup, no measurements, a confidence).

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
from fundus_seg.model_repository import SEGMENT_SIGNATURE, SERVING_SIGNATURE, signature_input
from preprocessing.confidence import FieldOfView
from preprocessing.decode import DecodeLimits, decode_image, image_size, is_dicom
from preprocessing.dicom import decode_dicom, describe_dicom, without_pixels
from preprocessing.disc_crop import SquareBox
from preprocessing.errors import ImageDecodeError
from preprocessing.pipeline import prepare
from preprocessing.transform import CropBox, PreprocessConfig
from preprocessing.two_stage import (
    Location,
    TwoStageConfig,
    locate_input,
    read_location,
    read_relocation,
    refine,
    relocate_input,
    segment_input,
)
from serving.transformer import metrics
from serving.transformer.budget import Budget, BudgetExhausted
from serving.transformer.codec import (
    RAW,
    V1,
    V2_GRPC,
    V2_REST,
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
from serving.transformer.result import (
    DICOM_SEG,
    HOSPITAL_OUTPUTS,
    SINGLE_STAGE,
    TWO_STAGE,
    HospitalOutputs,
    ImageAnswer,
    answer_single_stage,
    answer_two_stage,
)
from serving.transformer.routing import VersionRouter

log = logging.getLogger(__name__)

VERSION_HEADER = "fundus-seg-model-version"
"""Request header naming a version number or label; set by the /versions/ and /labels/ routes."""
OUTPUTS_HEADER = "fundus-seg-outputs"
"""Request header (REST v1: also `?outputs=`) asking for hospital objects with each answer: `dicom-seg` (a DICOM
Segmentation object; DICOM sources only) and/or `fhir` (a FHIR Observation of the measurements), comma-separated."""

LATERALITY_HEADER = "fundus-seg-laterality"
"""Request header with the eye ("L" or "R") of a raw image body; `?laterality=` is set as it by the v1 route."""


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
    two_stage: TwoStageConfig | None = None  # the card's pipeline; None: a single-stage version
    input_dtype: str = "float32"  # what the version's signatures take (its card's; fundus_seg.model_repository)

    def model_input(self, batch: np.ndarray) -> np.ndarray:
        """A prepared batch as this version's signatures take it: uint8 is a quarter of the bytes on the hop."""
        return signature_input(batch, self.input_dtype)

    @property
    def pipeline(self) -> str:
        return TWO_STAGE if self.two_stage is not None else SINGLE_STAGE


@dataclass
class Image:
    """One image between the stages."""

    input: np.ndarray  # stage 1's input (the paper's 128 x 128 preprocessing)
    box: CropBox
    pixels: int  # width x height of the original
    rgb: np.ndarray | None = None  # two-stage: the decoded image, kept (if it fit) until its last crop is cut
    located: Location | None = None  # two-stage, after stage 1
    fov: FieldOfView | None = None
    laterality: str | None = None  # the eye a DICOM photo's Image Laterality names
    photo: Any = None  # a DICOM source's header (`describe_dicom`), kept only when hospital objects are asked for
    final: Location | None = None  # where the crop stage 2 answered on was cut around
    square: SquareBox | None = None
    crop: np.ndarray | None = None
    second_look: bool = False
    probability: np.ndarray | None = None  # the map `finish` takes: stage 1's (single-stage) or stage 2's (S x S x 2)


class RetainedPixels:
    """The `retained_pixels` budget one request holds for its kept decoded images.

    Taken only when it fits (never waited for: a request that waits while holding would deadlock
    with another doing the same), given back per image as soon as its last crop is cut, and all of
    it when the request ends, however it ends (`close`)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._held: dict[int, int] = {}

    def try_keep(self, key: int, pixels: int) -> bool:
        if key in self._held or not self.budget.try_take(pixels):
            return False
        self._held[key] = min(pixels, self.budget.capacity)
        return True

    def give(self, key: int) -> None:
        taken = self._held.pop(key, 0)
        if taken:
            self.budget.give(taken)

    def close(self) -> None:
        for key in list(self._held):
            self.give(key)


@dataclass
class Work:
    """One request on its way through the three stages."""

    batch: ImageBatch
    served: Served
    images: list[Image]
    prepare_ms: list[float]
    started: float
    retained: RetainedPixels
    version: int | None = None  # who answered
    outputs: frozenset[str] = frozenset()  # hospital objects asked for (OUTPUTS_HEADER)
    predict_ms: float = 0.0

    def drop_rgb(self, index: int) -> None:
        self.images[index].rgb = None
        self.retained.give(index)


class FundusTransformer(Model):
    def __init__(self, config: TransformerConfig, predictor: Predictor | None = None) -> None:
        super().__init__(config.model_name)
        self.config = config
        self.predictor = predictor or make_predictor(config.predictor_api, config.predictor_host,
                                                     config.model_name, config.predictor_timeout_s)
        self.router = VersionRouter(config.rollout_file)
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="fundus-transformer")
        self.pixels = Budget(config.pixel_budget, "pixel")
        self.retained = Budget(config.retained_pixels, "retained-pixel")
        self._health: tuple[float, bool] = (float("-inf"), False)
        self._health_lock: asyncio.Lock | None = None
        self._warned: set[str] = set()
        self._resolved: dict[str | None, tuple[float, Served]] = {}  # target -> (when, who answers it)
        self._cards: dict[int, tuple[PreprocessConfig, float, TwoStageConfig | None, str]] = {}  # version -> its card's
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
        laterality = (headers or {}).get(LATERALITY_HEADER)
        if isinstance(payload, (bytes, bytearray)):  # a raw image: nothing to decode
            batch = decode_request(payload, self.config.max_images, version, laterality)
        else:  # base64 of up to max_request_bytes decodes off the event loop
            batch = await asyncio.get_running_loop().run_in_executor(
                None, decode_request, payload, self.config.max_images, version, laterality)
        outputs = parse_outputs((headers or {}).get(OUTPUTS_HEADER))
        if outputs and batch.protocol not in (V1, RAW):
            raise InvalidInput("DICOM SEG and FHIR outputs are answered on the v1 REST API (?outputs=dicom-seg,fhir)")
        served = await self._serving(batch.version)
        work = Work(batch, served, [], [], started, RetainedPixels(self.retained), outputs=outputs)
        try:
            await self._prepare_all(work)
        except BaseException:
            work.retained.close()
            raise
        metrics.STAGES.labels("decode_preprocess").observe(time.perf_counter() - started)
        return work

    async def _prepare_all(self, work: Work) -> None:
        work.retained.close()  # a second preparation (another version) starts from nothing kept
        done = await asyncio.gather(*(self._prepare(work, i, data) for i, data in enumerate(work.batch.images)),
                                    return_exceptions=True)  # every image settled, so nothing is kept behind our back
        failed = next((d for d in done if isinstance(d, BaseException)), None)
        if failed is not None:
            raise failed
        work.images, work.prepare_ms = [image for image, _ in done], [ms for _, ms in done]

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
                known = (self.config.preprocess, self.config.threshold, None, "float32")
                if f"card-{version}" not in self._warned:
                    self._warned.add(f"card-{version}")
                    log.warning("model version %s carries no model card; serving it with the default preprocessing",
                                version)
            else:
                try:
                    card = ModelCard.from_json(answer.card)
                    known = (card.preprocess, card.threshold, card.two_stage() if card.segment is not None else None,
                             card.input_dtype)
                except (ModelCardError, ValueError) as exc:
                    raise ModelNotReady(self.name, f"model version {version} has an unreadable card: {exc}") from None
                log.info("model version %s: %s, preprocessing %s, threshold %g (from its card)", version,
                         card.pipeline, known[0], known[1])
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

    async def _prepare(self, work: Work, index: int, data: bytes) -> tuple[Image, float]:
        """Header (limits first) in the pool, the pixels from the budget, then decode in the pool;
        a two-stage version's decoded image is kept for its crops when the retained budget has room."""
        started = time.perf_counter()
        served, limits = work.served, self.config.decode_limits
        dicom = is_dicom(data)
        if DICOM_SEG in work.outputs and not dicom:  # refused before any decoding
            raise InvalidInput(f"image {index}: a DICOM SEG object references its source instance: send the photo "
                               "as DICOM (application/dicom), or ask only for fhir")
        try:
            width, height = await self._in_pool(image_size, data, limits)
            async with self._pixels(width * height):
                photo = None
                if served.two_stage is None:
                    prepared = await self._in_pool(prepare, data, served.preprocess, limits)
                    image = Image(prepared.input, prepared.box, width * height)
                else:
                    rgb, stage1, photo = await self._in_pool(_decode_and_locate_input, data, served.two_stage, limits)
                    image = Image(stage1.input, stage1.box, width * height, fov=stage1.fov,
                                  laterality=photo.laterality if photo is not None else None)
                    if work.retained.try_keep(index, width * height):
                        image.rgb = rgb
                if work.outputs and dicom:  # the SEG's and Observation's source: the header already read, if it was
                    image.photo = (without_pixels(photo) if photo is not None
                                   else await self._in_pool(describe_dicom, data, limits))
        except ImageDecodeError as exc:
            raise InvalidInput(f"image {index}: {exc}") from None
        return image, _ms(started)

    async def predict(self, work: Work, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> Work:
        started = time.perf_counter()
        try:
            try:
                await self._run_model(work)
            except VersionNotFound:
                # The pinned version was replaced between its card and a call (a hot swap): ask again
                # who answers, prepare again if the new version wants it otherwise, and run again.
                served = await self._serving(work.batch.version, fresh=True)
                prepare_again = (served.preprocess, served.two_stage) != (work.served.preprocess,
                                                                          work.served.two_stage)
                work.served = served
                if prepare_again:
                    await self._prepare_all(work)
                await self._run_model(work)
        except PredictorCallError as exc:
            work.retained.close()
            raise self._kserve_error(exc, work.batch.version) from None
        except BaseException:
            work.retained.close()
            raise
        work.batch.images = []  # the bytes are no longer needed; drop them early
        work.predict_ms = _ms(started)
        metrics.STAGES.labels("predict").observe(work.predict_ms / 1000)
        return work

    async def _run_model(self, work: Work) -> None:
        """Stage 1 for every image; for a two-stage version then stage 2 and the second look, pinned to
        the version that answered stage 1."""
        inputs = np.stack([image.input for image in work.images])
        first = await self.predictor.predict(work.served.model_input(inputs), work.served.target, SERVING_SIGNATURE)
        work.version = first.version
        probability = _checked(first, len(work.images), 1, "stage 1")
        if work.served.two_stage is None:
            for image, p in zip(work.images, probability, strict=True):
                image.probability = p
            return
        pinned = str(first.version) if first.version is not None else work.served.target
        config = work.served.two_stage
        for i, p in enumerate(probability):
            work.images[i].located = read_location(p, work.images[i].box, config.threshold)
        looking = [i for i, image in enumerate(work.images) if image.located.found]
        for _ in range(config.locator_looks if looking else 0):
            views = await asyncio.gather(*(self._relocation_view(work, i) for i in looking))
            again = await self.predictor.predict(work.served.model_input(np.stack([view for view, _ in views])), pinned,
                                                 SERVING_SIGNATURE)
            for i, (_, box), p in zip(looking, views, _checked(again, len(looking), 1, "stage 1"), strict=True):
                work.images[i].located = read_relocation(p, box, work.images[i].located, config)
        await asyncio.gather(*(self._first_crop(work, i) for i in range(len(work.images))))
        pending = list(range(len(work.images)))
        probability = await self._segment(work, pending, pinned)
        for _ in range(work.served.two_stage.second_looks):
            cut = await asyncio.gather(*(self._second_crop(work, i, p) for i, p in zip(pending, probability, strict=True)))
            pending = [i for i, again in zip(pending, cut, strict=True) if again]
            if not pending:
                break
            probability = await self._segment(work, pending, pinned)
        for index in pending:
            work.drop_rgb(index)  # looks used up: its last crop is cut

    async def _segment(self, work: Work, indices, pinned: str | None) -> np.ndarray:
        indices = list(indices)
        crops = np.stack([work.images[i].crop for i in indices])
        result = await self.predictor.predict(work.served.model_input(crops), pinned, SEGMENT_SIGNATURE)
        probability = _checked(result, len(indices), 2, "stage 2")
        for i, p in zip(indices, probability, strict=True):
            work.images[i].probability, work.images[i].crop = p, None
        return probability

    async def _relocation_view(self, work: Work, index: int) -> tuple[np.ndarray, CropBox]:
        """Stage 1's second look at one image: the square around where it last put the disc."""
        image, config = work.images[index], work.served.two_stage
        if image.rgb is not None:
            return await self._in_pool(relocate_input, image.rgb, image.located, config)
        async with self._pixels(image.pixels):  # not kept (the retained budget was full): decode it again
            return await self._in_pool(_decode_and_relocate, work.batch.images[index], image.located, config,
                                       self.config.decode_limits)

    async def _first_crop(self, work: Work, index: int) -> None:
        """The crop around where stage 1 (after its own looks) put the disc."""
        image = work.images[index]
        image.second_look, image.final = False, image.located
        image.crop, image.square = await self._cut(work, index, image.located)

    async def _second_crop(self, work: Work, index: int, probability: np.ndarray) -> bool:
        """A second look: cut the crop again where stage 2 saw the disc, when `refine` says so (True)."""
        image, config = work.images[index], work.served.two_stage
        better = refine(probability, image.square, image.final, config)
        if better is None:
            work.drop_rgb(index)  # its last crop is cut: the decoded image is no longer needed
            return False
        image.final, image.second_look = better, True
        image.crop, image.square = await self._cut(work, index, better)
        return True

    async def _cut(self, work: Work, index: int, location: Location) -> tuple[np.ndarray, SquareBox]:
        image, config = work.images[index], work.served.two_stage
        if image.rgb is not None:
            return await self._in_pool(segment_input, image.rgb, location, config)
        async with self._pixels(image.pixels):  # not kept (the retained budget was full): decode it again
            return await self._in_pool(_decode_and_cut, work.batch.images[index], location, config,
                                       self.config.decode_limits)

    def _route(self) -> str | None:
        label = self.router.choose()
        if label is not None and self.config.predictor_api == "rest":
            version = self.router.split.version_for(label)  # REST pins numbers to know who answered
            return None if version is None else str(version)
        return label

    async def postprocess(self, work: Work, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None):
        started = time.perf_counter()
        try:
            results = await asyncio.gather(*(self._finish(work, i) for i in range(len(work.images))))
        finally:
            work.retained.close()
        total = _ms(work.started)
        for result, prepare_ms in zip(results, work.prepare_ms, strict=True):
            result.timings_ms = {"decode_preprocess": round(prepare_ms, 2), "predict": round(work.predict_ms, 2),
                                 "postprocess": result.timings_ms["postprocess"], "total": round(total, 2)}
        metrics.IMAGES.labels(self.name, str(work.version)).inc(len(results))
        metrics.STAGES.labels("postprocess").observe(time.perf_counter() - started)
        return encode_response(work.batch, results, self.name, work.version)

    async def _finish(self, work: Work, index: int) -> ImageAnswer:
        started = time.perf_counter()
        image, served = work.images[index], work.served
        laterality = work.batch.lateralities[index] or image.laterality  # the caller's, else the DICOM header's
        async with self._pixels(image.box.width * image.box.height):
            hospital = (HospitalOutputs(work.outputs, image.photo, self.name, work.version) if work.outputs else None)
            if served.two_stage is None:
                answer = await self._in_pool(answer_single_stage, image.probability, image.box, image.input,
                                             served.threshold, laterality, hospital)
            else:
                answer = await self._in_pool(answer_two_stage, image.probability, image.square, image.located,
                                             image.final, image.second_look, image.fov, served.two_stage, laterality,
                                             hospital)
        answer.timings_ms = {"postprocess": round(_ms(started), 2)}
        return answer


def parse_outputs(text: str | None) -> frozenset[str]:
    wanted = frozenset(part.strip() for part in (text or "").split(",") if part.strip())
    unknown = sorted(wanted - set(HOSPITAL_OUTPUTS))
    if unknown:
        raise InvalidInput(f"unknown output(s) {', '.join(u[:32] for u in unknown[:4])}: ask for "
                           f"{' and/or '.join(HOSPITAL_OUTPUTS)} (comma-separated)")
    return wanted


def _decode_and_locate_input(data: bytes, config: TwoStageConfig, limits: DecodeLimits):
    """(rgb, stage 1's input, the decoded DICOM photo (its eye, source and header) or None for a JPEG/PNG)."""
    if is_dicom(data):
        photo = decode_dicom(data, limits)
        return photo.rgb, locate_input(photo.rgb, config), photo
    rgb = decode_image(data, limits)
    return rgb, locate_input(rgb, config), None


def _decode_and_cut(data: bytes, location: Location, config: TwoStageConfig, limits: DecodeLimits):
    return segment_input(decode_image(data, limits), location, config)


def _decode_and_relocate(data: bytes, location: Location, config: TwoStageConfig, limits: DecodeLimits):
    return relocate_input(decode_image(data, limits), location, config)


def _checked(result: PredictResult, count: int, channels: int, stage: str) -> np.ndarray:
    """The predictor's maps, refused when they cannot be this request's answer."""
    probability = result.probability
    if probability.ndim != 4 or probability.shape[0] != count or probability.shape[-1] != channels:
        raise InferenceError(f"predictor returned maps of shape {list(probability.shape)} for {count} images "
                             f"({stage} answers N x S x S x {channels})")
    if not np.isfinite(probability).all():
        raise InferenceError(f"model version {result.version} returned non-finite probabilities: it cannot serve")
    return probability


def _protocol(body: Any) -> str:
    if isinstance(body, InferRequest):
        return V2_GRPC if body.from_grpc else V2_REST
    return RAW if isinstance(body, (bytes, bytearray)) else V1


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
