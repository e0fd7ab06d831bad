"""serving.hospital.fhir: the experts' measurements of a real photo as a FHIR R5 Observation, validated by
parsing its JSON back into the fhir.resources model."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from preprocessing.dicom import decode_dicom
from preprocessing.measurements import measure
from serving.hospital.fhir import build_observation, observation_json
from serving.hospital.seg import Algorithm
from tests.helpers import fundus_dicom
from tests.serving.hospital.helpers import real_photo


@pytest.fixture(scope="module")
def photo():
    return real_photo()


def _parsed(observation):
    from fhir.resources.observation import Observation

    text = observation_json(observation)
    return Observation.model_validate_json(text), json.loads(text)


def test_the_measurements_of_a_right_eye_as_an_observation(photo):
    rgb, disc, cup = photo
    image = decode_dicom(fundus_dicom(rgb[:64, :64]))
    measurements = measure(disc, cup, "R")
    observation = build_observation(measurements, Algorithm("optic-disc", 7), source=image.source,
                                    patient_id=image.dataset.PatientID, seg_sop_instance_uid="1.2.826.0.1.99",
                                    issued=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    model, document = _parsed(observation)
    assert model.status == "preliminary" and float(model.valueQuantity.value) == measurements.vcdr
    assert document["valueQuantity"] == {"value": measurements.vcdr, "unit": "1", "system": "http://unitsofmeasure.org",
                                         "code": "1"}
    components = {c["code"]["coding"][0]["code"]: c for c in document["component"]}
    assert components["horizontal-cup-to-disc-ratio"]["valueQuantity"]["value"] == measurements.hcdr
    assert components["area-cup-to-disc-ratio"]["valueQuantity"]["value"] == measurements.area_cdr
    assert components["rim-to-disc-ratio"]["valueQuantity"]["value"] == measurements.rim_to_disc
    assert components["rim-width-inferior"]["valueQuantity"]["value"] == measurements.rim_width_px.inferior
    assert components["rim-width-nasal"]["valueQuantity"]["value"] == measurements.rim_width_px.nasal
    assert components["isnt-rule"]["valueBoolean"] is measurements.isnt_holds
    [body] = document["contained"]
    assert document["bodyStructure"] == {"reference": "#optic-nerve-head"} and "bodySite" not in document
    structure = body["includedStructure"][0]
    assert structure["structure"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "81016008",
                                                   "display": "Optic nerve head"}
    assert structure["laterality"]["coding"][0]["code"] == "24028007"
    assert document["subject"]["identifier"]["value"] == image.dataset.PatientID
    assert [r["identifier"]["value"] for r in document["derivedFrom"]] == [
        f"urn:oid:{image.source.study_instance_uid}", "urn:oid:1.2.826.0.1.99"]
    assert document["issued"] == "2026-01-01T00:00:00Z"


def test_without_the_eye_the_sectors_are_the_image_sides_and_the_site_has_no_laterality(photo):
    _, disc, cup = photo
    _, document = _parsed(build_observation(measure(disc, cup), Algorithm("optic-disc", 7)))
    codes = {c["code"]["coding"][0]["code"] for c in document["component"]}
    assert {"rim-width-left", "rim-width-right"} <= codes and "isnt-rule" not in codes
    assert document["bodySite"]["coding"][0]["code"] == "81016008" and "contained" not in document


def test_no_measurements_is_a_data_absent_reason_not_a_zero():
    _, document = _parsed(build_observation(None, Algorithm("optic-disc", 1), laterality="L",
                                            absent_reason="this model version segments no cup"))
    assert "valueQuantity" not in document and "component" not in document
    assert document["dataAbsentReason"]["text"] == "this model version segments no cup"
    assert document["contained"][0]["includedStructure"][0]["laterality"]["coding"][0]["code"] == "7771000"


@pytest.mark.parametrize("change", [{"status": None}, {"issued": "yesterday"}, {"valueQuantity": {"value": "abc"}}])
def test_the_validation_bites(photo, change):
    """The model that validates our JSON refuses an Observation without a status, with a bad instant or value."""
    from fhir.resources.observation import Observation
    from pydantic import ValidationError

    _, disc, cup = photo
    _, document = _parsed(build_observation(measure(disc, cup), Algorithm("optic-disc", 7)))
    document = {k: v for k, v in {**document, **change}.items() if v is not None}
    with pytest.raises(ValidationError):
        Observation.model_validate(document)
