"""The rollout's error, below every other module of the package so that each can raise it.

A FundusSegError: `fundus-seg rollout` prints its message on one line and exits 2.
"""
from fundus_seg.errors import FundusSegError


class RolloutError(FundusSegError):
    """A rollout that cannot be done as asked (wrong version, nothing in progress, API refusal)."""
