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
  (``canaryTrafficPercent``, Knative mode; Standard mode runs no canaries: ``start`` refuses);
* the one-machine default, ``serving/rollout/local.py``: our predictor serves S and C under the
  TF Serving version labels ``stable`` and ``canary`` and the transformer splits requests by
  percent. Local file contract (both files in the model repository root, written atomically,
  tmp file + ``os.replace``; names and record in ``record.py``):

  - ``<repo>/models.config`` -- TF Serving ``ModelServerConfig`` text proto; for the model:
    ``base_path: "<repo>/<model>"``, ``model_version_policy { specific { versions: S
    versions: C } }``, ``version_labels { key: "stable" value: S }`` and, during a canary,
    ``version_labels { key: "canary" value: C }``. Other models in the file are kept. The
    predictor (``--model_config_file <repo>/models.config``) re-reads it on every poll.
  - ``<repo>/rollout.json`` -- ``{"model_name": "optic-disc", "stable": S, "canary": C or
    null, "canary_percent": P (0 without a canary), "updated_at": ISO-8601 UTC}``. The
    transformer sends P % of requests to label ``canary`` (when ``canary`` is not null) and
    the rest to label ``stable``.

One module for each part:

* ``record`` -- the ``rollout.json`` record (`RolloutRecord`: parse, validate, dump) and the
  contract's file and label names; standard library only, as the transformer's routing reads it;
* ``gate`` -- the metrics gate, shared with training's publishing;
* ``moves`` -- the `Target` interface and the three moves;
* ``local``, ``kserve`` -- the two targets; ``cli`` -- ``fundus-seg rollout``.

The names below load on first use (PEP 562): importing ``serving.rollout.record`` runs this file,
and the transformer must not pay for the gate's imports (preprocessing: NumPy, OpenCV) to read a
record.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "errors": ("RolloutError",),
    "gate": ("DEFAULT_TOLERANCE", "GateFailed", "GateResult", "Regression", "check_gate", "compare_metrics"),
    "moves": ("DEFAULT_PERCENT", "Target", "promote", "promoted", "resolve_version", "rollback", "rolled_back",
              "start", "started"),
    "record": ("RecordError", "RolloutRecord"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME_OF[name]}"), name)
    globals()[name] = value
    return value
