"""The container images, checked without a Docker daemon: what goes in, who runs, what starts."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = {"Dockerfile.training": ["python", "-m", "training_job"],
          "Dockerfile.transformer": ["python", "-m", "serving.transformer"]}


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / dockerfile).read_text())
    return [(line.split()[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("dockerfile", IMAGES)
def test_image_is_pinned_slim_non_root_and_carries_no_model_or_data(dockerfile):
    steps = instructions(dockerfile)
    base = next(v for k, v in steps if k == "ARG" and v.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM"):]
    assert ("USER", "1000:1000") in final  # the charts' runAsUser
    copied = " ".join(v for k, v in steps if k == "COPY")
    assert not re.search(r"\b(models|runs|tests|shared|data|\.venv)\b", copied)
    assert "-c /tmp/constraints.txt" in " ".join(v for k, v in steps if k == "RUN")
    entrypoint = next(v for k, v in final if k == "ENTRYPOINT")
    assert entrypoint == str(IMAGES[dockerfile]).replace("'", '"')  # what k8s/ and charts/ run


def test_build_context_is_an_allow_list():
    lines = [l for l in (REPO / ".dockerignore").read_text().splitlines() if l and not l.startswith("#")]
    assert lines[0] == "*"
    assert not any(l.startswith("!") and re.search(r"models|runs|tests|\.venv|\.git", l) for l in lines)


def _lock_module():
    sys.path.insert(0, str(REPO / "docker"))
    try:
        import lock_runtime
    finally:
        sys.path.pop(0)
    return lock_runtime


def test_constraints_pin_the_tested_runtime_dependencies():
    """What is installed here (through the lock) is exactly the lock: a dependency added or changed
    in pyproject.toml without re-locking shows up as a difference."""
    lock = _lock_module()
    pinned = dict(l.split("==") for l in lock.LOCK.read_text().splitlines() if "==" in l)
    assert pinned == lock.closure("fundus-seg", lock.LOCKED_EXTRAS), \
        "dependencies changed: re-lock as docker/lock_runtime.py's docstring says"


def test_every_install_goes_through_the_lock():
    readme = (REPO / "README.md").read_text()
    commands = [line for line in readme.splitlines() if "pip install" in line and line.lstrip().startswith("python3.11")]
    assert len(commands) == 2 and all("-c docker/constraints.txt" in line for line in commands), commands
    ci = (REPO / ".ci/run").read_text()
    assert all("-c docker/constraints.txt" in line for line in ci.splitlines() if "pip install" in line)


def test_the_transformer_installs_no_tensorflow():
    """The base install is the transformer's: no TensorFlow (nor the official TF Serving messages,
    which need it) among its locked dependencies; the model-running parts ask for the extra."""
    lock = _lock_module()
    base = lock.closure("fundus-seg")
    assert not {"tensorflow", "tensorflow-serving-api", "keras", "tensorboard"} & base.keys()
    assert {"tensorflow", "tensorflow-serving-api"} <= lock.closure("fundus-seg", ("tensorflow",)).keys()
    installs = {name: [v for k, v in instructions(name) if k == "RUN" and "pip install" in v][0] for name in IMAGES}
    assert "pip install -c /tmp/constraints.txt /src " in installs["Dockerfile.transformer"]  # no extras
    assert "find_spec('tensorflow') is not None" in installs["Dockerfile.transformer"]  # and the build checks it
    assert '"/src[tensorflow]"' in installs["Dockerfile.training"]


def test_the_lock_follows_requested_extras(tmp_path):
    """moto[server] needs flask: the closure walks a requirement's extras, not only its base."""
    lock = _lock_module()
    assert {"moto", "flask", "hypothesis"} <= lock.closure("fundus-seg", ("test",)).keys()
    assert "moto" not in lock.closure("fundus-seg")
