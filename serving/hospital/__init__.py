"""Hospital integration: DICOM Segmentation objects and FHIR Observations of an answer (the DICOM input is
`preprocessing.dicom`; the C-STORE node that uses both is `dicom_node`)."""
