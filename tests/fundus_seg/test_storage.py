"""fundus_seg.storage against a local folder and a real S3 HTTP endpoint (moto)."""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from fundus_seg import model_repository, storage
from fundus_seg.errors import ModelRepositoryError, StorageError

MODEL = "optic-disc"


def make_saved_model(parent: Path, tag: str, shards: int = 3, shard_bytes: int = 64 * 1024) -> dict[str, bytes]:
    """A SavedModel-shaped folder whose every file names `tag`; returns {relative path: content}."""
    files = {
        "saved_model.pb": f"graph {tag}".encode(),
        "fingerprint.pb": f"fingerprint {tag}".encode(),
        "variables/variables.index": f"index {tag}".encode(),
        "metrics.json": json.dumps({"dice": 0.9, "tag": tag}).encode(),
        **{f"variables/variables.data-{i:05d}-of-{shards:05d}": tag.encode() + os.urandom(shard_bytes)
           for i in range(shards)},
    }
    for name, content in files.items():
        (parent / tag / name).parent.mkdir(parents=True, exist_ok=True)
        (parent / tag / name).write_bytes(content)
    return files


def read_version(repo: str, version: int) -> dict[str, bytes]:
    uri = model_repository.version_uri(repo, MODEL, version)
    names = ["saved_model.pb", "fingerprint.pb", "variables/variables.index"]
    files = {n: storage.read_bytes(storage.join(uri, n)) for n in names}
    shards = storage.list_dir(storage.join(uri, "variables"))
    files.update({f"variables/{n}": storage.read_bytes(storage.join(uri, "variables", n)) for n in shards})
    return files


# --- URIs and round trips ---------------------------------------------------------------------


def test_join_keeps_the_uri_form() -> None:
    assert storage.join("s3://b", "models", "optic-disc") == "s3://b/models/optic-disc"
    assert storage.join("s3://b/m/", "/x/", "y") == "s3://b/m/x/y"
    assert storage.join("file:///data/repo", "1") == "file:///data/repo/1"
    assert storage.join("/data/repo", "optic-disc", "1") == "/data/repo/optic-disc/1"
    assert storage.local_path("file:///data/my%20repo") == Path("/data/my repo")
    with pytest.raises(ValueError):
        storage.local_path("s3://b/k")


def test_bytes_round_trip_and_listing(root: str) -> None:
    uri = storage.join(root, "a", "b.bin")
    assert not storage.exists(uri)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(uri)
    storage.write_bytes(uri, b"one")
    storage.write_bytes(uri, b"two")  # replace
    storage.write_json(storage.join(root, "a", "c", "m.json"), {"dice": 0.5})
    assert storage.read_bytes(uri) == b"two"
    assert storage.read_json(storage.join(root, "a", "c", "m.json")) == {"dice": 0.5}
    assert storage.exists(storage.join(root, "a")) and storage.exists(uri)
    assert storage.list_dir(storage.join(root, "a")) == ["b.bin", "c"]
    assert storage.list_dir(storage.join(root, "nothing")) == []
    storage.delete_prefix(storage.join(root, "a"))
    assert not storage.exists(uri) and storage.list_dir(root) == []
    storage.delete_prefix(storage.join(root, "a"))  # missing: no error


def test_directory_round_trip(root: str, tmp_path: Path) -> None:
    files = make_saved_model(tmp_path, "m")
    uploaded = storage.upload_dir(tmp_path / "m", storage.join(root, "ckpt"), progress=True)
    assert sorted(files) == uploaded
    target = storage.download_dir(storage.join(root, "ckpt"), tmp_path / "copy" / "m")
    assert {n: (target / n).read_bytes() for n in files} == files
    assert [p.name for p in (tmp_path / "copy").iterdir()] == ["m"]  # no staging left behind
    with pytest.raises(FileExistsError):  # never merges into an existing download
        storage.download_dir(storage.join(root, "ckpt"), tmp_path / "copy" / "m")
    assert [p.name for p in (tmp_path / "copy").iterdir()] == ["m"]
    with pytest.raises(FileNotFoundError):
        storage.download_dir(storage.join(root, "missing"), tmp_path / "other")
    assert storage.upload_dir(tmp_path / "m", storage.join(root, "pb"), files=["saved_model.pb"]) == ["saved_model.pb"]
    assert storage.list_dir(storage.join(root, "pb")) == ["saved_model.pb"]


def test_file_uri(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/x/y.txt"
    storage.write_bytes(uri, b"hi")
    assert (tmp_path / "x" / "y.txt").read_bytes() == b"hi"
    assert storage.list_dir(f"file://{tmp_path}/x") == ["y.txt"]


@pytest.mark.parametrize("name", ["../../escape.txt", "../sibling/x.txt", "ABSOLUTE", "a//b.txt", "./x.txt",
                                  "a\\..\\..\\x.txt", "x\0y.txt"])
def test_download_refuses_keys_that_leave_the_folder(s3_bucket: str, tmp_path: Path, name: str) -> None:
    """S3 keys are free-form; one that would land outside the download folder stops the whole download."""
    bucket, prefix = s3_bucket.removeprefix("s3://"), "datasets/evil"
    if name == "ABSOLUTE":  # `prefix//<abs path>` joins to that absolute path
        name = str(tmp_path / "outside" / "x.txt")
    key = f"{prefix}/{name}"
    client = storage.S3Storage().client
    client.put_object(Bucket=bucket, Key=f"{prefix}/manifest.csv", Body=b"fine")
    client.put_object(Bucket=bucket, Key=key, Body=b"escaped")  # raw: join() would tidy the slashes
    cache = tmp_path / "cache" / "datasets"
    with pytest.raises(StorageError, match=re.escape(repr(f"s3://{bucket}/{key}"))):
        storage.download_dir(f"s3://{bucket}/{prefix}", cache / "evil")
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []  # nothing written, inside or out


def test_download_lands_inside_the_folder(s3_bucket: str, tmp_path: Path) -> None:
    storage.write_bytes(storage.join(s3_bucket, "d", "a..b", "c.txt"), b"dots inside a name are fine")
    target = storage.download_dir(storage.join(s3_bucket, "d"), tmp_path / "cache" / "d")
    files = [p.resolve() for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [(target / "a..b" / "c.txt").resolve()]
    assert all(f.is_relative_to(target.resolve()) for f in files)


# --- model repository -------------------------------------------------------------------------


def test_list_versions_ignores_partial_versions(root: str, tmp_path: Path) -> None:
    make_saved_model(tmp_path, "m")
    repo = storage.join(root, "models")
    for name in ("1", "3", ".tmp-0123abcd", "notes"):
        storage.upload_dir(tmp_path / "m", storage.join(repo, MODEL, name), progress=False)
    storage.write_bytes(storage.join(repo, MODEL, "2", "variables", "variables.index"), b"half")  # no pb
    storage.write_bytes(storage.join(repo, MODEL, "README.md"), b"a file, not a version")
    assert model_repository.list_versions(repo, MODEL) == [1, 3]
    assert model_repository.latest_version(repo, MODEL) == 3
    assert model_repository.next_version(repo, MODEL) == 4
    assert model_repository.list_versions(repo, "other") == [] and model_repository.latest_version(repo, "other") is None
    assert model_repository.next_version(repo, "other") == 1


def test_publish_numbers_versions_and_never_overwrites(root: str, tmp_path: Path) -> None:
    a, b = make_saved_model(tmp_path, "a"), make_saved_model(tmp_path, "b")
    repo = storage.join(root, "models")
    assert model_repository.publish_version(tmp_path / "a", repo, MODEL) == 1
    assert model_repository.publish_version(tmp_path / "b", repo, MODEL, version=7) == 7
    with pytest.raises(ModelRepositoryError, match="already exists"):
        model_repository.publish_version(tmp_path / "a", repo, MODEL, version=7)
    assert model_repository.publish_version(tmp_path / "a", repo, MODEL) == 8
    assert model_repository.list_versions(repo, MODEL) == [1, 7, 8]
    assert read_version(repo, 7) == {k: v for k, v in b.items() if k != "metrics.json"}
    assert read_version(repo, 1) == read_version(repo, 8) == {k: v for k, v in a.items() if k != "metrics.json"}
    assert storage.read_json(storage.join(model_repository.version_uri(repo, MODEL, 7), "metrics.json"))["tag"] == "b"
    assert not any(n.startswith(".tmp-") for n in storage.list_dir(storage.join(repo, MODEL)))
    with pytest.raises(ModelRepositoryError, match="not a SavedModel"):
        model_repository.publish_version(tmp_path, repo, MODEL)


def test_publish_refuses_a_version_holding_unclaimed_files(s3_bucket: str, tmp_path: Path) -> None:
    """S3: files someone put there without claiming (e.g. `aws s3 sync`) are never overwritten."""
    make_saved_model(tmp_path, "a")
    repo = storage.join(s3_bucket, "models")
    storage.write_bytes(storage.join(repo, MODEL, "5", "variables", "variables.index"), b"foreign")
    with pytest.raises(ModelRepositoryError):
        model_repository.publish_version(tmp_path / "a", repo, MODEL, version=5)
    assert storage.read_bytes(storage.join(repo, MODEL, "5", "variables", "variables.index")) == b"foreign"
    assert model_repository.publish_version(tmp_path / "a", repo, MODEL) == 6


def test_run_id_publishes_once(root: str, tmp_path: Path) -> None:
    make_saved_model(tmp_path, "a")
    make_saved_model(tmp_path, "b")
    repo = storage.join(root, "models")
    assert model_repository.publish_version(tmp_path / "a", repo, MODEL, run_id="run-1") == 1
    assert model_repository.publish_version(tmp_path / "a", repo, MODEL, run_id="run-1") == 1  # rerun of the Job
    assert model_repository.publish_version(tmp_path / "b", repo, MODEL, run_id="run-2") == 2
    assert model_repository.publish_version(tmp_path / "a", repo, MODEL) == 3  # no run id: always a new version
    assert model_repository.list_versions(repo, MODEL) == [1, 2, 3]
    metrics = storage.read_json(storage.join(model_repository.version_uri(repo, MODEL, 2), "metrics.json"))
    assert metrics == {"dice": 0.9, "tag": "b", "run_id": "run-2"}
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["tag"] == "b"  # source untouched
    assert "run_id" not in json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert model_repository.version_for_run(repo, MODEL, "run-2") == 2
    assert model_repository.version_for_run(repo, MODEL, "run-9") is None


class _Reader(threading.Thread):
    """Polls the repository like TF Serving would; records any version it sees incomplete."""

    def __init__(self, repo: str, models: dict[str, dict[str, bytes]], local: bool) -> None:
        super().__init__(daemon=True)
        self.repo, self.models, self.local = repo, models, local
        self.stop, self.problems, self.seen = threading.Event(), [], set()

    def run(self) -> None:
        while not self.stop.is_set():
            model_dir = storage.join(self.repo, MODEL)
            # locally every numeric directory must be complete; on S3 only those list_versions admits
            names = storage.list_dir(model_dir) if self.local else map(str, model_repository.list_versions(self.repo, MODEL))
            for name in (n for n in names if n.isdecimal()):
                try:
                    files = read_version(self.repo, int(name))
                except FileNotFoundError as exc:
                    self.problems.append(f"version {name}: missing {exc.filename}")
                    continue
                tag = files["saved_model.pb"].decode().split()[-1]
                expected = {k: v for k, v in self.models[tag].items() if k != "metrics.json"}
                if files != expected:
                    self.problems.append(f"version {name}: files differ from model {tag}")
                self.seen.add(int(name))


@pytest.mark.parametrize("publishers", [1, 4], ids=["sequential", "concurrent"])
def test_publish_is_atomic_under_a_polling_reader(root: str, tmp_path: Path, publishers: int) -> None:
    tags = [f"m{i}" for i in range(8)]
    models = {tag: make_saved_model(tmp_path, tag) for tag in tags}
    repo = storage.join(root, "models")
    reader = _Reader(repo, models, local=not storage.is_s3(root))
    results: dict[str, int] = {}
    start = threading.Barrier(publishers)

    def publish(batch: list[str]) -> None:
        start.wait()
        for tag in batch:
            results[tag] = model_repository.publish_version(tmp_path / tag, repo, MODEL)

    threads = [threading.Thread(target=publish, args=(tags[i::publishers],)) for i in range(publishers)]
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader.stop.set()
    reader.join()

    assert reader.problems == []
    assert reader.seen, "the reader never caught a version"
    assert sorted(results.values()) == list(range(1, len(tags) + 1))  # distinct versions, no gaps
    assert model_repository.list_versions(repo, MODEL) == list(range(1, len(tags) + 1))
    for tag, version in results.items():  # each version holds exactly its publisher's files
        assert read_version(repo, version) == {k: v for k, v in models[tag].items() if k != "metrics.json"}
        assert storage.read_json(storage.join(model_repository.version_uri(repo, MODEL, version), "metrics.json"))["tag"] == tag


def test_conditional_write_fallback(s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """An endpoint that rejects If-None-Match still gets create-only writes (check, then write)."""
    from botocore.exceptions import ClientError

    client = storage.S3Storage().client
    real_put = client.put_object

    def put_object(**kwargs):
        if "IfNoneMatch" in kwargs:
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "no"}}, "PutObject")
        return real_put(**kwargs)

    monkeypatch.setattr(client, "put_object", put_object)
    s3 = storage.S3Storage()
    uri = storage.join(s3_bucket, "x")
    assert s3.put_if_absent(uri, b"first")
    assert not s3.put_if_absent(uri, b"second")
    assert storage.read_bytes(uri) == b"first"
    assert "conditional writes" in caplog.text


def test_s3_settings_come_from_the_standard_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    settings = storage.S3Settings.from_env()
    assert (settings.endpoint_url, settings.region) == ("http://minio:9000", "eu-west-1")
    client = storage._s3_client(settings)
    assert client.meta.endpoint_url == "http://minio:9000" and client.meta.region_name == "eu-west-1"
