"""The metrics gate: does a candidate version regress against a baseline beyond a tolerance?

The one definition of "regression beyond tolerance", so that ``fundus-seg rollout start`` and
training's publishing (training_job/job.py) refuse the same versions. ``dice_mean`` may drop by
at most ``tolerance``, ``rrp`` -- a percentage -- by at most ``100 * tolerance`` points, on every
dataset the baseline was evaluated on; a dataset missing from the candidate is a regression, and
so is a baseline value that is missing or NaN (there is nothing to compare with).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fundus_seg.model_card import ModelCard, Scores
from serving.rollout.errors import RolloutError

DEFAULT_TOLERANCE = 0.01
GATED_METRICS = ("dice_mean", "rrp")
# rrp is a percentage: its tolerance is `tolerance` scaled to percentage points.
METRIC_SCALE = {"dice_mean": 1.0, "rrp": 100.0}


class GateFailed(RolloutError):
    """The candidate version regresses compared with the serving version."""

    def __init__(self, gate: GateResult):
        self.gate = gate
        super().__init__(gate.summary() + " (rerun with --force to roll out anyway)")


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


def _metric(test_metrics: dict[str, Scores], dataset: str, metric: str) -> float | None:
    scores = test_metrics.get(dataset)
    return None if scores is None else scores.value(metric)


def compare_metrics(serving: ModelCard, candidate: ModelCard, tolerance: float, *, model_name: str = "",
                    serving_version: int = 0, candidate_version: int = 0, shared_only: bool = False,
                    baseline: str = "serving") -> GateResult:
    """Gate two versions' cards: every (dataset, metric) the serving version has.

    The one definition of "regression beyond tolerance", for rollouts and for publishing. With
    ``shared_only`` only the datasets both documents scored count (publishing: a run scored on
    other datasets than the latest version is not a regression on those).
    """
    if tolerance < 0:
        raise RolloutError(f"--tolerance must be >= 0, got {tolerance}")
    old_all, new_all = serving.test_metrics, candidate.test_metrics
    datasets = sorted(set(old_all) & set(new_all) if shared_only else old_all)
    regressions, rows = [], []
    for dataset in datasets:
        for metric in GATED_METRICS:
            old, new = _metric(old_all, dataset, metric), _metric(new_all, dataset, metric)
            rows.append((dataset, metric, old, new))
            allowed = tolerance * METRIC_SCALE[metric]
            if old is None or new is None or new < old - allowed - 1e-12:
                regressions.append(Regression(dataset, metric, old, new, allowed, baseline))
    return GateResult(model_name or candidate.model_name, serving_version, candidate_version,
                      tolerance, tuple(regressions), tuple(datasets), tuple(rows), baseline)


def check_gate(model_repo: str, model_name: str, serving: int, candidate: int, tolerance: float,
               read_json: Callable[[str], Any] | None = None) -> GateResult:
    """Read both versions' cards (metrics.json) from the model repository and compare them."""
    from fundus_seg import model_repository, storage

    read_json = read_json or storage.read_json
    documents: dict[str, ModelCard] = {}
    for role, version in (("serving", serving), ("candidate", candidate)):
        uri = storage.join(model_repository.version_uri(model_repo, model_name, version), model_repository.CARD_FILE)
        try:
            documents[role] = ModelCard.from_dict(read_json(uri))
        except Exception as exc:  # missing file, bad JSON or card, StorageError, botocore errors ...
            raise RolloutError(f"cannot read the {role} version's metrics {uri}: {exc}") from None
    if not documents["serving"].test_metrics:
        raise RolloutError(f"the serving version {serving} has no test_metrics to compare with "
                           "(use --force to roll out without the gate)")
    return compare_metrics(documents["serving"], documents["candidate"], tolerance, model_name=model_name,
                           serving_version=serving, candidate_version=candidate)
