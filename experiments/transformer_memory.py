"""The figures behind docs/SERVING.md "Memory": the transformer's resident memory at rest, per
decoded pixel, and per byte of JSON body, read from /proc/<pid>/status around one request.

    .venv/bin/python experiments/transformer_memory.py

Starts `fundus-seg serve`'s two processes on free ports with the bundled model, warms them up
with a DRISHTI photo, then resets the transformer's peak (VmHWM) before each measured request.
"""
from __future__ import annotations

import base64
import json
import tempfile
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from fundus_seg.paths import BUNDLED_MODEL_REPO, SHARED_DATA
from serving.local_service import LocalService, LocalServiceConfig

MiB = 1024 * 1024


def kib(pid: int, field: str) -> int:
    line = next(row for row in Path(f"/proc/{pid}/status").read_text().splitlines() if row.startswith(field + ":"))
    return int(line.split()[1])


def post(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def peak_growth_mib(pid: int, send) -> tuple[int, float]:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS
    before = kib(pid, "VmRSS")
    status = send()
    return status, (kib(pid, "VmHWM") - before) / 1024


def main() -> None:
    photo = (SHARED_DATA / "drishti-gs1" / "images" / "drishtiGS_002.jpg").read_bytes()
    side = 6320  # the largest square within the 40 M pixel limit
    image = np.zeros((side, side, 3), np.uint8)
    cv2.circle(image, (side // 2, side // 2), side // 3, (230, 180, 90), -1)
    png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    with tempfile.TemporaryDirectory() as logs:
        config = LocalServiceConfig(model_repo=BUNDLED_MODEL_REPO, http_port=0, grpc_port=0, predictor_grpc_port=0,
                                    predictor_rest_port=0, log_dir=Path(logs))
        with LocalService(config) as service:
            assert service.wait_ready(120)
            url = f"{config.url}/v1/models/optic-disc:predict"
            pid = service.processes["transformer"].pid
            for _ in range(3):
                post(url, photo, "image/jpeg")
            print(f"at rest, after answering: {kib(pid, 'VmRSS') / 1024:.0f} MiB")
            status, grown = peak_growth_mib(pid, lambda: post(url, json.dumps(
                {"instances": [{"b64": base64.b64encode(png).decode()}] * 2}).encode(), "application/json"))
            print(f"two {side}x{side} PNGs ({len(png) // 1024} KB each): HTTP {status}, peak +{grown:.0f} MiB "
                  f"= {grown * MiB / (side * side):.1f} bytes per pixel of one image")
            body = b'{"instances": [{"b64": "' + b"A" * (60 * MiB) + b'"}]}'  # refused after decoding the JSON
            status, grown = peak_growth_mib(pid, lambda: post(url, body, "application/json"))
            print(f"a {len(body) / MiB:.0f} MiB JSON body: HTTP {status}, peak +{grown:.0f} MiB "
                  f"= {grown * MiB / len(body):.1f}x the body")


if __name__ == "__main__":
    main()
