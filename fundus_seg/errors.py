"""The project's errors and exit codes, in one place.

Every error a user can act on derives from `FundusSegError`: the CLIs print it as one line and
exit with its `exit_code`, the services answer it with a 4xx. The exit codes are a contract with
Kubernetes (a Job's podFailurePolicy fails at once on 2 and 3 instead of retrying):

| code | meaning |
| --- | --- |
| 0 | done |
| 2 | the input or settings are wrong (fix them; a retry fails the same way) |
| 3 | a run trained but was not published: it falls below the latest version |
| 130 | interrupted (Ctrl-C) |
| 143 | stopped by SIGTERM (128 + 15); a Job's next pod resumes from the checkpoint |
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

EXIT_USAGE = 2
EXIT_PUBLISH_REFUSED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class FundusSegError(Exception):
    """Base class: the input or configuration is wrong, not the program."""

    exit_code = EXIT_USAGE


class StorageError(FundusSegError):
    """Object storage that cannot be reached or used (no such bucket, no credentials, ...)."""


class ModelRepositoryError(FundusSegError):
    """A model repository or version that does not exist, is incomplete, or cannot take a publish."""


@contextlib.contextmanager
def storage_errors(where: str = "object storage") -> Iterator[None]:
    """boto's exceptions (no such bucket, no credentials, endpoint down) as one StorageError line;
    the one place they are translated."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (Boto3Error, BotoCoreError, ClientError) as exc:
        raise StorageError(f"{where}: {exc}") from exc


def exit_code(exc: BaseException) -> int:
    """The exit status a CLI ends with after `exc`."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return int(getattr(exc, "exit_code", EXIT_USAGE))
