"""Dataset URIs as local folders: object storage is downloaded once into a cache, local paths are used as they are.

Training, replay and evaluation all read folders (`preprocessing.datasets`); this module is the
only place that knows a dataset may live in object storage. A cached copy is keyed by the URI and
the content of its `manifest.csv`, so a dataset pushed again with new rows is downloaded again,
while a restarted Job on the same node (or a second run) reuses what is already there.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from fundus_seg import storage
from preprocessing.datasets import Samples, load_split, read_manifest
from preprocessing.errors import DatasetError
from preprocessing.transform import PreprocessConfig

MANIFEST = "manifest.csv"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fundus-seg" / "datasets"


def dataset_name(uri: str) -> str:
    """The name used in metrics: the URI's last path segment (`s3://b/datasets/drishti-gs1` -> `drishti-gs1`)."""
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dataset:
    uri: str
    """Where the dataset lives, as given (recorded in metrics.json)."""
    folder: Path
    """A local folder with manifest.csv, images/, masks/."""

    @property
    def name(self) -> str:
        return dataset_name(self.uri)

    def split_size(self, split: str) -> int:
        return sum(r.split == split for r in read_manifest(self.folder))

    def load_crops(self, split: str, crop, mirror: bool = False):
        """Stage 2's crops around the expert discs of one split (`training_job.crop_data`)."""
        from training_job.crop_data import load_crops

        try:
            samples = load_crops(self.folder, split, crop, mirror)
        except DatasetError as exc:
            raise DatasetError(_in_terms_of(exc, self.folder, self.uri)) from None
        samples.name = self.name
        return samples

    def load(self, split: str, config: PreprocessConfig) -> Samples:
        """The preprocessed split, named after the URI; errors name the URI, not the cache folder."""
        try:
            samples = load_split(self.folder, split, config)
        except DatasetError as exc:
            raise DatasetError(_in_terms_of(exc, self.folder, self.uri)) from None
        samples.name = self.name
        return samples


def _in_terms_of(exc: Exception, folder: Path, uri: str) -> str:
    return str(exc).replace(str(folder), uri.rstrip("/"))


@dataclass(frozen=True)
class DataCache:
    root: Path

    def fetch(self, uri: str) -> Dataset:
        """A checked local folder for `uri`; DatasetError (naming the URI) when it is not a usable dataset."""
        uri = str(uri)
        folder = self._download(uri) if storage.is_s3(uri) else storage.local_path(uri)
        try:
            read_manifest(folder)
        except DatasetError as exc:
            raise DatasetError(_in_terms_of(exc, folder, uri)) from None
        return Dataset(uri, folder)

    def fetch_all(self, uris: tuple[str, ...] | list[str]) -> list[Dataset]:
        return [self.fetch(uri) for uri in dict.fromkeys(uris)]

    def _download(self, uri: str) -> Path:
        try:
            manifest = storage.read_bytes(storage.join(uri, MANIFEST))
        except FileNotFoundError:
            raise DatasetError(f"{uri}: no {MANIFEST} there (upload datasets with `fundus-seg data push DIR URI`)") from None
        key = hashlib.sha256(uri.encode() + b"\0" + manifest).hexdigest()[:16]
        folder = self.root / f"{dataset_name(uri)}-{key}"
        if not folder.is_dir():
            try:
                storage.download_dir(uri, folder)
            except FileExistsError:  # another process on this node finished first: same content
                pass
        return folder
