
import numpy as np
import pytest

from preprocessing.datasets import load_split, mix, read_manifest, validate_dataset
from preprocessing.errors import DatasetError
from tests.helpers import DRISHTI, encode, synthetic_fundus


def make_dataset(root, n=4, split="train", first_seed=0):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["id,split,image,disc_mask,cup_mask,label"]
    for i in range(n):
        rgb, mask = synthetic_fundus(seed=first_seed + i)
        (root / "images" / f"im{i}.png").write_bytes(encode(rgb))
        (root / "masks" / f"im{i}_disc.png").write_bytes(encode(mask.astype(np.uint8) * 255))
        rows.append(f"im{i},{split},images/im{i}.png,masks/im{i}_disc.png,,normal")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_real_manifests_parse_with_official_splits():
    records = read_manifest(DRISHTI)
    assert len(records) == 101
    assert sum(r.split == "train" for r in records) == 50


def test_load_split_and_mix_with_replication(tmp_path):
    small = load_split(make_dataset(tmp_path / "a", n=2), "train")
    large = load_split(make_dataset(tmp_path / "b", n=6, first_seed=100), "train")
    assert small.images.shape == (2, 128, 128, 3) and small.masks.shape == (2, 128, 128, 1)
    images, masks = mix([small, large], seed=0)
    assert len(images) == len(masks) == 12  # the small set is replicated up to 6
    from_small = sum(any(np.array_equal(img, s) for s in small.images) for img in images)
    assert from_small == 6


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("id,split,image\nx,train,images/x.png\n", "missing column"),
        ("id,split,image,disc_mask\nim0,train,images/im0.png,masks/im0_disc.png\nim0,train,images/im0.png,masks/im0_disc.png\n", "duplicate id"),
        ("id,split,image,disc_mask\nim0,validation,images/im0.png,masks/im0_disc.png\n", "split must be one of"),
        ("id,split,image,disc_mask\nim0,train,/etc/passwd,masks/im0_disc.png\n", "relative path"),
        ("id,split,image,disc_mask\n", "no rows"),
    ],
)
def test_bad_manifest_rows_are_listed(tmp_path, manifest, message):
    root = make_dataset(tmp_path / "d", n=1)
    (root / "manifest.csv").write_text(manifest)
    with pytest.raises(DatasetError, match=message):
        read_manifest(root)


def test_validate_lists_every_bad_file(tmp_path):
    root = make_dataset(tmp_path / "d", n=4)
    (root / "images" / "im0.png").unlink()
    (root / "images" / "im1.png").write_bytes(b"garbage")
    rgb, _ = synthetic_fundus(height=100, width=100)
    (root / "masks" / "im2_disc.png").write_bytes(encode(rgb[..., 0]))
    with pytest.raises(DatasetError) as error:
        validate_dataset(root)
    text = str(error.value)
    assert "3 problem(s)" in text and "id im0: missing file" in text and "id im1" in text and "id im2: mask is 100x100" in text
    with pytest.raises(DatasetError, match="no manifest.csv"):
        read_manifest(tmp_path)
