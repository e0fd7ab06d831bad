"""`fundus-seg serve` and `fundus-seg segment` as a user runs them: real processes, Ctrl-C included."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import cv2
import pytest

from preprocessing.decode import decode_image
from serving.local_service import free_port, http_status
from tests.serving.helpers import eventually

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "fundus_seg.cli"]


def test_serve_segment_and_ctrl_c(tmp_path, publish_version, drishti):
    repo = tmp_path / "repo"
    publish_version(repo, 1)
    ports = [free_port() for _ in range(4)]
    serve = subprocess.Popen(CLI + ["serve", "--model-repo", str(repo), "--http-port", str(ports[0]),
                                    "--grpc-port", str(ports[1]), "--predictor-grpc-port", str(ports[2]),
                                    "--predictor-rest-port", str(ports[3])],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{ports[0]}"
    try:
        eventually(lambda: serve.poll() is not None or http_status(f"{url}/v1/models/optic-disc") == 200, timeout=180)
        assert serve.poll() is None, serve.stdout.read()

        images = [str(drishti[0][0]), str(drishti[1][0]), str(tmp_path / "missing.jpg")]
        for where in (["--url", url], ["--grpc", f"127.0.0.1:{ports[1]}"]):
            out = tmp_path / where[0].strip("-")
            done = subprocess.run(CLI + ["segment", *images, *where, "--overlay", str(out), "--masks", str(out)],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 1, done.stderr  # the missing file fails, the others do not
            lines = [json.loads(line) for line in done.stdout.splitlines()]
            assert [line["image"] for line in lines] == images
            assert "error" in lines[2]
            for line, (image_path, _) in zip(lines[:2], drishti[:2]):
                assert line["model_version"] == 1 and "area_px" in line["disc"]
                overlay = cv2.imread(line["overlay"])
                assert overlay.shape == decode_image(image_path.read_bytes()).shape
                assert cv2.imread(line["mask"], cv2.IMREAD_GRAYSCALE).shape == overlay.shape[:2]
    finally:
        serve.send_signal(signal.SIGINT)  # what Ctrl-C does
        output, _ = serve.communicate(timeout=120)  # generous: a loaded 2-core CI machine
    assert serve.returncode == 0, output
    assert "stopping" in output
    assert http_status(f"{url}/") is None and http_status(f"http://127.0.0.1:{ports[3]}/healthz") is None


def test_stop_drains_in_flight_requests_before_the_predictor_goes(start_stack, tmp_path, publish_version, drishti):
    """SIGTERM reaches the transformer first; what it is still answering completes with 200, and the
    predictor stops only after the transformer has exited."""
    import base64
    import threading
    import time

    from tests.serving.helpers import http

    repo = tmp_path / "repo"
    publish_version(repo, 1)
    stack = start_stack(repo)
    assert stack.wait_ready(120)
    import cv2
    import numpy as np

    big = np.zeros((4000, 4000, 3), np.uint8)  # 16 M pixels: about a second to decode and finish each
    cv2.circle(big, (2000, 2000), 1200, (230, 180, 90), -1)
    png = base64.b64encode(cv2.imencode(".png", big)[1].tobytes()).decode()
    body = {"instances": [{"b64": png}] * 4}
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(
        http(f"{stack.config.url}/v1/models/optic-disc:predict", body)[0])) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # sent and being decoded: 12 such images take several seconds on two cores
    assert not answers, "the requests ended before the stop: the test would prove nothing"
    stack.stop()
    for thread in threads:
        thread.join(60)
    assert answers == [200, 200, 200]
    transformer, predictor = stack.processes["transformer"], stack.processes["predictor"]
    assert transformer.returncode == 0 and predictor.returncode == 0
    log = _transformer_log(stack)
    assert "draining in-flight requests" in log and "Transformer stopped" in log


def _transformer_log(stack) -> str:
    return (stack.config.log_dir / "transformer.log").read_text(errors="replace")
