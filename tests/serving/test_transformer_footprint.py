"""The transformer's process without TensorFlow: small at rest after answering, quick to be ready.

It holds no model (the predictor does), so it must not pay TensorFlow's resident set or import time;
in Serverless mode both are paid again on every scale-up. Measured on the real process
(`python -m serving.transformer`), against a running predictor, with a two-stage version.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from preprocessing.decode import decode_image
from serving.client import RestClient
from serving.local_service import free_port, http_status

pytestmark = pytest.mark.slow

MAX_RSS_MB = 300
MAX_READY_S = 3.0


MAX_PAGE_FAULTS_PER_REQUEST = 400  # glibc's default malloc: some 1,300 for the decoded photo alone


def _minor_faults(pid: int) -> int:
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat[stat.rindex(")") + 2 :].split()[7])  # field 10, minflt


def _rss_mb(pid: int) -> float:
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_ready_within_3_s_and_under_300_mb_after_answering(tmp_path, start_stack, publish_version,
                                                           two_stage_version, image_bytes):
    repo = tmp_path / "repo"
    publish_version(repo, 1, two_stage_version)
    stack = start_stack(repo)
    assert stack.wait_ready(120)
    http_port, grpc_port = free_port(), free_port()
    command = stack.config.transformer_command()
    command[command.index("--http_port") + 1], command[command.index("--grpc_port") + 1] = \
        str(http_port), str(grpc_port)
    url = f"http://127.0.0.1:{http_port}"
    with open(tmp_path / "transformer.log", "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while http_status(f"{url}/v2/health/ready", timeout=0.5) != 200:
                assert process.poll() is None, (tmp_path / "transformer.log").read_text()
                assert time.monotonic() - started < 30, "not ready within 30 s"
                time.sleep(0.02)
            ready_s = time.monotonic() - started
            [result] = RestClient(url).segment([image_bytes])
            assert result.pipeline == "two-stage" and result.mask().shape == decode_image(image_bytes).shape[:2]
            rss = _rss_mb(process.pid)
            client, faults = RestClient(url), _minor_faults(process.pid)
            for _ in range(10):
                client.segment([image_bytes])
            faults_per_request = (_minor_faults(process.pid) - faults) / 10
            rss_after_eleven = _rss_mb(process.pid)
            modules = subprocess.run(["grep", "-c", "tensorflow", f"/proc/{process.pid}/maps"],
                                     capture_output=True, text=True).stdout.strip()
        finally:
            process.terminate()
            process.wait(30)
    print(f"transformer ready in {ready_s:.2f} s, {rss:.0f} MB resident after answering, {rss_after_eleven:.0f} MB "
          f"after 11 answers, {faults_per_request:.0f} page faults per request")
    assert modules == "0", "a TensorFlow library is mapped into the transformer"
    assert rss <= MAX_RSS_MB, f"{rss:.0f} MB resident after answering (at most {MAX_RSS_MB})"
    assert ready_s <= MAX_READY_S, f"ready {ready_s:.2f} s after start (at most {MAX_READY_S})"
    assert rss_after_eleven <= MAX_RSS_MB, f"{rss_after_eleven:.0f} MB resident after 11 answers"
    assert faults_per_request <= MAX_PAGE_FAULTS_PER_REQUEST, (
        f"{faults_per_request:.0f} page faults per request: the photo's and masks' memory is not being reused "
        "(serving.heap.keep_request_buffers)")
