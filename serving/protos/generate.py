"""Regenerate the Python modules of the vendored TF Serving protos: `python -m serving.protos.generate [OUT]`.

Runs grpcio-tools' protoc over `src/` and rewrites its output in two ways, so that these modules
never meet TensorFlow's own:

* imports point into this package (`from serving.protos.tensorflow.core.framework import tensor_pb2`),
  never to the top-level `tensorflow`/`tensorflow_serving` packages;
* descriptors go into this package's own pool (`_pool.POOL`), not protobuf's default one, where
  TensorFlow registers its files of the same names (ours are a subset of them, which the default
  pool would refuse as a duplicate file). The wire format knows nothing of pools: a message
  serializes to the same bytes either way, which tests/serving/test_protos_contract.py checks.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
TOP_LEVEL = ("tensorflow", "tensorflow_serving", "xla")
SERVICES = {"tensorflow_serving/apis/prediction_service.proto", "tensorflow_serving/apis/model_service.proto"}


def _rewrite(text: str) -> str:
    names = "|".join(TOP_LEVEL)
    text = re.sub(rf"^from ({names})((?:\.\w+)*) import", r"from serving.protos.\1\2 import", text, flags=re.M)
    text = re.sub(rf"^import ({names})((?:\.\w+)*)", r"import serving.protos.\1\2", text, flags=re.M)
    text = text.replace("_descriptor_pool.Default()", "_pool.POOL")
    text = text.replace("from google.protobuf import descriptor_pool as _descriptor_pool\n",
                        "from serving.protos import _pool\n")
    text = re.sub(rf"'(({names})(?:\.\w+)+_pb2)'", r"'serving.protos.\1'", text)  # classes' __module__
    return text


def generate(out: Path = HERE) -> int:
    """Write the modules of every proto in `src/` under `out` (this package by default); 0 on success."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(SOURCES)) for p in SOURCES.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = ["protoc", f"-I{SOURCES}", f"-I{include}", f"--python_out={out}"]
    if protoc.main([*args, *protos]) or protoc.main([*args, f"--grpc_python_out={out}", *sorted(SERVICES)]):
        print("protoc failed", file=sys.stderr)
        return 1
    for top in TOP_LEVEL:
        for module in (out / top).rglob("*.py"):
            if module.name != "__init__.py":
                module.write_text(_rewrite(module.read_text()))
        for folder in [out / top, *(p for p in (out / top).rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
    print(f"generated {len(protos)} protos into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
