"""Model versions over time: poll the repository, load in the background, swap without dropping requests.

Like TF Serving's file-system source + availability-preserving policy:
- a version is a directory named by an int64 (TF Serving's version type) holding saved_model.pb;
  anything else is ignored (digit names beyond int64 are logged once);
- the version policy (latest N / all / specific) plus label targets pick the versions to serve;
- a new version is loaded, checked against the required signature and warmed up off the event
  loop, and serves only once AVAILABLE;
- a version leaves only after something it was replaced by is AVAILABLE, and is dropped only
  when its in-flight requests have finished;
- a version that fails to load (or cannot serve) is reported (state END + error) and retried when
  any of its files change (names, sizes, mtimes of its top level and variables/), so a `cp -r`
  that lands saved_model.pb before variables/ loads once the copy is complete; a version whose
  files change while it loads is not served. The policy falls back to the versions that do load.
Labels move to a new target once that target is AVAILABLE; until then they keep pointing at the
previous version, which stays loaded while labelled.

All state lives on the event loop thread; only loading runs in a worker thread.
"""
from __future__ import annotations

import asyncio
import enum
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from fundus_seg.model_repository import INT64_MAX, SAVED_MODEL, version_number
from serving.predictor.config import ConfigError, ModelConfig, PredictorConfig
from serving.predictor.errors import InvalidArgument, NotFound, clip
from serving.predictor.servable import Servable

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple, ...]
MAX_NAME_CHARS = 1024  # model names and version labels in requests; longer ones are refused


def fingerprint(path: Path) -> Fingerprint:
    """What changes while a version is being written: names, inodes, sizes and mtimes of its top
    level and variables/ (a few stat calls, cheap enough for every poll of a failed version)."""
    parts = []
    for sub in ("", "variables"):
        try:
            with os.scandir(path / sub) as entries:
                for entry in entries:
                    try:
                        stat = entry.stat()
                        parts.append((sub, entry.name, stat.st_ino, stat.st_size, stat.st_mtime_ns))
                    except OSError:  # e.g. a dangling link: its name still counts
                        parts.append((sub, entry.name))
        except OSError:
            parts.append((sub,))
    return tuple(sorted(parts))


class WorkerPool(ThreadPoolExecutor):
    """A thread pool that says whether it was shut down (liveness needs to know)."""

    closed = False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.closed = True
        super().shutdown(wait, cancel_futures=cancel_futures)


LOADER_NICENESS = 10
"""How much lower than the serving threads the loader thread runs: loading and warming up a new version
(seconds of CPU) must not slow the version that is serving meanwhile, on a machine with few cores."""


def _yield_to_serving() -> None:
    """Lower the loader thread's own scheduling priority (Linux: a thread is a task with its own nice value)."""
    import threading

    with suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICENESS)


LOADING_SWITCH_INTERVAL_S = 0.001
"""The GIL switch interval while a version loads (Python's default: 5 ms). Loading is seconds of Python holding
the GIL in the loader thread, and niceness does not reach the GIL: every time a request's thread wants it back
(after each model call, each gRPC read) it waited up to a whole interval. A hot swap's p99 during the load: 46 ms
against 68 (medians of six runs each, `experiments/swap_gc_pause.py [--switch-interval-ms 5]`; docs/BENCHMARKS.md).
Only while loading, where it was measured: steady serving keeps Python's default."""


@contextmanager
def short_gil_turns(interval_s: float = LOADING_SWITCH_INTERVAL_S) -> Iterator[None]:
    """Hand the GIL back to serving threads sooner while the loader thread runs Python."""
    default = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    try:
        yield
    finally:
        sys.setswitchinterval(default)


class State(enum.IntEnum):
    """Same numbers as tensorflow.serving.ModelVersionStatus.State."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class ModelRef:
    """What a request asks for: a model, and optionally a version or a label (not both)."""

    name: str
    version: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        for what, text in (("model name", self.name), ("version label", self.label)):
            if text is not None and len(text) > MAX_NAME_CHARS:
                raise InvalidArgument(f"{what} is {len(text)} characters long; at most {MAX_NAME_CHARS} "
                                      "are accepted")
        if self.version is not None and not -INT64_MAX - 1 <= self.version <= INT64_MAX:
            raise InvalidArgument("model version must be a 64-bit integer")

    def __str__(self) -> str:  # TF Serving's wording in NOT_FOUND messages
        if self.version is not None:
            return f"Specific({self.name}, {self.version})"
        if self.label is not None:
            return f"Label({self.name}, {self.label})"
        return f"Latest({self.name})"


@dataclass(eq=False)
class ModelVersion:
    model: str
    version: int
    path: Path
    state: State = State.START
    error: str = ""
    servable: Servable | None = None
    fingerprint: Fingerprint | None = None
    inflight: int = 0
    _idle: asyncio.Event | None = None


@dataclass(eq=False)
class _Model:
    config: ModelConfig
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)  # labels in effect (targets AVAILABLE)
    removed: bool = False
    missing_warned: bool = False
    ignored: set[str] = field(default_factory=set)  # directory names already logged as not versions

    def available(self, version: int | None) -> bool:
        mv = self.versions.get(version)
        return mv is not None and mv.state == State.AVAILABLE


class ModelManager:
    """Owns every model version's lifecycle; request handlers only `lease` AVAILABLE versions."""

    def __init__(self, config: PredictorConfig, load: Callable[[Path], Servable] | None = None) -> None:
        self._config = config
        self._load_fn = load or functools.partial(Servable.load, contract=config.required_signature,
                                                  max_input_bytes=config.max_request_bytes)
        self._models: dict[str, _Model] = {}
        self._loader = WorkerPool(1, thread_name_prefix="model-loader", initializer=_yield_to_serving)
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self._config_read_at: float | None = None
        self._last_config_error = ""
        self._closing = False

    # -- configuration ----------------------------------------------------------------------

    def read_config(self) -> None:
        """Apply the current model list; raises ConfigError (callers decide whether that is fatal)."""
        models = self._config.read_models()
        self._config_read_at = time.monotonic()
        wanted = {m.name: m for m in models}
        for name, model_config in wanted.items():
            model = self._models.get(name)
            if model is None:
                self._models[name] = _Model(model_config)
            else:
                if model.config.base_path != model_config.base_path:
                    model.missing_warned = False
                model.config, model.removed = model_config, False
        for name, model in self._models.items():
            if name not in wanted and not model.removed:
                log.info("Model %s removed from the config: unloading its versions", name)
                model.removed = True

    def _maybe_reread_config(self) -> None:
        every = self._config.config_poll_seconds
        due = self._config_read_at is None or (
            self._config.model_config_file is not None and every > 0
            and time.monotonic() - self._config_read_at >= every)
        if not due:
            return
        try:
            self.read_config()
            self._last_config_error = ""
        except ConfigError as exc:
            self._config_read_at = time.monotonic()
            if str(exc) != self._last_config_error:  # say it once, not every poll
                log.error("Keeping the previous model config: %s", exc)
                self._last_config_error = str(exc)

    # -- polling ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll forever (TF Serving's --file_system_poll_wait_seconds; <= 0 polls once)."""
        self._poller = asyncio.current_task()
        while True:
            try:
                self.poll()
            except Exception:  # a poll must never take the server down
                log.exception("Model repository poll failed")
            if self._config.file_system_poll_wait_seconds <= 0:
                return
            await asyncio.sleep(self._config.file_system_poll_wait_seconds)

    def poll(self) -> None:
        """One pass: re-read the config if due, then reconcile every model with its directory."""
        self._maybe_reread_config()
        for model in list(self._models.values()):
            self._reconcile(model)

    def _scan(self, model: _Model) -> dict[int, Path]:
        base = model.config.base_path
        try:
            with os.scandir(base) as listing:
                names = sorted((entry.name for entry in listing), key=lambda n: (len(n), n))  # '7' before '007'
        except OSError as exc:
            if not model.missing_warned:
                log.warning("No versions of model %s found under %s: %s", model.config.name, base, exc)
                model.missing_warned = True
            return {}
        found: dict[int, Path] = {}
        for name in names:
            version = version_number(name)
            if version is None or version in found:
                # '.tmp-3', 'latest', README ... are silently not versions; digit names deserve a word, once.
                if name.isascii() and name.isdigit() and name not in model.ignored:
                    model.ignored.add(name)
                    why = "versions must fit in int64" if version is None else "another name for the same version"
                    log.warning("Ignoring %s/%s: %s", base, clip(name, 60), why)
                continue
            if os.path.isfile(os.path.join(base, name, SAVED_MODEL)):  # else not (yet) a version
                found[version] = Path(base, name)
        return found

    def _reconcile(self, model: _Model) -> None:
        if self._closing:
            return
        on_disk = {} if model.removed else self._scan(model)
        usable = {v for v, path in on_disk.items() if not self._failed_before(model.versions.get(v), path)}
        aspired = model.config.version_policy.select(usable)
        aspired |= set(model.config.version_labels.values()) & usable
        for version in sorted(aspired, reverse=True):
            current = model.versions.get(version)
            if current is None or current.state == State.END:
                path = on_disk[version]
                mv = model.versions[version] = ModelVersion(model.config.name, version, path,
                                                            fingerprint=fingerprint(path))
                self._spawn(self._load(model, mv))
        self._move_labels(model)
        settled = all(model.versions[v].state in (State.AVAILABLE, State.END) for v in aspired)
        replaced = any(model.available(v) for v in aspired) or model.removed
        if settled and replaced:
            keep = aspired | set(model.labels.values())
            for mv in model.versions.values():
                if mv.version not in keep and mv.state == State.AVAILABLE:
                    mv.state = State.UNLOADING  # now, so no new request (or reconcile) picks it
                    self._spawn(self._unload(model, mv))
        if model.removed and all(mv.state == State.END for mv in model.versions.values()):
            self._models.pop(model.config.name, None)

    @staticmethod
    def _failed_before(mv: ModelVersion | None, path: Path) -> bool:
        """Failed, and none of its files changed since: retrying would fail the same way."""
        return (mv is not None and mv.state == State.END and bool(mv.error)
                and mv.path == path and mv.fingerprint == fingerprint(path))

    def _move_labels(self, model: _Model) -> None:
        labels = {}
        for label, target in ({} if model.removed else model.config.version_labels).items():
            if model.available(target):
                labels[label] = target
            elif model.available(model.labels.get(label)):
                labels[label] = model.labels[label]  # keep serving the old target until the new is up
        model.labels = labels

    # -- loading and unloading ----------------------------------------------------------------

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, model: _Model, mv: ModelVersion) -> None:
        mv.state = State.LOADING
        log.info("Loading servable version {name: %s version: %d} from %s", mv.model, mv.version, mv.path)
        started = time.monotonic()
        try:
            mv.servable = await asyncio.get_running_loop().run_in_executor(self._loader, self._load_unchanged, mv)
        except Exception as exc:
            mv.state, mv.error = State.END, _one_line(exc)
            log.error("Failed to load servable version {name: %s version: %d}: %s (kept out of service "
                      "until its files change)", mv.model, mv.version, mv.error)
        else:
            mv.state = State.AVAILABLE
            log.info("Successfully loaded servable version {name: %s version: %d} in %.2fs",
                     mv.model, mv.version, time.monotonic() - started)
        self._reconcile(model)

    def _load_unchanged(self, mv: ModelVersion) -> Servable:
        """Load in the loader thread; refuse the result if the files changed meanwhile (a copy in progress)."""
        with short_gil_turns():  # the one loader thread: loads never overlap
            servable = self._load_fn(mv.path)
        if fingerprint(mv.path) != mv.fingerprint:
            raise RuntimeError("its files changed while it was loading (still being written?); "
                               "it is loaded again once they change no more")
        return servable

    async def _unload(self, model: _Model, mv: ModelVersion) -> None:
        log.info("Unloading servable version {name: %s version: %d} after %d in-flight requests",
                 mv.model, mv.version, mv.inflight)
        if mv.inflight:
            mv._idle = asyncio.Event()
            await mv._idle.wait()
        mv.servable, mv.state = None, State.END
        log.info("Done unloading servable version {name: %s version: %d}", mv.model, mv.version)
        self._reconcile(model)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._loader.shutdown(wait=False, cancel_futures=True)

    # -- what request handlers use ------------------------------------------------------------

    def knows(self, name: str) -> bool:
        model = self._models.get(name)
        return model is not None and not model.removed

    def resolve(self, ref: ModelRef) -> ModelVersion:
        """The AVAILABLE version a request addresses, or the error TF Serving would give."""
        model = self._models.get(ref.name)
        if model is None or model.removed:
            raise NotFound(f"Servable not found for request: {ref}")
        version = self._version_of(model, ref)
        if version is None:
            versions = [v for v, mv in model.versions.items() if mv.state == State.AVAILABLE]
            if not versions:
                raise NotFound(f"Servable not found for request: {ref}")
            version = max(versions)
        if not model.available(version):
            raise NotFound(f"Servable not found for request: Specific({ref.name}, {version})")
        return model.versions[version]

    @contextmanager
    def lease(self, ref: ModelRef) -> Iterator[ModelVersion]:
        """Hold a version for the duration of a request, so unloading waits for it."""
        mv = self.resolve(ref)
        mv.inflight += 1
        try:
            yield mv
        finally:
            mv.inflight -= 1
            if mv.inflight == 0 and mv._idle is not None:
                mv._idle.set()

    def status(self, ref: ModelRef) -> list[ModelVersion]:
        """Versions for GetModelStatus, newest first (errors worded like TF Serving's)."""
        model = self._models.get(ref.name)
        if model is None or model.removed or not model.versions:
            raise NotFound(f"Could not find any versions of model {ref.name}")
        version = self._version_of(model, ref)
        if version is None:
            return [model.versions[v] for v in sorted(model.versions, reverse=True)]
        if version not in model.versions:
            raise NotFound(f"Could not find version {version} of model {ref.name}")
        return [model.versions[version]]

    @staticmethod
    def _version_of(model: _Model, ref: ModelRef) -> int | None:
        if ref.label is None:
            return ref.version
        if ref.label not in model.labels:
            raise InvalidArgument(f"Unrecognized servable version label: {ref.label}")
        return model.labels[ref.label]

    def snapshot(self) -> dict[str, dict[int, State]]:
        """Model -> version -> state, for readiness and metrics (safe to call from any thread)."""
        return {name: {v: mv.state for v, mv in list(model.versions.items())}
                for name, model in list(self._models.items()) if not model.removed}

    def labels(self, name: str) -> dict[str, int]:
        model = self._models.get(name)
        return dict(model.labels) if model else {}

    def is_ready(self) -> bool:
        """At least one AVAILABLE version of every configured model."""
        snapshot = self.snapshot()
        return bool(snapshot) and all(State.AVAILABLE in states.values() for states in snapshot.values())

    def problems(self) -> list[str]:
        """Why models can no longer be loaded or replaced (empty while all is well); for liveness."""
        found = []
        task = self._poller
        if task is not None and task.done() and (
                task.cancelled() or task.exception() is not None or self._config.file_system_poll_wait_seconds > 0):
            found.append("the model repository is no longer polled")
        if self._loader.closed:
            found.append("the model loader is shut down")
        return found


def _one_line(exc: Exception) -> str:
    """An exception as one line of valid UTF-8 (status protos reject lone surrogates from file names)."""
    text = " ".join(str(exc).split())
    return clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, 500)
