"""The model repository contract, in one place: layout, version numbers, signatures, publishing.

A repository is ``<repo>/<model>/<version>/`` (TF Serving's layout) on a local folder or
``s3://`` (through `fundus_seg.storage`). A version is a directory named by an int64 that holds
``saved_model.pb`` (the file TF Serving looks for), ``variables/``, ``model.keras`` (for
incremental training) and ``metrics.json`` (its model card, `fundus_seg.model_card`). The
SavedModel's signatures are the contract with every predictor:

* ``serving_default``: input ``images`` N x S x S x 3 (preprocessed), output
  ``disc_probability`` float32 N x S x S x 1. ``images`` is of the card's ``input_dtype``: ``uint8``
  (the equalised bytes, scaled by 1/255 inside the graph: a quarter of float32's bytes on every hop,
  and exact, since the preprocessing's output is bytes / 255) for versions published since it
  existed, ``float32`` in [0, 1] before (`signature_input` converts either way);
* ``model_card``: no inputs, output ``card``: the card as JSON, so whoever serves the version
  through TF Serving prepares its input the way it was trained;
* two-stage versions (a card with ``config.segment``) add ``segment``: input ``images`` (the same dtype)
  N x S x S x 3 (disc-centred crops, `preprocessing.disc_crop`), outputs ``disc_probability`` and
  ``cup_probability`` float32 N x S x S x 1. ``serving_default`` is then stage 1, the locator. One
  SavedModel holds both stages, so a canary, a promotion or a rollback moves them together.

Two-stage versions hold ``segment.keras`` (stage 2's Keras model) beside ``model.keras`` (stage 1's).

A version counts only once its ``saved_model.pb`` exists; names starting with ``.`` (``.tmp-*``
staging) and other non-version names are ignored. ``publish_version`` never overwrites a version:

* local -- the model is copied into ``<repo>/<model>/.tmp-<uuid>/`` and ``os.rename``\\ d to
  ``<version>/``. The rename is atomic and fails when the target already holds files, so a
  reader sees either no version directory or a complete one, and of two concurrent publishers
  the loser moves on to the next number.
* S3 -- there is no rename. The publisher first claims the version with a create-only write of
  ``<version>/.claim`` (``If-None-Match: *``) and checks the prefix holds nothing else, then
  uploads every file except ``saved_model.pb``, and ``saved_model.pb`` last (again
  create-only). Until that last write the version is invisible to ``list_versions`` and to TF
  Serving; the claim stops two publishers from mixing their files in one version. An endpoint
  that rejects conditional writes gets a logged warning and a check-then-write plus read-back
  of the claim: fine for one publisher at a time, not a guarantee under a race.

With ``run_id`` given, ``metrics.json`` of the published version records ``"run_id"``, and a
publish whose run id is already recorded by a complete version returns that version instead of
publishing a duplicate (a rerun of the same training Job is idempotent). Two simultaneous
publishers of one run are serialised by a create-only ``.run-<id>.claim``: one publishes, the
other returns its version. A crash mid-publish leaves only an
invisible ``.tmp-*`` directory (local) or a claimed, incomplete version (S3), which later
publishes skip; ``delete_prefix`` removes either.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fundus_seg.errors import ModelRepositoryError
from fundus_seg.model_card import INPUT_DTYPES, ModelCard
from fundus_seg.storage import (
    STAGING_PREFIX,
    S3Storage,
    Uri,
    _rename_into_place,
    _walk,
    exists,
    is_s3,
    join,
    list_dir,
    local_path,
    read_bytes,
    read_json,
    upload_dir,
    write_bytes,
)

log = logging.getLogger(__name__)

SAVED_MODEL = "saved_model.pb"
CARD_FILE = "metrics.json"
KERAS_FILE = "model.keras"
CLAIM = ".claim"
INT64_MAX = 2**63 - 1

SEGMENT_KERAS_FILE = "segment.keras"

SERVING_SIGNATURE, INPUT_KEY, OUTPUT_KEY = "serving_default", "images", "disc_probability"
CARD_SIGNATURE, CARD_OUTPUT = "model_card", "card"
SEGMENT_SIGNATURE, CUP_OUTPUT_KEY = "segment", "cup_probability"
SEGMENT_OUTPUTS = (OUTPUT_KEY, CUP_OUTPUT_KEY)


def signature_input(batch: np.ndarray, input_dtype: str) -> np.ndarray:
    """A preprocessed batch (float32 in [0, 1], bytes / 255) as a version whose card says `input_dtype` takes
    it: uint8 gives back the bytes exactly (rounding undoes the division), float32 is passed on."""
    if input_dtype == "uint8":
        return np.rint(np.multiply(batch, 255.0, dtype=np.float32)).astype(np.uint8)
    if input_dtype == "float32":
        return np.asarray(batch, dtype=np.float32)
    raise ValueError(f"input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}")



def version_uri(model_repo_uri: Uri, model_name: str, version: int) -> str:
    return join(model_repo_uri, model_name, str(version))


def version_number(name: str) -> int | None:
    """The version a directory name stands for, or None: ASCII digits only, within int64 (TF
    Serving's version type). '.tmp-3', 'latest', '٣' or a 20-digit name are not versions."""
    if not (name.isascii() and name.isdigit()) or len(name.lstrip("0")) > 19:
        return None
    number = int(name)
    return number if number <= INT64_MAX else None


def _numeric(names: Iterable[str]) -> list[int]:
    return sorted(n for n in map(version_number, names) if n is not None)


def list_versions(model_repo_uri: Uri, model_name: str) -> list[int]:
    """Complete versions, ascending: numeric directories holding ``saved_model.pb``."""
    candidates = _numeric(list_dir(join(model_repo_uri, model_name)))
    return [v for v in candidates if exists(join(version_uri(model_repo_uri, model_name, v), SAVED_MODEL))]


def latest_version(model_repo_uri: Uri, model_name: str) -> int | None:
    versions = list_versions(model_repo_uri, model_name)
    return versions[-1] if versions else None


def next_version(model_repo_uri: Uri, model_name: str) -> int:
    """One above every numeric name, incomplete ones included: those may be publishes in flight."""
    return max(_numeric(list_dir(join(model_repo_uri, model_name))), default=0) + 1


def version_for_run(model_repo_uri: Uri, model_name: str, run_id: str) -> int | None:
    """The complete version whose metrics.json records ``run_id``, if any (newest first)."""
    for v in reversed(list_versions(model_repo_uri, model_name)):
        try:
            if read_json(join(version_uri(model_repo_uri, model_name, v), CARD_FILE)).get("run_id") == run_id:
                return v
        except (FileNotFoundError, ValueError, AttributeError):
            continue
    return None


def _metrics_with_run_id(local_dir: Path, run_id: str | None) -> bytes | None:
    """metrics.json content to publish in place of the local one, or None to copy it as is."""
    if run_id is None:
        return None
    path = local_dir / CARD_FILE
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    return json.dumps({**metrics, "run_id": run_id}, indent=2, sort_keys=True).encode() + b"\n"


_MAX_ATTEMPTS = 100


def _candidates(model_uri: str, version: int | None) -> Iterator[int]:
    """The versions to try: the requested one, or the next free number, always moving forward."""
    if version is not None:
        yield version
        return
    tried = 0
    for _ in range(_MAX_ATTEMPTS):
        tried = max(tried + 1, max(_numeric(list_dir(model_uri)), default=0) + 1)
        yield tried


def _publish_local(local_dir: Path, model_uri: str, version: int | None, run_id: str | None) -> int:
    metrics = _metrics_with_run_id(local_dir, run_id)
    model_dir = local_path(model_uri)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    try:
        shutil.copytree(local_dir, staging)
        if metrics is not None:
            (staging / CARD_FILE).write_bytes(metrics)
        for candidate in _candidates(model_uri, version):
            try:
                _rename_into_place(staging, model_dir / str(candidate))
                return candidate
            except FileExistsError:
                continue
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    raise _taken(model_uri, version)


def _claim_s3(store: S3Storage, version_dir: str, run_id: str | None) -> bool:
    """Own ``version_dir``: create its claim object and make sure nothing else is there."""
    token = uuid.uuid4().hex
    claim_uri = join(version_dir, CLAIM)
    if not store.put_if_absent(claim_uri, json.dumps({"publisher": token, "run_id": run_id}).encode()):
        return False
    if json.loads(store.read_bytes(claim_uri)).get("publisher") != token:
        return False  # lost a race on an endpoint without conditional writes
    return store.list_dir(version_dir) == [CLAIM]  # else: files from someone who did not claim


def _publish_s3(local_dir: Path, model_uri: str, version: int | None, run_id: str | None, progress: bool) -> int:
    metrics = _metrics_with_run_id(local_dir, run_id)
    store = S3Storage()
    for candidate in _candidates(model_uri, version):
        target = join(model_uri, str(candidate))
        if not _claim_s3(store, target, run_id):
            continue
        last = {SAVED_MODEL} | ({CARD_FILE} if metrics is not None else set())
        rest = [n for n in _walk(local_dir) if n not in last]
        upload_dir(local_dir, target, files=rest, progress=progress)
        if metrics is not None:
            store.write_bytes(join(target, CARD_FILE), metrics)
        if not store.put_if_absent(join(target, SAVED_MODEL), (local_dir / SAVED_MODEL).read_bytes()):
            raise ModelRepositoryError(f"{target}: saved_model.pb appeared in a version this publisher had claimed")
        return candidate
    raise _taken(model_uri, version)


def _taken(model_uri: str, version: int | None) -> ModelRepositoryError:
    if version is not None:
        return ModelRepositoryError(f"{model_uri}/{version} already exists; versions are never overwritten")
    return ModelRepositoryError(f"{model_uri}: no free version after {_MAX_ATTEMPTS} attempts")


RUN_CLAIM_WAIT_S = 120.0
RUN_CLAIM_STALE_S = 15 * 60.0


def _run_claim_uri(model_repo_uri: Uri, model_name: str, run_id: str) -> str:
    return join(model_repo_uri, model_name, f".run-{run_id}{CLAIM}")


def _put_if_absent(uri: str, data: bytes) -> bool:
    """Create `uri` holding `data` unless it exists, in one step: nobody ever reads it half-written."""
    if is_s3(uri):
        return S3Storage().put_if_absent(uri, data)
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{STAGING_PREFIX}{uuid.uuid4().hex}")
    staging.write_bytes(data)
    try:
        os.link(staging, path)  # fails when `path` exists: the atomic create-with-content
        return True
    except FileExistsError:
        return False
    finally:
        staging.unlink(missing_ok=True)


def _claim_run(model_repo_uri: Uri, model_name: str, run_id: str) -> int | None:
    """Make this process the one publisher of `run_id`, or return the version that run already has.

    The check for an existing version and the claim are one create-only write, so two copies of
    a Job publishing at once publish one version: the second waits for the first's version. A
    claim left by a publisher that died is taken over once it is RUN_CLAIM_STALE_S old."""
    uri = _run_claim_uri(model_repo_uri, model_name, run_id)
    deadline = time.monotonic() + RUN_CLAIM_WAIT_S
    while True:
        if (done := version_for_run(model_repo_uri, model_name, run_id)) is not None:
            return done
        record = json.dumps({"publisher": uuid.uuid4().hex, "at": time.time()}).encode()
        if _put_if_absent(uri, record):
            return None
        try:
            claimed_at = float(json.loads(read_bytes(uri)).get("at", 0))
        except FileNotFoundError:
            continue  # taken over and gone again: look once more
        except (ValueError, TypeError, AttributeError):
            claimed_at = time.time()  # unreadable: count it as fresh, never as abandoned
        if time.time() - claimed_at > RUN_CLAIM_STALE_S:
            log.warning("run %s: taking over a publish claim from %s (its publisher stopped)", run_id,
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claimed_at)))
            write_bytes(uri, record)
            return None
        if time.monotonic() > deadline:
            raise ModelRepositoryError(f"run {run_id} is being published by another process (claimed "
                                       f"{time.time() - claimed_at:.0f}s ago); retry once it is done")
        time.sleep(0.5)


def publish_version(local_saved_model_dir: Uri, model_repo_uri: Uri, model_name: str, *,
                    version: int | None = None, run_id: str | None = None, progress: bool = False) -> int:
    """Publish a SavedModel folder as a new version atomically; returns the version number.

    ``version=None`` takes the next free number (and the one after when another publisher wins
    the race); an explicit ``version`` that exists raises ModelRepositoryError. With ``run_id``,
    an existing complete version of the same run is returned instead of publishing again, also
    when another process publishes the same run at the same time (see `_claim_run`).
    See the module docstring for what "atomic" means on each backend.
    """
    local_dir = Path(local_saved_model_dir)
    if not (local_dir / SAVED_MODEL).is_file():
        raise ModelRepositoryError(f"{local_dir}: not a SavedModel folder (no {SAVED_MODEL})")
    model_uri = join(model_repo_uri, model_name)
    if run_id is not None and (done := _claim_run(model_repo_uri, model_name, run_id)) is not None:
        log.info("run %s is already published as %s version %d", run_id, model_name, done)
        return done
    if is_s3(model_uri):
        published = _publish_s3(local_dir, model_uri, version, run_id, progress)
    else:
        published = _publish_local(local_dir, model_uri, version, run_id)
    log.info("published %s version %d", model_uri, published)
    return published


# ---------------------------------------------------------------------------------------------
# Reading a version


def read_card(model_repo_uri: Uri, model_name: str, version: int) -> ModelCard:
    """A published version's card (its metrics.json); ModelRepositoryError when missing or unusable."""
    uri = join(version_uri(model_repo_uri, model_name, version), CARD_FILE)
    try:
        return ModelCard.from_dict(read_json(uri))
    except FileNotFoundError:
        raise ModelRepositoryError(f"{uri}: version {version} has no model card") from None
    except ValueError as exc:  # ModelCardError and JSON errors alike
        raise ModelRepositoryError(f"{uri}: {exc}") from None


def local_version(path: Path) -> Path:
    """`REPO/NAME/VERSION` as given, or the latest version under `REPO/NAME`."""
    if (path / SAVED_MODEL).is_file():
        return path
    versions = _numeric(p.name for p in path.glob("*") if (p / SAVED_MODEL).is_file())
    if not versions:
        raise ModelRepositoryError(f"{path}: no model version found (expected {path}/<version>/{SAVED_MODEL})")
    return path / str(versions[-1])


@dataclass(frozen=True)
class LoadedVersion:
    """A version ready to run in this process: its card and its signatures as numpy functions."""

    path: Path
    card: ModelCard
    predict: Callable[[np.ndarray], np.ndarray]  # serving_default: N x S x S x 3 float32 -> N x S x S x 1
    parameters: int
    segment: Callable[[np.ndarray], np.ndarray] | None = None  # two-stage: N x S x S x 3 -> N x S x S x 2 (disc, cup)


def load_version(version_dir: Uri) -> LoadedVersion:
    """Load a local version with TensorFlow; its card comes from the SavedModel (metrics.json for
    versions from before cards)."""
    import tensorflow as tf

    path = Path(version_dir)
    if not (path / SAVED_MODEL).is_file():
        raise ModelRepositoryError(f"{path}: not a SavedModel version (no {SAVED_MODEL})")
    loaded = tf.saved_model.load(str(path))
    if CARD_SIGNATURE in loaded.signatures:
        card = ModelCard.from_json(loaded.signatures[CARD_SIGNATURE]()[CARD_OUTPUT].numpy())
    elif (path / CARD_FILE).is_file():
        card = ModelCard.from_json((path / CARD_FILE).read_text())
    else:
        raise ModelRepositoryError(f"{path}: no model card (neither a {CARD_SIGNATURE} signature nor {CARD_FILE})")
    signature = loaded.signatures[SERVING_SIGNATURE]

    def predict(batch: np.ndarray) -> np.ndarray:
        return signature(**{INPUT_KEY: tf.constant(signature_input(batch, card.input_dtype))})[OUTPUT_KEY].numpy()

    segment = None
    if card.segment is not None:
        if SEGMENT_SIGNATURE not in loaded.signatures:
            raise ModelRepositoryError(f"{path}: a two-stage card but no {SEGMENT_SIGNATURE!r} signature")
        stage2 = loaded.signatures[SEGMENT_SIGNATURE]

        def segment(batch: np.ndarray) -> np.ndarray:
            outputs = stage2(**{INPUT_KEY: tf.constant(signature_input(batch, card.input_dtype))})
            return np.concatenate([outputs[key].numpy() for key in SEGMENT_OUTPUTS], axis=-1)

    parameters = sum(int(np.prod(v.shape)) for v in getattr(loaded, "variables", []))
    return LoadedVersion(path, card, predict, parameters, segment)
