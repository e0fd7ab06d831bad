"""Preprocessing's own errors: images and datasets that cannot be used (see fundus_seg.errors)."""
from fundus_seg.errors import FundusSegError


class ImageDecodeError(FundusSegError, ValueError):
    """Bytes that are not a usable fundus image (corrupt, empty, not an image, absurd size)."""


class DatasetError(FundusSegError, ValueError):
    """A dataset folder or manifest that cannot be used; the message lists the bad rows."""
