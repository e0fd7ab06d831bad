"""The model version the node answers with, picked up from the repository as `fundus-seg serve` does: the
newest complete version (`saved_model.pb` present), polled every few seconds, loaded off to the side and swapped
in at once, so an image is always segmented by one whole version, never half of two."""
from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fundus_seg.errors import ModelRepositoryError
from fundus_seg.model_repository import LoadedVersion, latest_version, load_version, version_uri
from fundus_seg.storage import Uri, download_dir, is_s3, local_path
from preprocessing.measurements import Laterality
from preprocessing.transform import preprocess_image
from preprocessing.two_stage import TwoStageAnswer, finish_single_stage, segment_image

log = logging.getLogger("dicom_node")


@dataclass(frozen=True)
class Served:
    number: int
    version: LoadedVersion

    @property
    def two_stage(self) -> bool:
        return self.version.segment is not None

    def answer(self, rgb: np.ndarray, laterality: Laterality | None) -> TwoStageAnswer:
        """The version's own pipeline (its card's preprocessing and thresholds), in this process."""
        version = self.version
        if version.segment is not None:
            return segment_image(rgb, version.predict, version.segment, version.card.two_stage(), laterality)
        model_input, box = preprocess_image(rgb, version.card.preprocess)
        probability = version.predict(model_input[None])[0]
        return finish_single_stage(probability, box, model_input, version.card.threshold, laterality)


class ModelWatcher:
    """Holds the served version; `poll()` loads a newer one (local folder or s3://) and swaps it in."""

    def __init__(self, model_repo: Uri, model_name: str, loader: Callable[[Path], LoadedVersion] = load_version):
        self.model_repo, self.model_name, self._loader = model_repo, model_name, loader
        self._served: Served | None = None
        self._cache = Path(tempfile.mkdtemp(prefix="fundus-seg-node-")) if is_s3(model_repo) else None
        self._stop = threading.Event()

    @property
    def served(self) -> Served | None:
        return self._served  # one reference read: the caller keeps that version for the whole image

    def poll(self) -> bool:
        """Load the latest version if it is newer than the served one; True when it swapped."""
        number = latest_version(self.model_repo, self.model_name)
        if number is None or (self._served is not None and number <= self._served.number):
            return False
        uri = version_uri(self.model_repo, self.model_name, number)
        directory = local_path(uri) if self._cache is None else download_dir(uri, self._cache / str(number))
        version = self._loader(Path(directory))
        self._served = Served(number, version)
        log.info("serving %s version %d (%s)", self.model_name, number, "two-stage" if version.segment else
                 "single-stage")
        return True

    def run(self, interval_s: float) -> None:
        """Poll until `stop()`; a version that fails to load is logged and retried at the next poll."""
        while not self._stop.wait(interval_s):
            try:
                self.poll()
            except (ModelRepositoryError, OSError, ValueError) as exc:
                log.warning("model repository: %s", exc)

    def stop(self) -> None:
        self._stop.set()
