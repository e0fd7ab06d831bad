"""An answer's measurements as a FHIR R5 `Observation` (fhir.resources), JSON for a hospital's FHIR server.

One Observation per photo: the vertical cup-to-disc ratio is its value (the screening number), and every other
measurement is a component (horizontal and area CDR, the DDLS rim-to-disc ratio, the rim width per sector in
pixels of the photo, whether the ISNT rule holds). Where the eye is known, the body structure (a contained
`BodyStructure`: the optic nerve head with its laterality) says which eye. The status is `preliminary`: an
automated measurement that no clinician has reviewed. The codes and why they were chosen are in
`serving.hospital.codes`. `derivedFrom` references the source study (and the SEG object, when one was made) by
DICOM UID, as `urn:oid:` identifiers, so no FHIR ImagingStudy needs to exist for the Observation to be stored.
"""
from __future__ import annotations

import datetime as dt

from preprocessing.dicom import SourceInstance
from preprocessing.measurements import Laterality, Measurements
from serving.hospital import codes
from serving.hospital.seg import Algorithm

DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DICOM_UID = "urn:dicom:uid"

COMPONENTS = {  # measurement -> (code, display, unit)
    "vcdr": ("vertical-cup-to-disc-ratio", "Vertical cup-to-disc ratio of the optic disc", "1"),
    "hcdr": ("horizontal-cup-to-disc-ratio", "Horizontal cup-to-disc ratio of the optic disc", "1"),
    "area_cdr": ("area-cup-to-disc-ratio", "Area cup-to-disc ratio of the optic disc", "1"),
    "rim_to_disc": ("rim-to-disc-ratio", "Minimum rim-to-disc ratio (DDLS) of the optic disc", "1"),
}


def _coding(code: str, display: str) -> dict:
    return {"system": codes.MEASUREMENT_SYSTEM, "code": code, "display": display}


def _sct(triple: tuple[str, str, str]) -> dict:
    scheme, value, meaning = triple
    return {"system": codes.FHIR_SYSTEM[scheme], "code": value, "display": meaning}


def _ratio(value: float) -> dict:
    return {"value": value, "unit": "1", "system": codes.UCUM, "code": "1"}


def _pixels(value: float) -> dict:
    return {"value": value, "unit": "pixels", "system": codes.UCUM, "code": "{pixels}"}


def _uid(uid: str, kind: str | None, display: str) -> dict:
    reference = {"identifier": {"system": DICOM_UID, "value": f"urn:oid:{uid}"}, "display": display}
    return {**reference, "type": kind} if kind else reference


def build_observation(measurements: Measurements | None, algorithm: Algorithm, *,
                      source: SourceInstance | None = None, laterality: Laterality | None = None,
                      patient_id: str | None = None, seg_sop_instance_uid: str | None = None,
                      absent_reason: str = "no optic disc was found",
                      issued: dt.datetime | None = None):
    """The Observation (a validated `fhir.resources.observation.Observation`). `measurements` None: no value,
    a data-absent reason saying `absent_reason` (no disc found; a version without a cup model)."""
    from fhir.resources.observation import Observation

    laterality = laterality if laterality is not None else (measurements.laterality if measurements else None)
    subject = ({"type": "Patient", "identifier": {"value": patient_id}} if patient_id
               else {"display": "the patient of the source study"})
    document: dict = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [_coding("optic-nerve-head-measurements", "Optic nerve head measurements")],
                 "text": "Optic disc and cup measurements from a fundus photograph"},
        "subject": subject,
        "issued": (issued or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "method": {"text": f"automated segmentation of the fundus photograph by {algorithm.label}"},
        "device": {"display": f"fundus-seg {algorithm.label} (software {algorithm.software_version})"},
    }
    if laterality is not None:
        document["contained"] = [{
            "resourceType": "BodyStructure", "id": "optic-nerve-head",
            "includedStructure": [{"structure": {"coding": [_sct(codes.OPTIC_DISC)]},
                                   "laterality": {"coding": [_sct(codes.LATERALITY[laterality])]}}],
            "patient": subject,
        }]
        document["bodyStructure"] = {"reference": "#optic-nerve-head"}
    else:
        document["bodySite"] = {"coding": [_sct(codes.OPTIC_DISC)]}
    derived = []
    if source is not None:
        derived.append(_uid(source.study_instance_uid, "ImagingStudy", "the source DICOM study"))
    if seg_sop_instance_uid is not None:
        derived.append(_uid(seg_sop_instance_uid, None, "the DICOM Segmentation of the optic disc and cup"))
    if derived:
        document["derivedFrom"] = derived
    if measurements is None:
        document["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT, "code": "not-applicable"}],
                                        "text": absent_reason}
        return Observation.model_validate(document)
    document["valueQuantity"] = _ratio(measurements.vcdr)
    components = [{"code": {"coding": [_coding(code, display)]}, "valueQuantity": _ratio(getattr(measurements, key))}
                  for key, (code, display, _) in COMPONENTS.items() if key != "vcdr"]
    for side, width in measurements.rim_width_px.to_dict().items():
        components.append({"code": {"coding": [_coding(f"rim-width-{side}", f"Neuroretinal rim width, {side}")]},
                           "valueQuantity": _pixels(width)})
    if measurements.isnt_holds is not None:
        components.append({"code": {"coding": [_coding("isnt-rule", "Neuroretinal rim follows the ISNT rule")]},
                           "valueBoolean": measurements.isnt_holds})
    components.append({"code": {"coding": [_coding("disc-vertical-diameter", "Optic disc vertical diameter")]},
                       "valueQuantity": _pixels(measurements.disc_vertical_px)})
    document["component"] = components
    return Observation.model_validate(document)


def observation_json(observation) -> str:
    return observation.model_dump_json(exclude_none=True, indent=2)
