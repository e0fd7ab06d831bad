"""serving.hospital.seg: SEG objects of the experts' disc and cup on real photos made DICOM, checked with dciodvfy,
read back with dcmdump and highdicom."""
from __future__ import annotations

import io

import numpy as np
import pytest

from preprocessing.dicom import decode_dicom
from serving.hospital.seg import Algorithm, build_segmentation, segmentation_bytes
from tests.helpers import fundus_dicom
from tests.serving.hospital.helpers import dciodvfy, dcmdump, real_photo

SYNTAXES = {"explicit VR": "1.2.840.10008.1.2.1", "JPEG baseline": "1.2.840.10008.1.2.4.50",
            "JPEG-LS": "1.2.840.10008.1.2.4.80", "JPEG 2000": "1.2.840.10008.1.2.4.91"}


@pytest.fixture(scope="module")
def photo():
    return real_photo()


@pytest.mark.parametrize("syntax", SYNTAXES.values(), ids=SYNTAXES.keys())
def test_a_seg_of_disc_and_cup_is_valid_and_reads_back(photo, syntax, tmp_path):
    import highdicom as hd

    rgb, disc, cup = photo
    image = decode_dicom(fundus_dicom(rgb, syntax))
    path = tmp_path / "seg.dcm"
    path.write_bytes(segmentation_bytes(build_segmentation(image, disc, cup, Algorithm("optic-disc", 7))))
    assert dciodvfy(path) == []
    dump = dcmdump(path)
    for text in ("SegmentationStorage", "[BINARY]", "[optic disc]", "[optic cup]", "[81016008]", "[77664]",
                 "[91723000]", "[24028007]", "[123110]", "[optic-disc/7]", image.source.sop_instance_uid,
                 image.source.study_instance_uid, image.source.series_instance_uid):
        assert text in dump, text
    seg = hd.seg.segread(io.BytesIO(path.read_bytes()))
    assert seg.StudyInstanceUID == image.source.study_instance_uid
    assert seg.PatientID == image.dataset.PatientID  # the patient module is the source's
    assert seg.SeriesInstanceUID != image.source.series_instance_uid
    masks = seg.get_pixels_by_source_instance([image.source.sop_instance_uid], segment_numbers=[1, 2])
    assert np.array_equal(masks[0, ..., 0].astype(bool), disc)
    assert np.array_equal(masks[0, ..., 1].astype(bool), cup)
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == ["81016008", "77664"]


def test_left_eye_single_stage_and_empty_answers(photo, tmp_path):
    import highdicom as hd

    rgb, disc, _ = photo
    image = decode_dicom(fundus_dicom(rgb[:300, :400], "1.2.840.10008.1.2.4.50", laterality="L"))
    empty = np.zeros(image.rgb.shape[:2], bool)
    path = tmp_path / "seg.dcm"
    path.write_bytes(segmentation_bytes(build_segmentation(image, empty, None, Algorithm("optic-disc", 1))))
    assert dciodvfy(path) == []
    seg = hd.seg.segread(io.BytesIO(path.read_bytes()))
    assert len(seg.SegmentSequence) == 1  # no cup model: no cup segment
    modifier = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence
    assert modifier[0].CodeValue == "7771000"  # Left
    assert "[7771000]" in dcmdump(path)
    assert not seg.get_pixels_by_source_instance([image.source.sop_instance_uid], segment_numbers=[1]).any()


def test_the_chosen_frame_of_a_multi_frame_photo_is_referenced(photo, tmp_path):
    rgb, disc, cup = photo
    image = decode_dicom(fundus_dicom(rgb, frames=3), frame=1)
    path = tmp_path / "seg.dcm"
    path.write_bytes(segmentation_bytes(build_segmentation(image, disc, cup, Algorithm("optic-disc", 7))))
    assert dciodvfy(path) == []
    assert "(0008,1160) IS [2]" in dcmdump(path, "0008,1160")  # Referenced Frame Number, 1-based


def test_a_mask_of_another_size_is_refused(photo):
    rgb, disc, cup = photo
    image = decode_dicom(fundus_dicom(rgb[:100, :100]))
    with pytest.raises(ValueError, match="for a 100x100 image"):
        build_segmentation(image, disc, cup, Algorithm("optic-disc", 7))
