"""The one-machine rollout target: TF Serving version labels plus a percent for the transformer.

Writes the two files described in ``serving/rollout/__init__.py`` into the model repository root:
``models.config`` (TF Serving ``ModelServerConfig``; the model's entry pins the stable and canary
versions and labels them ``stable``/``canary``; other models' entries are kept) and
``rollout.json`` (the record of ``serving/rollout/record.py``, for the transformer's split). Each
is written with ``fundus_seg.storage.write_bytes`` (a temporary file in the same folder,
``os.replace``\\ d into place), models.config first: a reader never sees a half-written file, and
the transformer never names a label the predictor's config does not have.

A rollout never deletes ``rollout.json``: ``promote`` and ``rollback`` end by writing a final
record (``canary`` null, ``canary_percent`` 0). Should the file be deleted anyway while
``models.config`` still labels the model, the labels are the state (the transformer then sends
everything to ``stable``, so the canary's percent is 0). Without either file yet, the stable
version is the one the predictor serves by default: the latest version, or -- when the
requested canary is itself the latest -- the newest one below it.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from fundus_seg import model_repository, storage
from serving.rollout.errors import RolloutError
from serving.rollout.moves import Target
from serving.rollout.record import (
    CANARY_LABEL,
    MODELS_CONFIG,
    ROLLOUT_JSON,
    STABLE_LABEL,
    RecordError,
    RolloutRecord,
)

HEADER = ("# Written by `fundus-seg rollout` (serving/rollout/local.py): the stable and canary\n"
          "# versions of each model, as TF Serving version labels. Edit with the CLI.\n")


def _parse_models_config(text: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if text.strip():
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as exc:
            raise RolloutError(f"cannot read the existing {MODELS_CONFIG}: {exc}") from None
    return config


def labelled_state(text: str, model_name: str) -> RolloutRecord | None:
    """The state models.config's version labels describe (canary at 0 %), or None without a stable label."""
    entry = next((e for e in _parse_models_config(text).model_config_list.config if e.name == model_name), None)
    if entry is None or STABLE_LABEL not in entry.version_labels:
        return None
    canary = entry.version_labels[CANARY_LABEL] if CANARY_LABEL in entry.version_labels else None
    return RolloutRecord(entry.version_labels[STABLE_LABEL], canary, model_name=model_name)


def render_models_config(existing: str | None, state: RolloutRecord, base_path: Path) -> str:
    """models.config text with the model's entry set to `state`, other entries unchanged."""
    from google.protobuf import text_format

    config = _parse_models_config(existing or "")
    entries = config.model_config_list.config
    entry = next((e for e in entries if e.name == state.model_name), None) or entries.add()
    entry.Clear()
    entry.name = state.model_name
    entry.base_path = str(base_path)
    entry.model_platform = "tensorflow"
    versions = [state.stable] + ([state.canary] if state.canary is not None else [])
    entry.model_version_policy.specific.versions.extend(versions)
    entry.version_labels[STABLE_LABEL] = state.stable
    if state.canary is not None:
        entry.version_labels[CANARY_LABEL] = state.canary
    return HEADER + text_format.MessageToString(config)


class LocalTarget(Target):
    """Rollout over the files of a local model repository folder."""

    def __init__(self, model_repo: str | os.PathLike, model_name: str = "optic-disc"):
        self.root = Path(model_repo).resolve()
        self.model_repo = str(self.root)
        self.model_name = model_name
        self.models_config = self.root / MODELS_CONFIG
        self.rollout_json = self.root / ROLLOUT_JSON
        if not (self.root / model_name).is_dir():
            raise RolloutError(f"{self.root / model_name} does not exist: not a model repository "
                               f"holding {model_name}")

    def _versions(self) -> list[int]:
        return model_repository.list_versions(self.model_repo, self.model_name)

    def state(self, candidate: int | None = None) -> RolloutRecord:
        if self.rollout_json.exists():
            try:
                state = RolloutRecord.parse(self.rollout_json.read_bytes())
            except RecordError as exc:
                raise RolloutError(f"unreadable rollout record {self.rollout_json}: {exc}") from None
            if state.model_name != self.model_name:
                raise RolloutError(f"{self.rollout_json} is about model {state.model_name or '(none named)'}, "
                                   f"not {self.model_name}")
            return state
        if self.models_config.exists() and (state := labelled_state(self.models_config.read_text(), self.model_name)):
            return state
        versions = self._versions()
        if candidate is not None and candidate in versions:
            older = [v for v in versions if v < candidate]
            versions = older or versions
        if not versions:
            raise RolloutError(f"no published version of {self.model_name} in {self.root}")
        return RolloutRecord(versions[-1], model_name=self.model_name)

    @contextmanager
    def _lock(self):
        """One rollout command at a time on this repository (advisory file lock)."""
        with open(self.root / ".rollout.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def update(self, change: Callable[[RolloutRecord], RolloutRecord], candidate: int | None = None) -> RolloutRecord:
        with self._lock():
            new = change(self.state(candidate))
            missing = [v for v in (new.stable, new.canary) if v is not None and v not in self._versions()]
            if missing:
                raise RolloutError(f"version(s) {missing} of {self.model_name} are not published in {self.root}")
            existing = self.models_config.read_text() if self.models_config.exists() else None
            text = render_models_config(existing, new, self.root / self.model_name)
            storage.write_bytes(self.models_config, text.encode())
            storage.write_bytes(self.rollout_json, new.dumps())
            return new

    def status_lines(self) -> list[str]:
        lines = [f"target: local model repository {self.root}"]
        if not self.rollout_json.exists() and self.models_config.exists():
            lines.append(f"{self.rollout_json} is missing: the transformer sends every request to the stable "
                         f"version ({self.state().stable}); the next rollout command writes it again")
        elif not self.rollout_json.exists():
            lines.append(f"no rollout yet: the predictor serves the latest version "
                         f"({self.state().stable}) unless started with --model_config_file")
        else:
            lines.append(f"files: {self.models_config} (version labels), {self.rollout_json} (traffic split)")
        return lines

    def wait_ready(self, timeout: float, report: Callable[[str], None] = print) -> bool:
        """Nothing to wait for: the predictor and the transformer pick the files up on their next poll."""
        return True
