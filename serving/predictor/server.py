"""PredictorServer: gRPC + REST on one event loop, models polled in the background.

Three ways to run it:
- `await server.start()` / `await server.stop()` inside an existing event loop;
- `server.run()` blocks until SIGTERM/SIGINT (what `python -m serving.predictor` does);
- `with PredictorServer(config) as server:` runs it in a background thread (tests, notebooks).

Ports are bound before start() returns (port 0 picks a free one; see `grpc_port`/`rest_port`), and
two TF Serving-style log lines announce them. Readiness (every model has an AVAILABLE version) is
`server.ready`, `wait_until_ready()`, or GET /readyz on the REST port; liveness (`liveness()`,
GET /healthz) fails once the process can no longer serve at all.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import grpc
from aiohttp import web

from serving.predictor.config import ConfigError, PredictorConfig
from serving.predictor.grpc_service import add_services
from serving.predictor.metrics import PredictorMetrics
from serving.predictor.model_manager import ModelManager, WorkerPool
from serving.predictor.prediction import PredictionCore
from serving.predictor.rest_api import RestApi, http_log

log = logging.getLogger(__name__)


class PredictorServer:
    def __init__(self, config: PredictorConfig) -> None:
        self.config = config
        self.metrics = PredictorMetrics()
        self.manager = ModelManager(config)
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._executor: WorkerPool | None = None
        self._grpc: grpc.aio.Server | None = None
        self._rest: web.AppRunner | None = None
        self._poller: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # -- async API ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the model config (ConfigError if unusable), bind both ports, start polling."""
        config = self.config
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        _configure_tensorflow(config)
        _check_contract_dtypes(config)
        self.manager.read_config()
        self.metrics.watch(self.manager)
        self._executor = WorkerPool(config.model_threads, thread_name_prefix="predict")
        core = PredictionCore(self.manager, self._executor, self.metrics, config.batching)

        try:
            await self._serve_grpc(core)
            await self._serve_rest(core)
        except BaseException:  # e.g. a port in use: release what was bound
            await self.stop()
            raise
        self._poller = asyncio.create_task(self.manager.run())
        log.info("Running gRPC ModelServer at %s:%d ...", config.host, self.grpc_port)
        log.info("Exporting HTTP/REST API at:%s:%d ...", config.host, self.rest_port)

    async def _serve_grpc(self, core: PredictionCore) -> None:
        config, limits = self.config, self.config.limits
        self._grpc = grpc.aio.server(maximum_concurrent_rpcs=limits.grpc_max_concurrent_rpcs, options=[
            ("grpc.max_receive_message_length", config.max_request_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_metadata_size", limits.grpc_max_metadata_bytes),
            ("grpc.max_concurrent_streams", limits.grpc_max_concurrent_streams),
            ("grpc.keepalive_time_ms", int(limits.grpc_keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(limits.grpc_keepalive_timeout_s * 1000)),
            ("grpc.max_connection_idle_ms", int(limits.grpc_max_connection_idle_s * 1000)),
        ])
        add_services(self._grpc, core, self.manager, config.max_request_bytes)
        address = f"{_host(config.host)}:{config.grpc_port}"
        try:
            self.grpc_port = self._grpc.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"cannot bind the gRPC port {address}: {exc}") from exc
        await self._grpc.start()

    async def _serve_rest(self, core: PredictionCore) -> None:
        config, limits = self.config, self.config.limits
        app = RestApi(core, self.manager, self.metrics, limits, self.liveness).app(config.max_request_bytes)
        self._rest = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=config.shutdown_grace_seconds,
            handler_cancellation=True, logger=http_log,  # a client that hangs up frees its slot at once
            max_line_size=limits.rest_max_line_bytes, max_field_size=limits.rest_max_field_bytes,
            max_headers=limits.rest_max_headers, keepalive_timeout=limits.rest_keepalive_timeout_s)
        await self._rest.setup()
        site = web.TCPSite(self._rest, config.host, config.rest_api_port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot bind the REST port {config.host}:{config.rest_api_port}: {exc}") from exc
        self.rest_port = self._rest.addresses[0][1]

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to shutdown_grace_seconds), unload."""
        if self._poller is not None:
            self._poller.cancel()
        if self._grpc is not None:
            await self._grpc.stop(self.config.shutdown_grace_seconds)
        if self._rest is not None:
            await self._rest.cleanup()
        await self.manager.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("Predictor stopped")

    async def serve(self, handle_signals: bool = False) -> None:
        """Start, run until request_stop() (or SIGTERM/SIGINT when handle_signals), then stop."""
        await self.start()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self._stop_requested.set)
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    async def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.ready

    # -- sync API -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.manager.is_ready()

    def liveness(self) -> list[str]:
        """Why this process can no longer serve (empty while it can); GET /healthz answers 503 then."""
        problems = self.manager.problems()
        if self._executor is not None and self._executor.closed:
            problems.append("the predict worker pool is shut down")
        return problems

    def run(self) -> None:
        """Serve in this thread until SIGTERM/SIGINT."""
        asyncio.run(self.serve(handle_signals=True))

    def request_stop(self) -> None:
        """Ask a running server to stop; safe from any thread."""
        if self._loop is not None and self._stop_requested is not None:
            self._loop.call_soon_threadsafe(self._stop_requested.set)

    def start_in_background(self, timeout: float = 60) -> PredictorServer:
        """Run in a daemon thread; returns once the ports are bound (re-raises start-up errors)."""
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            try:
                await self._stop_requested.wait()
            finally:
                await self.stop()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="predictor", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"predictor did not start within {timeout}s")
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def shutdown(self, timeout: float = 30) -> None:
        """Stop a server started with start_in_background and wait for it."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_until_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.ready

    def __enter__(self) -> PredictorServer:
        return self.start_in_background()

    def __exit__(self, *exc_info) -> None:
        self.shutdown()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _check_contract_dtypes(config: PredictorConfig) -> None:
    """A misspelt dtype in the required signature is a start-up error, not a failure of every version."""
    import tensorflow as tf

    contract = config.required_signature
    for tensor in () if contract is None else (*contract.inputs, *contract.outputs):
        for name in tensor.dtypes:
            try:
                tf.as_dtype(name)
            except TypeError:
                raise ConfigError(f"required signature: {tensor.key}: unknown dtype {name!r}") from None


def _configure_tensorflow(config: PredictorConfig) -> None:
    """Thread pools and GPU memory growth; only possible before TensorFlow's runtime starts."""
    import tensorflow as tf

    try:
        if config.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(config.tensorflow_intra_op_parallelism)
        if config.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(config.tensorflow_inter_op_parallelism)
        for gpu in tf.config.list_physical_devices("GPU"):  # share the GPU with training on one machine
            tf.config.experimental.set_memory_growth(gpu, True)
    except (RuntimeError, ValueError) as exc:
        log.debug("TensorFlow runtime already configured: %s", exc)
