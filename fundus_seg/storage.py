"""Object storage addressed by URI: ``s3://bucket/prefix`` or a local path / ``file://`` URI.

Training reads datasets and writes checkpoints and model versions, rollout reads
``metrics.json``, ``fundus-seg data push`` uploads datasets -- all through the functions here,
so every component works the same against a local folder (the one-machine default) and any
S3-compatible store (AWS, MinIO, Ceph RGW, GCS interop).

S3 is configured only by the standard AWS environment: ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``. With a custom endpoint,
path-style addressing is used, and checksums are only sent when an operation requires them
(set ``AWS_REQUEST_CHECKSUM_CALCULATION`` to override) so that stores without the newer
AWS checksum headers keep working.

The model repository's layout and publishing live in `fundus_seg.model_repository`, which
uses these functions.
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from fundus_seg.errors import StorageError
from fundus_seg.progress import transfer_progress

log = logging.getLogger(__name__)



STAGING_PREFIX = ".tmp-"  # hidden names: never mistaken for a version or a dataset file
UPLOAD_WORKERS = 8

Uri = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------------
# URIs


def is_s3(uri: Uri) -> bool:
    return str(uri).startswith("s3://")


def join(uri: Uri, *parts: str) -> str:
    """Append path parts, keeping the URI's form (``s3://``, ``file://`` or a plain path)."""
    uri = str(uri)
    if "://" not in uri:
        return os.path.join(uri, *parts)
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    return f"{uri.rstrip('/')}/{tail}" if tail else uri


def local_path(uri: Uri) -> Path:
    """The filesystem path of a plain path or ``file://`` URI."""
    uri = str(uri)
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        raise ValueError(f"not a local path or file:// URI: {uri}")
    return Path(uri)


def _split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/prefix URI: {uri}")
    return parsed.netloc, parsed.path.strip("/")


def _as_dir(key: str) -> str:
    return f"{key}/" if key else ""


# ---------------------------------------------------------------------------------------------
# Backends


class Storage(Protocol):
    """What both backends provide; every method takes full URIs of its own scheme."""

    def exists(self, uri: str) -> bool: ...
    def read_bytes(self, uri: str) -> bytes: ...
    def write_bytes(self, uri: str, data: bytes) -> None: ...
    def list_dir(self, uri: str) -> list[str]: ...
    def upload_files(self, local_dir: Path, files: Sequence[str], uri: str, advance: Callable[[int], None]) -> None: ...
    def download_dir(self, uri: str, local_dir: Path) -> None: ...
    def delete_prefix(self, uri: str) -> None: ...


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable: without it a crash can forget the new directory entry."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_copy(source: Path | bytes, target: Path) -> None:
    """Write a file so readers see the old content or the whole new one, never a part -- also after a
    crash: the data is fsynced before the rename and the directory after it, so a file written
    later (a checkpoint's state.json) never survives a crash that this one did not."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{STAGING_PREFIX}{uuid.uuid4().hex}-{target.name}")
    try:
        if isinstance(source, bytes):
            with open(tmp, "wb") as handle:
                handle.write(source)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _rename_into_place(tmp: Path, target: Path) -> None:
    """``os.rename`` a finished directory onto ``target``; FileExistsError when it holds files."""
    try:
        os.rename(tmp, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "already exists", str(target)) from exc
        raise


class LocalStorage:
    """A folder on this machine (plain path or file:// URI): the one-machine default."""

    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def read_bytes(self, uri: str) -> bytes:
        return local_path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        _atomic_copy(bytes(data), local_path(uri))

    def list_dir(self, uri: str) -> list[str]:
        path = local_path(uri)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    def upload_files(self, local_dir: Path, files: Sequence[str], uri: str, advance: Callable[[int], None]) -> None:
        target = local_path(uri)
        for name in files:
            _atomic_copy(local_dir / name, target / name)
            advance((local_dir / name).stat().st_size)

    def download_dir(self, uri: str, local_dir: Path) -> None:
        source = local_path(uri)
        if not source.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such directory", str(source))
        tmp = local_dir.with_name(f"{STAGING_PREFIX}{uuid.uuid4().hex}-{local_dir.name}")
        try:
            shutil.copytree(source, tmp)
            _rename_into_place(tmp, local_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def delete_prefix(self, uri: str) -> None:
        path = local_path(uri)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class S3Settings:
    """The client configuration, read from the standard AWS environment variables."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    checksums: str = "when_required"

    @classmethod
    def from_env(cls) -> S3Settings:
        env = os.environ.get
        return cls(
            endpoint_url=env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL") or None,
            region=env("AWS_REGION") or env("AWS_DEFAULT_REGION") or None,
            access_key_id=env("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env("AWS_SESSION_TOKEN") or None,
            checksums=env("AWS_REQUEST_CHECKSUM_CALCULATION") or "when_required",
        )


_client_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _s3_client(settings: S3Settings) -> Any:
    """One thread-safe client per configuration (creating clients is slow, sessions are not thread-safe)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=2 * UPLOAD_WORKERS,
        request_checksum_calculation=settings.checksums,
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )
    with _client_lock:
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            aws_session_token=settings.session_token,
            region_name=settings.region or "us-east-1",
        )
        return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_missing(exc: Exception) -> bool:
    return _error_code(exc) in ("404", "NoSuchKey", "NotFound")


def _inside(root: Path, relative: str, key: str) -> Path:
    """Where the object ``key`` lands under ``root``, refusing keys that would land anywhere else.

    S3 keys are free-form: ``a/../../x``, ``a//etc/x`` (an absolute path once joined), ``a\\x``
    or a NUL would write outside a download cache, so they are refused rather than guessed at.
    """
    parts = relative.split("/")
    unsafe = [p for p in parts if p in ("", ".", "..") or "\\" in p or "\0" in p]
    if unsafe or not (target := root.joinpath(*parts)).resolve().is_relative_to(root.resolve()):
        raise StorageError(f"refusing to download {key!r}: its key is not a plain relative path under the prefix "
                           "(empty, '.' or '..' segments, backslashes and NUL are not allowed)")
    return target


class S3Storage:
    """An S3-compatible bucket; "directories" are key prefixes ending in ``/``."""

    @property
    def client(self) -> Any:
        return _s3_client(S3Settings.from_env())

    def exists(self, uri: str) -> bool:
        """True for an object, or for a prefix with at least one object under it."""
        bucket, key = _split_s3(uri)
        if key:
            try:
                self.client.head_object(Bucket=bucket, Key=key)
                return True
            except Exception as exc:
                if not _is_missing(exc):
                    raise
        listing = self.client.list_objects_v2(Bucket=bucket, Prefix=_as_dir(key), MaxKeys=1)
        return listing.get("KeyCount", 0) > 0

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = _split_s3(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _is_missing(exc):
                raise FileNotFoundError(errno.ENOENT, "no such object", uri) from exc
            raise

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = _split_s3(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=bytes(data))

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        """Create-only write: False when the object already exists (``If-None-Match: *``)."""
        bucket, key = _split_s3(uri)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=bytes(data), IfNoneMatch="*")
            return True
        except Exception as exc:
            code = _error_code(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            if code not in ("NotImplemented", "InvalidArgument", "InvalidRequest", "501", "400"):
                raise
        log.warning("%s: endpoint rejects conditional writes; falling back to check-then-write", uri)
        if self.exists(uri):
            return False
        self.write_bytes(uri, data)
        return True

    def _keys(self, uri: str) -> Iterator[str]:
        bucket, key = _split_s3(uri)
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=_as_dir(key)):
            for item in page.get("Contents", []):
                yield item["Key"]

    def list_dir(self, uri: str) -> list[str]:
        bucket, key = _split_s3(uri)
        prefix = _as_dir(key)
        names: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            names.update(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
        names.discard("")  # a "folder marker" object
        return sorted(names)

    def upload_files(self, local_dir: Path, files: Sequence[str], uri: str, advance: Callable[[int], None]) -> None:
        bucket, key = _split_s3(uri)
        client = self.client

        def upload(name: str) -> None:
            client.upload_file(str(local_dir / name), bucket, _as_dir(key) + name, Callback=advance)

        with ThreadPoolExecutor(UPLOAD_WORKERS) as pool:
            list(pool.map(upload, files))  # list(): re-raise the first failure

    def download_dir(self, uri: str, local_dir: Path) -> None:
        bucket, key = _split_s3(uri)
        prefix = _as_dir(key)
        keys = [k for k in self._keys(uri) if not k.endswith("/")]
        if not keys:
            raise FileNotFoundError(errno.ENOENT, "no objects under", uri)
        tmp = local_dir.with_name(f"{STAGING_PREFIX}{uuid.uuid4().hex}-{local_dir.name}")
        targets = {k: _inside(tmp, k[len(prefix):], f"s3://{bucket}/{k}") for k in keys}  # all checked before any write
        client = self.client

        def download(k: str) -> None:
            targets[k].parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, k, str(targets[k]))

        try:
            with ThreadPoolExecutor(UPLOAD_WORKERS) as pool:
                list(pool.map(download, keys))
            _rename_into_place(tmp, local_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def delete_prefix(self, uri: str) -> None:
        """Delete the object ``uri`` and everything under ``uri/``."""
        bucket, key = _split_s3(uri)
        keys = list(self._keys(uri)) + ([key] if key else [])
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


def open_storage(uri: Uri) -> Storage:
    """The backend for a URI: ``s3://`` -> S3Storage, anything else -> LocalStorage."""
    return S3Storage() if is_s3(uri) else LocalStorage()


# ---------------------------------------------------------------------------------------------
# Functions on URIs: what the rest of the project calls


def exists(uri: Uri) -> bool:
    return open_storage(uri).exists(str(uri))


def read_bytes(uri: Uri) -> bytes:
    """The object's bytes; FileNotFoundError when it does not exist."""
    return open_storage(uri).read_bytes(str(uri))


def write_bytes(uri: Uri, data: bytes) -> None:
    """Write atomically: readers see the old object or the whole new one (local: tmp + os.replace)."""
    open_storage(uri).write_bytes(str(uri), data)


def read_json(uri: Uri) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: Uri, value: Any) -> None:
    write_bytes(uri, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n")


def list_dir(uri: Uri) -> list[str]:
    """Sorted names of the immediate children (files and "directories"); [] when there is none."""
    return open_storage(uri).list_dir(str(uri))


def _walk(local_dir: Path) -> list[str]:
    return sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())


def upload_dir(local_dir: Uri, uri: Uri, *, files: Iterable[str] | None = None, progress: bool = True) -> list[str]:
    """Copy a folder (or only ``files``, relative to it) under ``uri``; returns the relative paths copied.

    Each file is replaced atomically, but the folder as a whole is not: use publish_version
    for anything a reader must see complete or not at all.
    """
    local_dir = Path(local_dir)
    names = sorted(files) if files is not None else _walk(local_dir)
    total = sum((local_dir / n).stat().st_size for n in names)  # also fails early on a missing file
    with transfer_progress(progress, total, f"upload -> {uri}") as advance:
        open_storage(uri).upload_files(local_dir, names, str(uri), advance)
    return names


def download_dir(uri: Uri, local_dir: Uri) -> Path:
    """Download everything under ``uri`` into ``local_dir``, which must not exist yet (or be empty).

    Files land in a temporary sibling folder first and are renamed into place, so
    ``local_dir`` appears complete or not at all -- safe as a cache key.
    """
    local_dir = Path(local_dir)
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    open_storage(uri).download_dir(str(uri), local_dir)
    return local_dir


def delete_prefix(uri: Uri) -> None:
    """Delete ``uri`` and everything under it; a missing one is not an error."""
    open_storage(uri).delete_prefix(str(uri))
