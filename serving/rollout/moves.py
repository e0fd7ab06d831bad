"""The three moves (start, promote, rollback) and the Target interface they drive.

Each move is a pure function of the current record (``started``, ``promoted``, ``rolled_back``)
that a target applies in its own read-modify-write loop (`Target.update`), so a concurrent
change is re-read and the move re-checked, never overwritten. ``start`` gates first.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable

from serving.rollout.errors import RolloutError
from serving.rollout.gate import DEFAULT_TOLERANCE, GateFailed, check_gate
from serving.rollout.record import RolloutRecord

DEFAULT_PERCENT = 10


class Target(ABC):
    """Where the traffic is split: an InferenceService (kserve.py) or a local model repository (local.py)."""

    model_repo: str
    """The model repository the versions are published in; the gate reads their metrics there."""
    model_name: str

    @abstractmethod
    def state(self, candidate: int | None = None) -> RolloutRecord:
        """The current split; `candidate` (the version about to start) helps a target without a record
        tell which version is stable."""

    @abstractmethod
    def update(self, change: Callable[[RolloutRecord], RolloutRecord],
               candidate: int | None = None) -> RolloutRecord:
        """Write `change(current state)`, re-reading and re-applying it when someone else wrote meanwhile."""

    @abstractmethod
    def status_lines(self) -> list[str]:
        """What `fundus-seg rollout status` prints below the split."""

    @abstractmethod
    def wait_ready(self, timeout: float, report: Callable[[str], None] = print) -> bool:
        """Wait until the versions of the current split serve; False after `timeout` seconds."""

    def check_canary(self) -> None:
        """Raise RolloutError where this target cannot run a canary at all (checked before the gate)."""
        return None

    def unsettled(self) -> bool:
        """True while a rollback still has to be finished by `settle`."""
        return False

    def settle(self, timeout: float, report: Callable[[str], None] = print) -> bool:
        """Finish what a rollback leaves behind once it serves; False when not done within `timeout`."""
        return True


def check_percent(percent: int) -> int:
    if not 1 <= percent <= 99:
        raise RolloutError(f"--percent must be between 1 and 99 (promote to send 100%), got {percent}")
    return percent


def started(state: RolloutRecord, version: int, percent: int, *, expected_stable: int | None = None) -> RolloutRecord:
    """`version` becomes the canary at `percent` %; the same canary again only changes the percent."""
    check_percent(percent)
    if expected_stable is not None and state.stable != expected_stable:
        raise RolloutError(f"the serving version changed from {expected_stable} to {state.stable} "
                           "while the gate ran; run the rollout again")
    if version == state.stable:
        raise RolloutError(f"version {version} is already the serving version of {state.model_name}")
    if state.canary is not None and state.canary != version:
        raise RolloutError(f"version {state.canary} is already a canary at {state.canary_percent:g}%: "
                           "promote it or roll it back first")
    return dataclasses.replace(state, canary=version, canary_percent=percent)


def _require_canary(state: RolloutRecord, version: int | None, action: str) -> None:
    if state.canary is None:
        raise RolloutError(f"no canary to {action} ({state.describe()})")
    if version is not None and version != state.canary:
        raise RolloutError(f"the canary is version {state.canary}, not {version}")


def promoted(state: RolloutRecord, version: int | None = None) -> RolloutRecord:
    _require_canary(state, version, "promote")
    return RolloutRecord(state.canary, model_name=state.model_name)


def rolled_back(state: RolloutRecord, version: int | None = None) -> RolloutRecord:
    _require_canary(state, version, "roll back")
    return state.without_canary()


def resolve_version(version: str | int | None, run_id: str | None, model_repo: str, model_name: str) -> int:
    """`--version N`, `--version latest` or `--run-id ID` to a published version number."""
    from fundus_seg import model_repository

    if run_id:
        found = model_repository.version_for_run(model_repo, model_name, run_id)
        if found is None:
            raise RolloutError(f"no published version of {model_name} in {model_repo} records run id {run_id!r}")
        return found
    if version is None:
        raise RolloutError("give --version N (or latest) or --run-id ID")
    if str(version) == "latest":
        found = model_repository.latest_version(model_repo, model_name)
        if found is None:
            raise RolloutError(f"no published version of {model_name} in {model_repo}")
        return found
    try:
        number = int(version)
    except ValueError:
        raise RolloutError(f"--version must be an integer or 'latest', got {version!r}") from None
    if number not in model_repository.list_versions(model_repo, model_name):
        raise RolloutError(f"version {number} of {model_name} is not published in {model_repo}")
    return number


def start(target: Target, version: int, percent: int = DEFAULT_PERCENT, tolerance: float = DEFAULT_TOLERANCE,
          force: bool = False, report: Callable[[str], None] = print) -> RolloutRecord:
    """Gate `version` against the serving version, then make it the canary at `percent` %."""
    check_percent(percent)
    target.check_canary()
    before = target.state(candidate=version)
    started(before, version, percent)  # refuse early (same version, other canary) before reading metrics
    if before.canary == version:
        report(f"canary {version} already gated; setting its traffic to {percent}%")
    else:
        try:
            gate = check_gate(target.model_repo, target.model_name, before.stable, version, tolerance)
        except RolloutError as exc:
            if not force:
                raise
            report(f"warning: {exc}; --force given, rolling out without the gate")
        else:
            if gate.rows:
                report(gate.table())
            if not gate.passed and not force:
                raise GateFailed(gate)
            report(gate.summary() + (" -- forced" if not gate.passed else ""))
    return target.update(lambda state: started(state, version, percent, expected_stable=before.stable),
                         candidate=version)


def promote(target: Target, version: int | None = None) -> RolloutRecord:
    return target.update(lambda state: promoted(state, version))


def rollback(target: Target, version: int | None = None) -> RolloutRecord:
    return target.update(lambda state: rolled_back(state, version))
