"""Errors a user can act on. Anything raising these maps to a clear message (CLI) or a 4xx (serving)."""


class FundusSegError(Exception):
    """Base class: the input or configuration is wrong, not the program."""


class ImageDecodeError(FundusSegError, ValueError):
    """Bytes that are not a usable fundus image (corrupt, empty, not an image, absurd size)."""


class DatasetError(FundusSegError, ValueError):
    """A dataset folder or manifest that cannot be used; the message lists the bad rows."""


class ModelRepositoryError(FundusSegError):
    """A model repository or version that does not exist or is incomplete."""
