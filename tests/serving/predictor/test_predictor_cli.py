"""`python -m serving.predictor`: TF Serving's flags and config files, start-up line, clean SIGTERM."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from serving.predictor.__main__ import build_parser, config_from_args
from serving.predictor.config import BatchingConfig, ConfigError, PredictorConfig, VersionPolicy, read_model_config_file
from tests.serving.predictor.helpers import images, rest

REPO_ROOT = Path(__file__).resolve().parents[3]


def parse(*argv: str) -> PredictorConfig:
    return config_from_args(build_parser().parse_args(argv))


def test_flags_mirror_tensorflow_model_server_and_accept_dashes(tmp_path):
    underscored = parse("--port=9000", "--rest_api_port", "9001", "--model_name", "optic-disc",
                        "--model_base_path", str(tmp_path), "--file_system_poll_wait_seconds", "2",
                        "--enable_batching", "--max_batch_size", "8", "--batch_timeout_micros", "500")
    dashed = parse("--port=9000", "--rest-api-port", "9001", "--model-name", "optic-disc",
                   "--model-base-path", str(tmp_path), "--file-system-poll-wait-seconds", "2",
                   "--enable-batching=true", "--max-batch-size", "8", "--batch-timeout-micros", "500")
    assert underscored == dashed
    assert (dashed.grpc_port, dashed.rest_api_port, dashed.model_name) == (9000, 9001, "optic-disc")
    assert dashed.batching == BatchingConfig(max_batch_size=8, batch_timeout_micros=500)
    assert parse("--model_base_path", str(tmp_path)).batching is None  # off by default, like TF Serving


def test_batching_parameters_file(tmp_path):
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }  # comment\n"
                      "num_batch_threads { value: 3 }\npad_variable_length_inputs: true\n")
    config = parse("--model_base_path", str(tmp_path), "--enable_batching",
                   "--batching_parameters_file", str(params), "--max_batch_size", "16")
    assert config.batching == BatchingConfig(max_batch_size=16, batch_timeout_micros=1000, num_batch_threads=3)


def test_model_config_file_policies_and_labels(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("""
        model_config_list {
          config { name: "a" base_path: "/models/a" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 1 versions: 2 } }
                   version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } }
          config { name: "b" base_path: "/models/b" model_version_policy { all {} } }
          config { name: "c" base_path: "/models/c" model_version_policy { latest { num_versions: 2 } } }
          config { name: "d" base_path: "/models/d" }
        }""")
    a, b, c, d = read_model_config_file(path)
    assert a.version_policy == VersionPolicy("specific", versions=frozenset({1, 2}))
    assert a.version_labels == {"stable": 1, "canary": 2}
    assert b.version_policy.select([3, 1, 2]) == {1, 2, 3}
    assert c.version_policy.select([3, 1, 2]) == {2, 3}
    assert d.version_policy.select([3, 1, 2]) == {3} and d.base_path == Path("/models/d")
    assert a.version_policy.select([2, 3]) == {2}


@pytest.mark.parametrize("text", [
    "model_config_list { config { name: 'a' } }",
    "model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }",
    "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'pytorch' } }",
    "not a config",
])
def test_bad_model_config_files_are_config_errors(tmp_path, text):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ConfigError):
        read_model_config_file(path)


def test_limit_and_contract_flags(tmp_path):
    from serving.predictor.config import ServerLimits, SignatureContract, TensorContract

    config = parse("--model_base_path", str(tmp_path), "--rest-body-timeout-s", "5",
                   "--grpc_max_concurrent_rpcs", "8", "--required_input", "images:float32:-1,128,128,3",
                   "--required_output", "disc_probability")
    assert config.limits == ServerLimits(rest_body_timeout_s=5.0, grpc_max_concurrent_rpcs=8)
    assert config.required_signature == SignatureContract(
        "serving_default", (TensorContract("images", "float32", (-1, 128, 128, 3)),),
        (TensorContract("disc_probability"),))
    assert parse("--model_base_path", str(tmp_path)).required_signature == SignatureContract()
    assert parse("--model_base_path", str(tmp_path), "--required_signature", "").required_signature is None
    with pytest.raises(ConfigError, match="rest_max_headers must be > 0"):
        parse("--model_base_path", str(tmp_path), "--rest_max_headers", "0")
    with pytest.raises(ConfigError, match="need a --required_signature"):
        parse("--model_base_path", str(tmp_path), "--required_signature", "", "--required_output", "x")
    with pytest.raises(ConfigError, match="dimensions are sizes or -1"):
        TensorContract.parse("images:float32:-2,3")
    either = TensorContract.parse("images:uint8|float32:-1,128,128,3")
    assert either.dtypes == ("uint8", "float32") and TensorContract.parse("images").dtypes == ()


def test_a_misspelt_contract_dtype_stops_the_start(tmp_path):
    from serving.predictor.config import SignatureContract, TensorContract
    from serving.predictor.server import PredictorServer

    contract = SignatureContract(inputs=(TensorContract("images", "uint8|flaot32"),))
    config = PredictorConfig(model_base_path=tmp_path, grpc_port=0, rest_api_port=0, host="127.0.0.1",
                             required_signature=contract)
    with pytest.raises(ConfigError, match="unknown dtype 'flaot32'"):
        PredictorServer(config).start_in_background()


def test_a_model_source_is_required_and_the_config_file_wins_once_it_exists(tmp_path):
    with pytest.raises(ConfigError):
        PredictorConfig()
    both = PredictorConfig(model_name="optic-disc", model_base_path=tmp_path, model_config_file=tmp_path / "models.config")
    assert [m.base_path for m in both.read_models()] == [tmp_path]  # no file yet: the base path
    with pytest.raises(ConfigError, match="cannot use model config file"):
        PredictorConfig(model_config_file=tmp_path / "models.config").read_models()


@pytest.mark.slow
def test_subprocess_start_announce_serve_and_stop_on_sigterm(tmp_path, publish):
    publish(tmp_path / "optic-disc", 1)
    command = [sys.executable, "-m", "serving.predictor", "--port", "0", "--rest_api_port", "0",
               "--host", "127.0.0.1", "--model_name", "optic-disc",
               "--model_base_path", str(tmp_path / "optic-disc"), "--file_system_poll_wait_seconds", "0.2",
               "--enable_batching", "--max_batch_size", "4"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        for line in process.stdout:
            output.append(line)
            lines.put(line)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ports: dict[str, int] = {}
        deadline = time.monotonic() + 90
        while len(ports) < 2 and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert process.poll() is None, "predictor exited during start-up"
                continue
            if match := re.search(r"Running gRPC ModelServer at [\d.]+:(\d+)", line):
                ports["grpc"] = int(match[1])
            if match := re.search(r"Exporting HTTP/REST API at:[\d.]+:(\d+)", line):
                ports["rest"] = int(match[1])
        assert len(ports) == 2, "start-up lines not seen"
        server = SimpleNamespace(rest_port=ports["rest"], grpc_port=ports["grpc"])
        deadline = time.monotonic() + 30
        while rest(server, "GET", "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, body = rest(server, "POST", "/v1/models/optic-disc:predict", {"instances": images(0).tolist()})
        assert status == 200 and len(body["predictions"]) == 1

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(10)
    assert "Predictor stopped" in "".join(output)


def test_unusable_config_exits_with_one_clear_line(tmp_path, capsys):
    from serving.predictor.__main__ import main

    assert main(["--model_config_file", str(tmp_path / "missing.config"), "--port", "0",
                 "--rest_api_port", "0"]) == 2
    assert "missing.config" in capsys.readouterr().err
    assert main(["--port", "0"]) == 2  # neither --model_base_path nor --model_config_file


def test_the_local_service_gives_its_predictor_one_tensorflow_op_thread(tmp_path):
    """The thread setting the benchmark measured reaches TensorFlow's runtime in the predictor's process."""
    from serving.local_service import LocalServiceConfig

    command = LocalServiceConfig(model_repo=tmp_path).predictor_command()
    assert command[1:3] == ["-m", "serving.predictor"]
    config = config_from_args(build_parser().parse_args(command[3:]))
    assert config.tensorflow_intra_op_parallelism == 1
    probe = ("import sys; from serving.predictor.__main__ import build_parser, config_from_args; "
             "from serving.predictor.server import _configure_tensorflow; import tensorflow as tf; "
             "_configure_tensorflow(config_from_args(build_parser().parse_args(sys.argv[1:]))); "
             "print(tf.config.threading.get_intra_op_parallelism_threads(), "
             "tf.config.threading.get_inter_op_parallelism_threads())")
    done = subprocess.run([sys.executable, "-c", probe, *command[3:]], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["1", "0"]  # inter-op stays TensorFlow's default
    default = LocalServiceConfig(model_repo=tmp_path, predictor_intra_op_threads=0).predictor_command()
    assert config_from_args(build_parser().parse_args(default[3:])).tensorflow_intra_op_parallelism == 0
