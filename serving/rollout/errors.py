"""The rollout's error, below every other module of the package so that each can raise it.

A FundusSegError: `fundus-seg rollout` prints its message on one line and exits 2 -- a retry
fails the same way, so the retrain Job's podFailurePolicy fails the Job at once on it -- except
`RolloutUnavailable` (exit 1: the API server was overloaded or failing; a retry may pass).
"""
from fundus_seg.errors import FundusSegError


class RolloutError(FundusSegError):
    """A rollout that cannot be done as asked (wrong version, nothing in progress, API refusal)."""


class RolloutUnavailable(RolloutError):
    """The Kubernetes API answered 429 or 5xx: try again later."""

    exit_code = 1
