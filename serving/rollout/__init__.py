"""Canary rollout of model versions: gate on metrics, split traffic, promote or roll back.

A rollout has three moves, the same everywhere:

* ``start`` -- version C of the model gets ``percent`` % of the traffic next to the serving
  (stable) version S, once the **gate** passed: C's ``metrics.json`` must not regress beyond
  ``tolerance`` on any dataset S was evaluated on (``dice_mean`` may drop by at most
  ``tolerance``, ``rrp`` -- a percentage -- by at most ``100 * tolerance`` points; a dataset
  missing from C's metrics is a regression). A serving version whose ``dice_mean`` or ``rrp``
  on one of its datasets is missing or NaN gives the gate nothing to compare with: it refuses
  too. ``--force`` skips the refusal, not the report.
  Starting again with the same C only changes the percent.
* ``promote`` -- C becomes the stable version and gets all the traffic.
* ``rollback`` -- C gets no traffic any more; S keeps serving. One command, no gate.

Where the traffic is split (a *target*):

* an InferenceService, ``serving/rollout/kserve.py``: KServe moves the traffic
  (``canaryTrafficPercent`` in Serverless mode, ``spec.canary`` in Standard mode);
* the one-machine default, ``serving/rollout/local.py``: our predictor serves S and C under the
  TF Serving version labels ``stable`` and ``canary`` and the transformer splits requests by
  percent. Local file contract (both files in the model repository root, written atomically,
  tmp file + ``os.replace``):

  - ``<repo>/models.config`` -- TF Serving ``ModelServerConfig`` text proto; for the model:
    ``base_path: "<repo>/<model>"``, ``model_version_policy { specific { versions: S
    versions: C } }``, ``version_labels { key: "stable" value: S }`` and, during a canary,
    ``version_labels { key: "canary" value: C }``. Other models in the file are kept. The
    predictor (``--model_config_file <repo>/models.config``) re-reads it on every poll.
  - ``<repo>/rollout.json`` -- ``{"model_name": "optic-disc", "stable": S, "canary": C or
    null, "canary_percent": P (0 without a canary), "updated_at": ISO-8601 UTC}``. The
    transformer sends P % of requests to label ``canary`` (when ``canary`` is not null) and
    the rest to label ``stable``.

The state moves through pure functions (``started``, ``promoted``, ``rolled_back``) that a
target applies in its own read-modify-write loop, so a concurrent change is re-read, never
overwritten.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from preprocessing.errors import FundusSegError

DEFAULT_PERCENT = 10
DEFAULT_TOLERANCE = 0.01
GATED_METRICS = ("dice_mean", "rrp")
# rrp is a percentage: its tolerance is `tolerance` scaled to percentage points.
METRIC_SCALE = {"dice_mean": 1.0, "rrp": 100.0}


class RolloutError(FundusSegError):
    """A rollout that cannot be done as asked (wrong version, nothing in progress, API refusal)."""


class GateFailed(RolloutError):
    """The candidate version regresses compared with the serving version."""

    def __init__(self, gate: "GateResult"):
        self.gate = gate
        super().__init__(gate.summary() + " (rerun with --force to roll out anyway)")


# ---------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class RolloutState:
    """Which versions take traffic: always `stable`, plus `canary` at `canary_percent` %."""

    model_name: str
    stable: int
    canary: int | None = None
    canary_percent: int = 0

    def __post_init__(self) -> None:
        if self.canary is None and self.canary_percent:
            raise ValueError("canary_percent without a canary")
        if self.canary is not None and not 0 <= self.canary_percent <= 100:
            raise ValueError(f"canary_percent must be 0..100, got {self.canary_percent}")

    def describe(self) -> str:
        if self.canary is None:
            return f"{self.model_name}: version {self.stable} serves 100%"
        return (f"{self.model_name}: stable version {self.stable} {100 - self.canary_percent}%, "
                f"canary version {self.canary} {self.canary_percent}%")

    def to_record(self, **extra: Any) -> dict[str, Any]:
        """The rollout.json / ConfigMap record."""
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        return {"model_name": self.model_name, "stable": self.stable, "canary": self.canary,
                "canary_percent": self.canary_percent, "updated_at": now, **extra}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "RolloutState":
        try:
            canary = record.get("canary")
            return cls(model_name=str(record["model_name"]), stable=int(record["stable"]),
                       canary=None if canary is None else int(canary),
                       canary_percent=int(record.get("canary_percent") or 0) if canary is not None else 0)
        except (KeyError, TypeError, ValueError) as exc:
            raise RolloutError(f"unreadable rollout record {record!r}: {exc}") from None


def check_percent(percent: int) -> int:
    if not 1 <= percent <= 99:
        raise RolloutError(f"--percent must be between 1 and 99 (promote to send 100%), got {percent}")
    return percent


def started(state: RolloutState, version: int, percent: int, *, expected_stable: int | None = None) -> RolloutState:
    """`version` becomes the canary at `percent` %; the same canary again only changes the percent."""
    check_percent(percent)
    if expected_stable is not None and state.stable != expected_stable:
        raise RolloutError(f"the serving version changed from {expected_stable} to {state.stable} "
                           "while the gate ran; run the rollout again")
    if version == state.stable:
        raise RolloutError(f"version {version} is already the serving version of {state.model_name}")
    if state.canary is not None and state.canary != version:
        raise RolloutError(f"version {state.canary} is already a canary at {state.canary_percent}%: "
                           "promote it or roll it back first")
    return dataclasses.replace(state, canary=version, canary_percent=percent)


def _require_canary(state: RolloutState, version: int | None, action: str) -> None:
    if state.canary is None:
        raise RolloutError(f"no canary to {action} ({state.describe()})")
    if version is not None and version != state.canary:
        raise RolloutError(f"the canary is version {state.canary}, not {version}")


def promoted(state: RolloutState, version: int | None = None) -> RolloutState:
    _require_canary(state, version, "promote")
    return RolloutState(state.model_name, stable=state.canary)


def rolled_back(state: RolloutState, version: int | None = None) -> RolloutState:
    _require_canary(state, version, "roll back")
    return RolloutState(state.model_name, stable=state.stable)


# ---------------------------------------------------------------------------------------------
# Gate


@dataclass(frozen=True)
class Regression:
    dataset: str
    metric: str
    serving: float | None
    candidate: float | None
    allowed_drop: float
    baseline: str = "serving"
    """What the candidate is compared with, in messages ("serving"; "latest" when publishing)."""

    def __str__(self) -> str:
        if self.serving is None:
            return f"the {self.baseline} version has no usable metrics for dataset {self.dataset} ({self.metric} missing or NaN)"
        if self.candidate is None:
            return f"{self.dataset}: {self.metric} missing from the candidate ({self.baseline}: {self.serving:g})"
        return (f"{self.dataset}: {self.metric} {self.candidate:.4g} vs {self.baseline} {self.serving:.4g} "
                f"(drop {self.serving - self.candidate:.4g} > {self.allowed_drop:g})")


@dataclass(frozen=True)
class GateResult:
    model_name: str
    serving: int
    candidate: int
    tolerance: float
    regressions: tuple[Regression, ...] = ()
    """Drops beyond the tolerance, and (dataset, metric) pairs the serving version has no usable value for."""
    compared: tuple[str, ...] = ()
    rows: tuple[tuple[str, str, float | None, float | None], ...] = field(default=(), repr=False)
    baseline: str = "serving"

    @property
    def passed(self) -> bool:
        return not self.regressions

    def summary(self) -> str:
        head = (f"gate {'passed' if self.passed else 'FAILED'}: version {self.candidate} vs {self.baseline} "
                f"version {self.serving} of {self.model_name} (tolerance {self.tolerance:g})")
        if self.passed:
            return head + f" on {', '.join(self.compared) or 'no datasets'}"
        return head + "; regressions: " + "; ".join(str(r) for r in self.regressions)

    def table(self) -> str:
        lines = [f"{'dataset':<16} {'metric':<10} {'v' + str(self.serving):>10} {'v' + str(self.candidate):>10}"]
        for dataset, metric, old, new in self.rows:
            fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
            lines.append(f"{dataset:<16} {metric:<10} {fmt(old):>10} {fmt(new):>10}")
        return "\n".join(lines)


def _metric(test_metrics: dict, dataset: str, metric: str) -> float | None:
    scores = test_metrics.get(dataset)
    value = scores.get(metric) if isinstance(scores, dict) else None
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def compare_metrics(serving: dict, candidate: dict, tolerance: float, *, model_name: str = "",
                    serving_version: int = 0, candidate_version: int = 0, shared_only: bool = False,
                    baseline: str = "serving") -> GateResult:
    """Gate two metrics.json documents: every (dataset, metric) the serving version has.

    The one definition of "regression beyond tolerance", for rollouts and for publishing. With
    ``shared_only`` only the datasets both documents scored count (publishing: a run scored on
    other datasets than the latest version is not a regression on those).
    """
    if tolerance < 0:
        raise RolloutError(f"--tolerance must be >= 0, got {tolerance}")
    old_all, new_all = serving.get("test_metrics") or {}, candidate.get("test_metrics") or {}
    datasets = sorted(set(old_all) & set(new_all) if shared_only else old_all)
    regressions, rows = [], []
    for dataset in datasets:
        for metric in GATED_METRICS:
            old, new = _metric(old_all, dataset, metric), _metric(new_all, dataset, metric)
            rows.append((dataset, metric, old, new))
            allowed = tolerance * METRIC_SCALE[metric]
            if old is None or new is None or new < old - allowed - 1e-12:
                regressions.append(Regression(dataset, metric, old, new, allowed, baseline))
    return GateResult(model_name or str(candidate.get("model_name", "")), serving_version, candidate_version,
                      tolerance, tuple(regressions), tuple(datasets), tuple(rows), baseline)


def check_gate(model_repo: str, model_name: str, serving: int, candidate: int, tolerance: float,
               read_json: Callable[[str], Any] | None = None) -> GateResult:
    """Read both versions' metrics.json from the model repository and compare them."""
    from fundus_seg import storage

    read_json = read_json or storage.read_json
    documents = {}
    for role, version in (("serving", serving), ("candidate", candidate)):
        uri = storage.join(storage.version_uri(model_repo, model_name, version), storage.METRICS)
        try:
            documents[role] = read_json(uri)
        except Exception as exc:  # missing file, bad JSON, StorageError, botocore errors ...
            raise RolloutError(f"cannot read the {role} version's metrics {uri}: {exc}") from None
        if not isinstance(documents[role], dict):
            raise RolloutError(f"{uri} is not a JSON object")
    if not (documents["serving"].get("test_metrics")):
        raise RolloutError(f"the serving version {serving} has no test_metrics to compare with "
                           "(use --force to roll out without the gate)")
    return compare_metrics(documents["serving"], documents["candidate"], tolerance, model_name=model_name,
                           serving_version=serving, candidate_version=candidate)


# ---------------------------------------------------------------------------------------------
# Targets and the three moves


class Target(Protocol):
    """Where traffic is split. `update` re-reads and retries when someone else wrote meanwhile."""

    model_repo: str
    model_name: str

    def state(self, candidate: int | None = None) -> RolloutState: ...
    def update(self, change: Callable[[RolloutState], RolloutState], candidate: int | None = None) -> RolloutState: ...
    def status_lines(self) -> list[str]: ...


def resolve_version(version: str | int | None, run_id: str | None, model_repo: str, model_name: str) -> int:
    """`--version N`, `--version latest` or `--run-id ID` to a published version number."""
    from fundus_seg import storage

    if run_id:
        found = storage.version_for_run(model_repo, model_name, run_id)
        if found is None:
            raise RolloutError(f"no published version of {model_name} in {model_repo} records run id {run_id!r}")
        return found
    if version is None:
        raise RolloutError("give --version N (or latest) or --run-id ID")
    if str(version) == "latest":
        found = storage.latest_version(model_repo, model_name)
        if found is None:
            raise RolloutError(f"no published version of {model_name} in {model_repo}")
        return found
    try:
        number = int(version)
    except ValueError:
        raise RolloutError(f"--version must be an integer or 'latest', got {version!r}") from None
    if number not in storage.list_versions(model_repo, model_name):
        raise RolloutError(f"version {number} of {model_name} is not published in {model_repo}")
    return number


def start(target: Target, version: int, percent: int = DEFAULT_PERCENT, tolerance: float = DEFAULT_TOLERANCE,
          force: bool = False, report: Callable[[str], None] = print) -> RolloutState:
    """Gate `version` against the serving version, then make it the canary at `percent` %."""
    check_percent(percent)
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


def promote(target: Target, version: int | None = None) -> RolloutState:
    return target.update(lambda state: promoted(state, version))


def rollback(target: Target, version: int | None = None) -> RolloutState:
    return target.update(lambda state: rolled_back(state, version))


def dumps_record(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def parse_record(data: bytes | str, where: str) -> RolloutState:
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise RolloutError(f"{where} is not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise RolloutError(f"{where} is not a JSON object")
    return RolloutState.from_record(record)


def version_of_uri(uri: str) -> int | None:
    """`.../<model>/<version>` -> version (None when the last path segment is no integer)."""
    last = uri.rstrip("/").rsplit("/", 1)[-1]
    return int(last) if last.isdigit() else None


def split_version_uri(uri: str) -> tuple[str, str, int]:
    """`<repo>/<model>/<version>` -> (repo, model, version)."""
    version = version_of_uri(uri)
    parts = uri.rstrip("/").rsplit("/", 2)
    if version is None or len(parts) != 3 or not parts[0] or parts[0].endswith(":/"):
        raise RolloutError(f"{uri} is not a model version URI <repo>/<model>/<version>")
    return parts[0], parts[1], version
