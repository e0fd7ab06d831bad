"""Rollout on a KServe InferenceService (as deployed by charts/fundus-seg), with the kubernetes client.

Supported: KServe 0.16 to 0.21 (``storageUris`` first appears in v0.16.0). The predictor serves
one version through ``spec.predictor.storageUris``: ``[{uri: <repo>/<model>/<V>, mountPath:
/mnt/models/<V>}]`` -- TF Serving's base path is ``/mnt/models`` and needs the version directory
under it. Deployment modes carry the names KServe writes since v0.16 (``Knative``, ``Standard``);
the legacy ``Serverless``/``RawDeployment`` are read as those (``pkg/constants/constants.go``:
``LegacyServerless``, ``LegacyRawDeployment``).

* **Knative**: ``start`` patches the predictor to the canary's ``storageUris`` plus
  ``canaryTrafficPercent: P``; Knative keeps the last fully rolled-out revision (the stable
  version) at 100 - P %. ``promote`` removes ``canaryTrafficPercent`` (the latest revision takes
  100 %). ``rollback`` puts the stable ``storageUris`` back with ``canaryTrafficPercent: 0``: the
  traffic is pinned to the previous rolled-out revision at once (never to a revision that is
  still starting), and the spec again names the version that serves; once the new revision of
  the stable version is ready, `KServeTarget.settle` removes ``canaryTrafficPercent`` again, so
  that the next revision (a ``helm upgrade``) does not silently get 0 %.
* **Standard**: no canary. ``start`` refuses (`check_canary`): ``spec.canary`` does not exist
  before v0.20.0 (an older API server prunes it and the patch "succeeds"), and on v0.20/v0.21 the
  canary's pod gets no model, the split misses the transformer's calls or is not applied at all
  (docs/KUBERNETES.md, "Canary mechanics"). A ``spec.canary`` that exists anyway (made by hand,
  or by an older fundus-seg) is still read, promoted (its ``storageUris`` into
  ``spec.predictor``) or rolled back (removed).

Knative does not say which version its previous revision serves, so every move also writes a
record -- the rollout.json document -- to the ConfigMap ``<isvc>-rollout`` (key
``rollout.json``) next to the InferenceService. The InferenceService is changed with a JSON
merge patch carrying its ``metadata.resourceVersion``: a concurrent writer makes the API server
answer 409 Conflict, and the move is re-read and re-applied.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from serving.rollout.errors import RolloutError, RolloutUnavailable
from serving.rollout.moves import Target
from serving.rollout.record import ROLLOUT_JSON, RecordError, RolloutRecord

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
# The names KServe >= 0.16 writes into status.deploymentMode (pkg/constants/constants.go:
# `Knative`, `Standard`; `LegacyServerless = "Serverless"`, `LegacyRawDeployment = "RawDeployment"`).
KNATIVE, STANDARD = "Knative", "Standard"
MODE_NAMES = {"knative": KNATIVE, "serverless": KNATIVE, "standard": STANDARD, "rawdeployment": STANDARD}
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# The condition of a spec.canary (KServe >= 0.20; "CanaryPredictorReady gating" in v0.21.0-rc0).
CANARY_CONDITION = "CanaryPredictorReady"
CONFLICT_RETRIES = 8
STANDARD_CANARY_REFUSED = (
    "Standard-mode canaries are not supported: KServe before 0.20 has no spec.canary (the API "
    "server would drop it and nothing would happen), and on 0.20/0.21 the canary pod gets no model "
    "and the traffic split misses the transformer's calls (docs/KUBERNETES.md, \"Canary mechanics\"). "
    "Switch versions with `helm upgrade <release> charts/fundus-seg --reuse-values --set "
    "model.version=N` (a rolling update, no split), or deploy with "
    "inferenceService.deploymentMode=Knative to run canaries")


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


def normalize_mode(mode: str | None) -> str | None:
    """A deployment mode as KServe >= 0.16 names it (legacy names accepted); None when not given."""
    if not mode:
        return None
    try:
        return MODE_NAMES[mode.lower()]
    except KeyError:
        raise RolloutError(f"unsupported KServe deployment mode {mode!r} (Knative or Standard; "
                           "the legacy names Serverless and RawDeployment are accepted)") from None


def _api_exception() -> type[Exception]:
    from kubernetes.client.exceptions import ApiException

    return ApiException


def _reason(exc: Exception) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or exc.reason
    except Exception:  # noqa: BLE001 - any unparsable body
        return getattr(exc, "reason", None) or str(exc)


class KServeTarget(Target):
    """One InferenceService in one namespace."""

    def __init__(self, api_client: Any, isvc: str, namespace: str, *, mode: str | None = None,
                 model_repo: str | None = None, model_name: str | None = None):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.isvc, self.namespace = isvc, namespace
        self.record_name = f"{isvc}-rollout"
        self._mode = normalize_mode(mode)
        self._model_repo, self._model_name = model_repo, model_name

    # -- reading -------------------------------------------------------------------------------

    def get(self) -> dict:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.isvc)
        except _api_exception() as exc:
            raise self._error(exc, "read") from None

    def _error(self, exc: Exception, action: str) -> RolloutError:
        where = f"InferenceService {self.namespace}/{self.isvc}"
        if exc.status == 404:
            return RolloutError(f"{where} not found")
        if exc.status in (401, 403):
            return RolloutError(f"not allowed to {action} {where}: {_reason(exc)}")
        if exc.status == 429 or exc.status >= 500:
            return RolloutUnavailable(f"cannot {action} {where} now: {exc.status} {_reason(exc)}; try again")
        return RolloutError(f"cannot {action} {where}: {exc.status} {_reason(exc)}")

    def _read_record(self) -> tuple[RolloutRecord | None, dict | None]:
        try:
            config_map = self.core.read_namespaced_config_map(self.record_name, self.namespace)
        except _api_exception() as exc:
            if exc.status == 404:
                return None, None
            raise RolloutError(f"cannot read ConfigMap {self.namespace}/{self.record_name}: "
                               f"{exc.status} {_reason(exc)}") from None
        data = (config_map.data or {}).get(ROLLOUT_JSON)
        if not data:
            return None, config_map
        try:
            return RolloutRecord.parse(data), config_map
        except RecordError as exc:
            raise RolloutError(f"unreadable rollout record in ConfigMap {self.namespace}/{self.record_name}: "
                               f"{exc}") from None

    def mode(self, isvc: dict) -> str:
        if self._mode:
            return self._mode
        mode = (normalize_mode((isvc.get("status") or {}).get("deploymentMode"))
                or normalize_mode((isvc["metadata"].get("annotations") or {}).get(MODE_ANNOTATION)))
        if not mode:
            raise RolloutError(f"cannot tell the deployment mode of InferenceService {self.isvc} (no "
                               "status.deploymentMode yet, no annotation): pass --mode Knative|Standard")
        return mode

    def _entry(self, predictor: dict) -> dict:
        uris = predictor.get("storageUris") or []
        if len(uris) != 1 or version_of_uri(uris[0].get("uri", "")) is None:
            model_uri = (predictor.get("model") or {}).get("storageUri")
            found = f"storageUri {model_uri}" if model_uri else f"storageUris {uris}"
            raise RolloutError(
                f"InferenceService {self.isvc} serves {found}; fundus-seg rollout needs one "
                "spec.predictor.storageUris entry {uri: <repo>/<model>/<version>, mountPath: "
                "/mnt/models/<version>} as deployed by charts/fundus-seg")
        return uris[0]

    def _layout(self, isvc: dict) -> tuple[str, str, str]:
        """(model repo, model name, mount base) of the served entry."""
        entry = self._entry(isvc["spec"]["predictor"])
        repo, name, _ = split_version_uri(entry["uri"])
        base = entry.get("mountPath", "/mnt/models").rstrip("/").rsplit("/", 1)[0] or "/mnt/models"
        return self._model_repo or repo, self._model_name or name, base

    @property
    def model_repo(self) -> str:
        return self._layout(self.get())[0]

    @property
    def model_name(self) -> str:
        return self._layout(self.get())[1]

    def _state_of(self, isvc: dict, record: RolloutRecord | None) -> RolloutRecord:
        model_name = self._layout(isvc)[1]
        predictor = isvc["spec"]["predictor"]
        served = version_of_uri(self._entry(predictor)["uri"])
        if self.mode(isvc) == STANDARD:
            canaries = isvc["spec"].get("canary") or []
            if not canaries:
                return RolloutRecord(served, model_name=model_name)
            if len(canaries) > 1:
                raise RolloutError(f"InferenceService {self.isvc} has {len(canaries)} canaries; "
                                   "fundus-seg rollout manages exactly one")
            canary = canaries[0]
            return RolloutRecord(served, canary=version_of_uri(self._entry(canary["predictor"])["uri"]),
                                 canary_percent=int(canary.get("trafficPercent", 0)), model_name=model_name)
        percent = predictor.get("canaryTrafficPercent")
        if percent is None or percent == 100:
            return RolloutRecord(served, model_name=model_name)  # the spec's version is fully rolled out
        if record is not None and record.canary == served:
            return RolloutRecord(record.stable, canary=served, canary_percent=int(percent), model_name=model_name)
        if record is not None and record.canary is None and record.stable == served and percent == 0:
            return RolloutRecord(served, model_name=model_name)  # after a rollback
        raise RolloutError(
            f"InferenceService {self.isvc} has canaryTrafficPercent {percent} for version {served}, "
            f"but its rollout record ConfigMap {self.record_name} does not say which version is stable; "
            "set canaryTrafficPercent yourself or restore the record")

    def state(self, candidate: int | None = None) -> RolloutRecord:
        return self._state_of(self.get(), self._read_record()[0])

    # -- writing -------------------------------------------------------------------------------

    def _patch(self, isvc: dict, old: RolloutRecord, new: RolloutRecord) -> dict:
        repo, name, base = self._layout(isvc)

        def entry(version: int) -> list[dict]:
            from fundus_seg import model_repository

            return [{"uri": model_repository.version_uri(repo, name, version), "mountPath": f"{base}/{version}"}]

        if self.mode(isvc) == STANDARD:
            if new.canary is not None:
                raise RolloutError(STANDARD_CANARY_REFUSED)
            if old.canary is not None and new.stable == old.canary:  # promote
                return {"spec": {"predictor": {"storageUris": entry(new.stable)}, "canary": None}}
            return {"spec": {"canary": None}}  # rollback
        if new.canary is not None:
            return {"spec": {"predictor": {"storageUris": entry(new.canary),
                                           "canaryTrafficPercent": new.canary_percent}}}
        if old.canary is not None and new.stable == old.canary:  # promote: latest revision takes 100%
            return {"spec": {"predictor": {"canaryTrafficPercent": None}}}
        # rollback: traffic back to the previous rolled-out revision now, spec back to its version
        return {"spec": {"predictor": {"storageUris": entry(new.stable), "canaryTrafficPercent": 0}}}

    def update(self, change: Callable[[RolloutRecord], RolloutRecord], candidate: int | None = None) -> RolloutRecord:
        ApiException = _api_exception()
        for _ in range(CONFLICT_RETRIES):
            isvc = self.get()
            record, config_map = self._read_record()
            old = self._state_of(isvc, record)
            new = change(old)
            patch = self._patch(isvc, old, new)
            patch["metadata"] = {"resourceVersion": isvc["metadata"]["resourceVersion"]}
            try:
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.isvc, patch)
            except ApiException as exc:
                if exc.status == 409:
                    continue  # changed since we read it: re-read, re-check, re-apply
                raise self._error(exc, "patch") from None
            self._write_record(new, config_map, mode=self.mode(isvc))
            return new
        raise RolloutError(f"InferenceService {self.isvc} kept changing while updating it "
                           f"({CONFLICT_RETRIES} conflicts); try again")

    def check_canary(self) -> None:
        """Refuse a canary where KServe cannot run one (Standard mode, see the module docstring)."""
        if self.mode(self.get()) == STANDARD:
            raise RolloutError(STANDARD_CANARY_REFUSED)

    def _rollback_pending(self, isvc: dict, record: RolloutRecord | None) -> bool:
        """Knative after a rollback: the stable version's spec with `canaryTrafficPercent: 0` still set."""
        if self.mode(isvc) != KNATIVE or isvc["spec"]["predictor"].get("canaryTrafficPercent") != 0:
            return False
        served = version_of_uri(self._entry(isvc["spec"]["predictor"])["uri"])
        return record is not None and record.canary is None and record.stable == served

    def unsettled(self) -> bool:
        return self._rollback_pending(self.get(), self._read_record()[0])

    def settle(self, timeout: float, report: Callable[[str], None] = print) -> bool:
        """Finish a Knative rollback: once the revision serving the stable version is ready, remove
        `canaryTrafficPercent: 0`. Left in place, it would give the next revision (the next `helm
        upgrade`) 0 % of the traffic: while it is set, KServe gives the latest revision that percent
        and the last revision rolled out at 100 % the rest (upstream
        docs/samples/v1beta1/rollout/README.md). False when not ready within `timeout`."""
        deadline = time.monotonic() + timeout
        for _ in range(CONFLICT_RETRIES):
            isvc = self.get()
            if not self._rollback_pending(isvc, self._read_record()[0]):
                return True
            if not self.readiness(isvc)[0]:
                if not self.wait_ready(max(0.0, deadline - time.monotonic()), report):
                    return False
                continue  # re-read: ready, and still the rollback's spec?
            patch = {"metadata": {"resourceVersion": isvc["metadata"]["resourceVersion"]},
                     "spec": {"predictor": {"canaryTrafficPercent": None}}}
            try:
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.isvc, patch)
            except _api_exception() as exc:
                if exc.status == 409:
                    continue
                raise self._error(exc, "patch") from None
            report(f"{self.isvc}: rollback done; canaryTrafficPercent removed, new revisions get all traffic again")
            return True
        raise RolloutError(f"InferenceService {self.isvc} kept changing while finishing the rollback; "
                           "run `fundus-seg rollout rollback` again")

    def _write_record(self, state: RolloutRecord, config_map: Any, mode: str) -> None:
        from kubernetes import client

        ApiException = _api_exception()
        data = {ROLLOUT_JSON: state.dumps(isvc=self.isvc, namespace=self.namespace, deployment_mode=mode).decode()}
        labels = {"app.kubernetes.io/part-of": "fundus-seg", "app.kubernetes.io/managed-by": "fundus-seg-rollout"}
        for _ in range(CONFLICT_RETRIES):
            try:
                if config_map is None:
                    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=self.record_name, labels=labels),
                                              data=data)
                    self.core.create_namespaced_config_map(self.namespace, body)
                else:
                    config_map.data = data
                    self.core.replace_namespaced_config_map(self.record_name, self.namespace, config_map)
                return
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise RolloutError(f"InferenceService {self.isvc} was updated, but its rollout record "
                                       f"ConfigMap {self.record_name} could not be written: "
                                       f"{exc.status} {_reason(exc)}") from None
                _, config_map = self._read_record()  # created or changed meanwhile: take the new one
        raise RolloutError(f"rollout record ConfigMap {self.record_name} kept changing; try again")

    # -- observing -----------------------------------------------------------------------------

    @staticmethod
    def readiness(isvc: dict) -> tuple[bool, str]:
        """(ready, one-line summary): Ready (and CanaryPredictorReady with a spec.canary) for the
        latest spec, and in Knative mode the latest created predictor revision ready too."""
        status = isvc.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        wanted = ["Ready"] + ([CANARY_CONDITION] if isvc.get("spec", {}).get("canary") else [])
        generation, observed = isvc["metadata"].get("generation"), status.get("observedGeneration")
        current = generation is None or observed is None or observed >= generation
        parts, ready = [], current
        for name in wanted:
            condition = conditions.get(name) or {}
            ok = condition.get("status") == "True"
            ready = ready and ok
            detail = condition.get("reason") or condition.get("message") or ""
            parts.append(f"{name}={condition.get('status', 'Unknown')}" + (f" ({detail})" if detail and not ok else ""))
        if not current:
            parts.append(f"generation {generation} not observed yet")
        predictor = (status.get("components") or {}).get("predictor") or {}
        created, ready_revision = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
        if created and ready_revision and created != ready_revision:
            ready = False
            parts.append(f"revision {created} not ready yet")
        return ready, ", ".join(parts)

    def wait_ready(self, timeout: float, report: Callable[[str], None] = print) -> bool:
        """Watch the InferenceService until it is ready for its current spec (or timeout)."""
        from kubernetes import watch

        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            stream = watch.Watch()
            try:
                for event in stream.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                                           self.namespace, PLURAL, field_selector=f"metadata.name={self.isvc}",
                                           timeout_seconds=max(1, int(deadline - time.monotonic()))):
                    if event["type"] == "DELETED":
                        raise RolloutError(f"InferenceService {self.isvc} was deleted")
                    ready, summary = self.readiness(event["object"])
                    if summary != last:
                        report(f"{self.isvc}: {summary}")
                        last = summary
                    if ready:
                        return True
            except _api_exception() as exc:
                raise self._error(exc, "watch") from None
            finally:
                stream.stop()
        return False

    def status_lines(self) -> list[str]:
        isvc = self.get()
        record, _ = self._read_record()
        mode = self.mode(isvc)
        status = isvc.get("status") or {}
        lines = [f"target: InferenceService {self.namespace}/{self.isvc} ({mode} mode)",
                 f"ready: {self.readiness(isvc)[1]}"]
        if status.get("url"):
            lines.append(f"url: {status['url']}")
        if mode == KNATIVE:
            for route in ((status.get("components") or {}).get("predictor") or {}).get("traffic") or []:
                tag = route.get("tag") or ("latest" if route.get("latestRevision") else "")
                lines.append(f"traffic: {route.get('percent', 0):>3}% -> {route.get('revisionName', '?')}"
                             + (f" ({tag})" if tag else ""))
        for canary in status.get("canaryStatuses") or []:
            lines.append(f"canary {canary.get('name')}: ready={canary.get('ready')} "
                         f"traffic={canary.get('trafficPercent')}%")
        if record is not None:
            lines.append(f"record: ConfigMap {self.record_name}")
        if self._rollback_pending(isvc, record):
            lines.append("rollback not finished: canaryTrafficPercent 0 is still set (the next revision would get "
                         "no traffic); run `fundus-seg rollout rollback` again once the stable revision is ready")
        return lines
