"""The codes the DICOM and FHIR outputs use, each with where it comes from (one place, so both outputs agree).

- Optic disc: SNOMED CT 81016008 "Optic nerve head" (the optic disc structure), as DICOM lists it in CID 4209
  "Ophthalmic Anatomic Structures" (pydicom's copy of PS3.16: `codes.SCT.OpticNerveHead`).
- Optic cup: no DICOM context group and no SNOMED CT concept that we could verify offline names the physiological
  cup of the optic disc, so the cup is FMA 77664 "Optic cup" (the Foundational Model of Anatomy, a coding scheme
  DICOM recognises as "FMA" in PS3.16 Table 8-1; the identifier as Wikipedia's "Optic cup (anatomical)" gives it).
  A site that maps to a SNOMED CT extension changes it here.
- Category: SNOMED CT 91723000 "Anatomical structure" (CID 7150 "Segmentation Property Categories").
- Laterality: SNOMED CT 24028007 "Right" and 7771000 "Left" (CID 244 "Laterality"), the segment's property-type
  modifier in DICOM and the body structure's laterality in FHIR.
- Algorithm family: DCM 123110 "Artificial Intelligence" (CID 7162).
- The measurements have no standard code that fits an automated measurement on a photograph: LOINC's
  cup-to-disc ratio terms (e.g. 71485-7 "Right optic nerve Cup-disc ratio by Ophthalmoscopy") are per eye, by
  ophthalmoscopy and not vertical, so claiming one would misstate the method. They are coded in this project's own
  code system (`MEASUREMENT_SYSTEM`), with LOINC-style plain names, for a site to map.
"""
from __future__ import annotations

SNOMED = "http://snomed.info/sct"
FMA = "http://purl.org/sig/ont/fma"  # the FMA's URI as in HL7's terminology list
MEASUREMENT_SYSTEM = "urn:fundus-seg:fhir:CodeSystem:optic-nerve-head-measurements"  # ours: a site maps it
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"

OPTIC_DISC = ("SCT", "81016008", "Optic nerve head")
OPTIC_CUP = ("FMA", "77664", "Optic cup")
ANATOMICAL_STRUCTURE = ("SCT", "91723000", "Anatomical structure")
LATERALITY = {"R": ("SCT", "24028007", "Right"), "L": ("SCT", "7771000", "Left")}
ARTIFICIAL_INTELLIGENCE = ("DCM", "123110", "Artificial Intelligence")
FHIR_SYSTEM = {"SCT": SNOMED, "FMA": FMA}
