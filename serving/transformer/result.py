"""From the model's probability maps to what a caller gets: masks as PNG, geometry, measurements, confidence.

Kept free of KServe so the benchmark's in-process path measures exactly what the transformer does.
Both pipelines answer in one form (`ImageAnswer`): a single-stage (the paper's) version through
`preprocessing.two_stage.finish_single_stage` (no cup, so no measurements), a two-stage version
through `preprocessing.two_stage.finish`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from preprocessing.geometry import disc_geometry, plane
from preprocessing.two_stage import TwoStageAnswer, finish, finish_single_stage

PNG_OPTIONS = [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 1]
"""1-bit PNG, light compression: a fundus-sized mask is ~2 KB and takes ~1 ms to encode."""

SINGLE_STAGE, TWO_STAGE = "single-stage", "two-stage"


@dataclass
class ImageAnswer:
    """One image's answer, protocol-neutral (`serving.transformer.codec` writes it for each protocol)."""

    mask_png: bytes  # the disc
    disc: dict[str, Any]  # the disc's geometry (`preprocessing.geometry.DiscGeometry.to_dict`, rounded)
    timings_ms: dict[str, float] = field(default_factory=dict)
    cup_png: bytes | None = None  # None: the version has no cup stage (single-stage)
    cup: dict[str, Any] | None = None  # the cup's geometry, same form as `disc`
    measurements: dict[str, Any] | None = None  # `Measurements.to_dict()`; None without a disc or a cup stage
    confidence: dict[str, Any] | None = None  # `Confidence.to_dict()`
    pipeline: str = SINGLE_STAGE
    dicom_seg: bytes | None = None  # on request: the DICOM Segmentation object (Part 10 bytes)
    fhir_observation: dict[str, Any] | None = None  # on request: the measurements as a FHIR Observation


DICOM_SEG, FHIR = "dicom-seg", "fhir"
HOSPITAL_OUTPUTS = (DICOM_SEG, FHIR)


@dataclass(frozen=True)
class HospitalOutputs:
    """What a caller asked for beyond the JSON answer (`serving.hospital`), and what it needs: the source photo's
    DICOM header (`preprocessing.dicom.describe_dicom`; None for a JPEG/PNG, which can have an Observation but no
    SEG) and who answered."""

    wanted: frozenset[str]
    photo: Any | None
    model_name: str
    model_version: int


def hospital_outputs(answer: TwoStageAnswer, two_stage: bool, request: HospitalOutputs) -> tuple[bytes | None, dict | None]:
    import json

    from serving.hospital.fhir import build_observation, observation_json
    from serving.hospital.seg import Algorithm, build_segmentation, segmentation_bytes

    algorithm = Algorithm(request.model_name, request.model_version)
    seg = seg_uid = None
    photo = request.photo
    if DICOM_SEG in request.wanted and photo is not None:
        segmentation = build_segmentation(photo, answer.disc, answer.cup if two_stage else None, algorithm)
        seg, seg_uid = segmentation_bytes(segmentation), str(segmentation.SOPInstanceUID)
    observation = None
    if FHIR in request.wanted:
        reason = "no optic disc was found" if two_stage else "this model version segments no cup"
        patient = str(photo.dataset.get("PatientID", "")) or None if photo is not None else None
        observation = json.loads(observation_json(build_observation(
            answer.measurements, algorithm, source=photo.source if photo is not None else None,
            laterality=answer.measurements.laterality if answer.measurements else (photo.laterality if photo else None),
            patient_id=patient, seg_sop_instance_uid=seg_uid, absent_reason=reason)))
    return seg, observation


def _as_uint8(mask: np.ndarray) -> np.ndarray:
    """A bool mask as 0/1 bytes without a copy (a view); other masks as 0/1 bytes."""
    mask = plane(mask)
    return mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).astype(np.uint8)


def mask_png(mask: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", _as_uint8(mask), PNG_OPTIONS)  # bilevel: any non-zero is white
    if not ok:
        raise ValueError("could not encode the mask as PNG")
    return png.tobytes()


def geometry(mask: np.ndarray) -> dict[str, Any]:
    """A mask's geometry (rounded to 0.01 px) as a JSON-ready dict."""
    return _rounded(disc_geometry(mask).to_dict())


def render(answer: TwoStageAnswer, pipeline: str, hospital: HospitalOutputs | None = None) -> ImageAnswer:
    """The pipeline's answer as PNGs and JSON-ready dicts; the cup only where the version has a cup stage; the
    DICOM SEG and FHIR Observation when asked for."""
    two_stage = pipeline == TWO_STAGE
    seg, observation = hospital_outputs(answer, two_stage, hospital) if hospital and hospital.wanted else (None, None)
    return ImageAnswer(
        dicom_seg=seg,
        fhir_observation=observation,
        mask_png=mask_png(answer.disc),
        disc=geometry(answer.disc),
        cup_png=mask_png(answer.cup) if two_stage else None,
        cup=geometry(answer.cup) if two_stage else None,
        measurements=answer.measurements.to_dict() if answer.measurements is not None else None,
        confidence=answer.confidence.to_dict(),
        pipeline=pipeline,
    )


def answer_single_stage(probability: np.ndarray, box, stage1_input: np.ndarray, threshold: float = 0.5,
                        laterality: str | None = None, hospital: HospitalOutputs | None = None) -> ImageAnswer:
    """A single-stage version's map (the model's size) -> the answer at the original resolution."""
    return render(finish_single_stage(probability, box, stage1_input, threshold, laterality), SINGLE_STAGE, hospital)


def answer_two_stage(probability: np.ndarray, square, located, final, second_look: bool, fov, config,
                     laterality: str | None = None, hospital: HospitalOutputs | None = None) -> ImageAnswer:
    """Stage 2's crop map (disc, cup) -> the answer at the original resolution."""
    return render(finish(probability, square, located, final, second_look, fov, config, laterality), TWO_STAGE,
                  hospital)


def _rounded(value: Any, digits: int = 2) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value
