"""Import TensorFlow without its start-up noise, unless asked for it.

Importing TensorFlow and probing for GPUs writes eight lines or so straight to file descriptor 2
(absl's pre-init notice, cudart and cuInit probing, CPU features), before any of the tool's own
output and past Python's logging. A user of `fundus-seg evaluate` should see its one-line answer;
TensorFlow's lines are kept and shown with `--verbose`, or when the import itself fails.
"""
from __future__ import annotations

import os
import sys
import tempfile


def load_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and enumerate its devices once; its noise reaches stderr only if `verbose`."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = True
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA probing prints here, once
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if verbose or failed:
                sink.seek(0)
                os.write(2, sink.read())
