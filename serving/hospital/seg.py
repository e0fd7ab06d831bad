"""An answer as a DICOM Segmentation object (highdicom): binary, segment 1 the optic disc, segment 2 the optic cup,
on the source photo's own pixel grid, referencing the source's study, series and SOP instance.

The SEG joins the source's study (its patient and study modules are copied from the source header by highdicom)
in a new series. The disc segment is the whole disc, cup included (segments of a BINARY SEG may overlap), as the
measurements define it. A single-stage version has no cup model, so its SEG has only the disc segment rather than
a cup it never looked for; an empty mask (no disc found) is kept as an empty segment, not left out, so a reader
sees that the algorithm looked. The eye goes in each segment's property-type modifier (CID 244). The algorithm is
named with the model name and version that answered.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocessing.dicom import DicomImage
from serving.hospital import codes

MANUFACTURER = "fundus-seg"
SEG_SERIES_NUMBER = 900  # a series number well apart from a camera's own
SEG_SERIES_DESCRIPTION = "fundus-seg optic disc and cup"
UNKNOWN_SPACING = [1.0, 1.0]  # what highdicom is given when the photo says nothing; removed from the SEG again


@dataclass(frozen=True)
class Algorithm:
    """Who answered: goes into the SEG's algorithm identification and software versions."""

    model_name: str
    model_version: int
    software_version: str = "0.1.0"

    @property
    def label(self) -> str:
        return f"{self.model_name}/{self.model_version}"


def _code(triple: tuple[str, str, str]):
    from highdicom.sr import CodedConcept

    scheme, value, meaning = triple
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def build_segmentation(image: DicomImage, disc: np.ndarray, cup: np.ndarray | None, algorithm: Algorithm, *,
                       series_instance_uid: str | None = None, sop_instance_uid: str | None = None):
    """A `highdicom.seg.Segmentation` of `disc` (and `cup`, None for a single-stage version): H x W bool masks
    on `image`'s grid. UIDs are generated unless given."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    height, width = image.rgb.shape[:2]
    masks = [np.asarray(disc, bool)] + ([] if cup is None else [np.asarray(cup, bool)])
    for mask in masks:
        if mask.shape != (height, width):
            raise ValueError(f"a mask of {mask.shape} for a {height}x{width} image")
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.model_name, family=_code(codes.ARTIFICIAL_INTELLIGENCE), version=str(algorithm.model_version),
        source=MANUFACTURER)
    structures = [("optic disc", codes.OPTIC_DISC), ("optic cup", codes.OPTIC_CUP)][: len(masks)]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=_code(codes.ANATOMICAL_STRUCTURE),
            segmented_property_type=_code(code), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification, tracking_uid=generate_uid(), tracking_id=label,
            anatomic_regions=[_code(codes.OPTIC_DISC)])
        for number, (label, code) in enumerate(structures, start=1)
    ]
    if image.laterality is not None:
        for description in descriptions:
            property_type = description.SegmentedPropertyTypeCodeSequence[0]
            property_type.SegmentedPropertyTypeModifierCodeSequence = [_code(codes.LATERALITY[image.laterality])]
    source = _stand_in(image)
    labels = np.stack(masks, axis=-1).astype(np.uint8)[None]  # 1 x H x W x segments
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.label,
        software_versions=algorithm.software_version,
        device_serial_number=algorithm.label,
        content_description="optic disc and cup",
        content_label="OPTIC_DISC_CUP",
        series_description=SEG_SERIES_DESCRIPTION,
        omit_empty_frames=False,
    )
    if image.source.frame is not None:  # the frame of a multi-frame photo that was segmented
        derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
        derivation.SourceImageSequence[0].ReferencedFrameNumber = image.source.frame + 1
    seg.PatientOrientation = image.dataset.get("PatientOrientation", "")  # type 2C: the photo's, often unknown
    if "PixelSpacing" not in image.dataset:  # a photo of unknown pixel spacing: say nothing rather than 1 mm
        del seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    return seg


def _stand_in(image: DicomImage):
    """The source header as highdicom expects it. highdicom reads the pixel measures of any image whose IOD allows
    frames from its functional groups, which only the enhanced IODs have; an Ophthalmic Photography image has a
    multi-frame module but no functional groups, so its Pixel Spacing (if known) is put where highdicom looks, and
    the one frame segmented stands for the image (the SEG references that frame's number)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    source = image.dataset.copy()
    if "NumberOfFrames" in source:
        source.NumberOfFrames = 1
    if "SharedFunctionalGroupsSequence" not in source:
        measures = Dataset()
        measures.PixelMeasuresSequence = Sequence([Dataset()])
        measures.PixelMeasuresSequence[0].PixelSpacing = source.get("PixelSpacing", UNKNOWN_SPACING)
        source.SharedFunctionalGroupsSequence = Sequence([measures])
    return source


def segmentation_bytes(seg) -> bytes:
    """The SEG as a DICOM Part 10 file."""
    import io

    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
