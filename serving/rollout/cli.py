"""`fundus-seg rollout start|status|promote|rollback`: canary rollout of model versions.

    fundus-seg rollout start    --isvc optic-disc -n fundus-seg --version 4 --percent 10
    fundus-seg rollout status   --isvc optic-disc -n fundus-seg [--watch]
    fundus-seg rollout promote  --isvc optic-disc -n fundus-seg
    fundus-seg rollout rollback --isvc optic-disc -n fundus-seg
    fundus-seg rollout start    --local models --version 4     # the one-machine default

`register(subparsers)` adds the command; serving/cli.py calls it. Each action drives a
`Target` (serving/rollout/moves.py) through its interface alone; the kubernetes client is
imported only when a cluster target is built.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving.rollout import moves
from serving.rollout.errors import RolloutError
from serving.rollout.gate import DEFAULT_TOLERANCE
from serving.rollout.kserve import KServeTarget
from serving.rollout.local import LocalTarget
from serving.rollout.moves import DEFAULT_PERCENT, Target
from serving.rollout.record import RolloutRecord

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "rollout", help="canary rollout of a model version: start, status, promote, rollback",
        description="Canary rollout of model versions on a KServe InferenceService (--isvc) or on the "
                    "one-machine predictor (--local). `start` gates on metrics.json first.")
    actions = parser.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")

    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("target (one of)")
    exclusive = where.add_mutually_exclusive_group(required=True)
    exclusive.add_argument("--isvc", metavar="NAME", help="InferenceService name")
    exclusive.add_argument("--local", metavar="MODEL_REPO_DIR",
                           help="local model repository served by the one-machine predictor")
    cluster = common.add_argument_group("cluster")
    cluster.add_argument("-n", "--namespace", help="namespace (default: the kube context's, or the pod's)")
    cluster.add_argument("--mode", choices=["auto", "Knative", "Standard", "Serverless", "RawDeployment"],
                         default="auto", help="KServe deployment mode (default: read from the InferenceService; "
                                              "Serverless and RawDeployment are the names before KServe 0.16)")
    cluster.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    cluster.add_argument("--context", help="kubeconfig context")
    models = common.add_argument_group("model repository")
    models.add_argument("--model-repo", metavar="URI",
                        help="model repository (default: derived from the InferenceService's storageUris)")
    models.add_argument("--model-name", metavar="NAME", help="model name (default: derived; optic-disc locally)")

    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="watch the InferenceService until it is ready")
    waiting.add_argument("--timeout", type=float, default=600, help="seconds to wait (default 600)")

    start = actions.add_parser("start", parents=[common, waiting], help="gate a version, then send it a percent of traffic")
    version = start.add_mutually_exclusive_group(required=True)
    version.add_argument("--version", help="version number, or 'latest'")
    version.add_argument("--run-id", help="the version published by this training run id")
    start.add_argument("--percent", type=int, default=DEFAULT_PERCENT,
                       help=f"canary traffic percent, 1..99 (default {DEFAULT_PERCENT})")
    start.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                       help=f"largest allowed drop of dice_mean (x100 for rrp) on any dataset (default {DEFAULT_TOLERANCE})")
    start.add_argument("--force", action="store_true", help="roll out even if the gate fails")
    start.set_defaults(func=_start)

    status = actions.add_parser("status", parents=[common], help="versions, traffic split and readiness")
    status.add_argument("--watch", action="store_true", help="watch until the InferenceService is ready")
    status.add_argument("--timeout", type=float, default=600, help="seconds to watch (default 600)")
    status.set_defaults(func=_status)

    for name, func, text in (("promote", _promote, "make the canary the stable version (100%% traffic)"),
                             ("rollback", _rollback, "take all traffic away from the canary (Knative: waits "
                                                     "up to --timeout for the stable revision, then unpins it)")):
        action = actions.add_parser(name, parents=[common, waiting], help=text)
        action.add_argument("--version", type=int, help="refuse unless this is the canary version")
        action.set_defaults(func=func)
    return parser


# ---------------------------------------------------------------------------------------------


def kube_api_client(kubeconfig: str | None = None, context: str | None = None):
    """An ApiClient from a kubeconfig (flag, $KUBECONFIG, ~/.kube/config) or the pod's service account."""
    from kubernetes import client, config

    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, FileNotFoundError, TypeError) as exc:
        if kubeconfig or context:
            raise RolloutError(f"cannot use kubeconfig: {exc}") from None
    try:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise RolloutError(f"no kubeconfig and not running in a cluster: {exc}") from None
    return client.ApiClient(configuration)


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            active = next(c for c in contexts if c["name"] == context)
        return active["context"].get("namespace") or "default"
    except Exception:  # noqa: BLE001 - no kubeconfig: in-cluster or plain default
        if IN_CLUSTER_NAMESPACE.exists():
            return IN_CLUSTER_NAMESPACE.read_text().strip()
        return "default"


def target_from_args(args: argparse.Namespace) -> Target:
    if args.local:
        if args.model_repo:
            raise RolloutError("--local is the model repository; drop --model-repo")
        return LocalTarget(args.local, args.model_name or "optic-disc")
    namespace = args.namespace or default_namespace(args.kubeconfig, args.context)
    return KServeTarget(kube_api_client(args.kubeconfig, args.context), args.isvc, namespace,
                        mode=None if args.mode == "auto" else args.mode,
                        model_repo=args.model_repo, model_name=args.model_name)


def _report_state(target: Target, state: RolloutRecord, args: argparse.Namespace) -> int:
    print(state.describe())
    if args.wait and not target.wait_ready(args.timeout):
        print(f"not ready after {args.timeout:g}s", file=sys.stderr)
        return 1
    return 0


def _start(args: argparse.Namespace) -> int:
    target = target_from_args(args)
    version = moves.resolve_version(args.version, args.run_id, target.model_repo, target.model_name)
    state = moves.start(target, version, args.percent, args.tolerance, args.force)
    return _report_state(target, state, args)


def _status(args: argparse.Namespace) -> int:
    target = target_from_args(args)
    print(target.state().describe())
    for line in target.status_lines():
        print(line)
    if args.watch:
        return 0 if target.wait_ready(args.timeout) else 1
    return 0


def _promote(args: argparse.Namespace) -> int:
    target = target_from_args(args)
    state = moves.promote(target, args.version)
    code = _report_state(target, state, args)
    if args.isvc:
        print(f"record it in the Helm release: helm upgrade <release> charts/fundus-seg --reuse-values "
              f"--set model.version={state.stable}")
    return code


def _rollback(args: argparse.Namespace) -> int:
    target = target_from_args(args)
    # Again after a rollback that did not finish (its revision was not ready in time): finish it.
    state = target.state() if target.unsettled() else moves.rollback(target, args.version)
    code = _report_state(target, state, args)
    if not target.settle(args.timeout):
        print(f"traffic is back on version {state.stable}, but its new revision was not ready after "
              f"{args.timeout:g}s, so canaryTrafficPercent: 0 is still set (the next revision would get no "
              "traffic): run the same rollback command again to finish", file=sys.stderr)
        return 1
    return code
