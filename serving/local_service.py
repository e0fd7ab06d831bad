"""The one-machine service: predictor and transformer as two child processes on 127.0.0.1.

The same two programs as the two containers of the KServe InferenceService in the cluster
(`python -m serving.predictor` in place of TF Serving, `python -m serving.transformer`), so
what runs here is what runs there. Children get their own session, so a Ctrl-C in the terminal
reaches only `fundus-seg serve`, which then stops both children once and cleanly.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fundus_seg.errors import FundusSegError
from fundus_seg.paths import BUNDLED_MODEL_REPO, DEFAULT_MODEL_NAME
from serving.rollout.record import MODELS_CONFIG, ROLLOUT_JSON  # the rollout's local contract


class LocalServiceError(FundusSegError):
    """The local service could not start or died."""


@dataclass
class LocalServiceConfig:
    model_repo: Path = BUNDLED_MODEL_REPO
    model_name: str = DEFAULT_MODEL_NAME
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    predictor_grpc_port: int = 8500
    predictor_rest_port: int = 8501
    predictor_api: str = "grpc"  # how the transformer calls the predictor
    enable_batching: bool = False
    # One TensorFlow op thread per model call: here three processes share the machine's cores, and a
    # batch-1 128x128 U-Net gains less from a second op thread than it loses to the contention
    # (experiments/predictor_threads.py; docs/BENCHMARKS.md). 0 = TensorFlow's default (all cores).
    predictor_intra_op_threads: int = 1
    poll_seconds: float = 1.0
    log_dir: Path | None = None  # None: children write to this process's stdout/stderr
    extra_transformer_args: list[str] = field(default_factory=list)
    extra_predictor_args: list[str] = field(default_factory=list)  # e.g. --batching_parameters_file
    verbose: bool = False  # TensorFlow's start-up lines from both processes

    def __post_init__(self) -> None:
        self.model_repo = Path(self.model_repo).resolve()
        for name in ("http_port", "grpc_port", "predictor_grpc_port", "predictor_rest_port"):
            if getattr(self, name) == 0:
                setattr(self, name, free_port(self.host))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def predictor_command(self) -> list[str]:
        # The base path serves until a rollout writes models.config; from then on the file governs.
        models = ["--model_base_path", str(self.model_repo / self.model_name),
                  "--model_config_file", str(self.model_repo / MODELS_CONFIG)]
        return [sys.executable, "-m", "serving.predictor", "--host", self.host,
                "--port", str(self.predictor_grpc_port), "--rest_api_port", str(self.predictor_rest_port),
                "--model_name", self.model_name, *models,
                "--file_system_poll_wait_seconds", str(self.poll_seconds),
                # the serving contract (fundus_seg.model_repository): a version without it never serves
                "--required_input", "images:uint8|float32:-1,128,128,3",
                "--required_output", "disc_probability:float32:-1,128,128,1",
                "--tensorflow_intra_op_parallelism", str(self.predictor_intra_op_threads),
                *(["--enable_batching"] if self.enable_batching else []), *(["--verbose"] if self.verbose else []),
                *self.extra_predictor_args]

    def transformer_command(self) -> list[str]:
        port = self.predictor_grpc_port if self.predictor_api == "grpc" else self.predictor_rest_port
        return [sys.executable, "-m", "serving.transformer", "--host", self.host,
                "--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port),
                "--model_name", self.model_name, "--predictor_host", f"{self.host}:{port}",
                "--predictor_api", self.predictor_api,
                "--rollout_file", str(self.model_repo / ROLLOUT_JSON),
                *(["--verbose"] if self.verbose else []), *self.extra_transformer_args]


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if this process dies without stopping it (no orphans)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


class LocalService:
    """`with LocalService(config) as stack:` starts both processes and waits until they answer."""

    def __init__(self, config: LocalServiceConfig) -> None:
        self.config = config
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list[IO] = []

    def start(self, timeout: float = 180.0) -> LocalService:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "PYTHONUNBUFFERED": "1"}
        try:
            for name, command in (("predictor", self.config.predictor_command()),
                                  ("transformer", self.config.transformer_command())):
                self.processes[name] = subprocess.Popen(command, env=env, start_new_session=True,
                                                        preexec_fn=_die_with_parent, **self._output(name))
            self.wait_live(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _output(self, name: str) -> dict:
        if self.config.log_dir is None:
            return {}
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.config.log_dir / f"{name}.log", "ab")
        self._logs.append(log)
        return {"stdout": log, "stderr": subprocess.STDOUT}

    def check(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                where = f"; see {self.config.log_dir / (name + '.log')}" if self.config.log_dir else ""
                raise LocalServiceError(f"the {name} exited with status {process.returncode}{where}")

    def wait_live(self, timeout: float) -> None:
        """Both processes answer HTTP (a model need not be loaded yet)."""
        deadline = time.monotonic() + timeout
        urls = (f"http://{self.config.host}:{self.config.predictor_rest_port}/healthz", f"{self.config.url}/")
        while not all(http_status(url) == 200 for url in urls):
            self.check()
            if time.monotonic() > deadline:
                raise LocalServiceError(f"the service did not start within {timeout:.0f}s")
            time.sleep(0.2)

    def ready(self) -> bool:
        """A model version is loaded and the transformer can use it."""
        return http_status(f"{self.config.url}/v1/models/{self.config.model_name}") == 200

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready():
            self.check()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def wait(self) -> int:
        """Block until a child exits (then stop the other); returns its exit status."""
        while True:
            for process in self.processes.values():
                if process.poll() is not None:
                    self.stop()
                    return process.returncode
            time.sleep(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """Drain in order: SIGTERM the transformer and wait until it has exited (it finishes its
        in-flight requests, which still need the predictor), then SIGTERM the predictor."""
        deadline = time.monotonic() + timeout
        for name in ("transformer", "predictor"):
            process = self.processes.get(name)
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
