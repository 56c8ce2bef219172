"""Regenerates the gRPC stubs in `_proto/` from the repository's `proto/` directory.

    python -m converge_ledger._gen_stubs PROTO_DIR OUT_DIR

Runs grpcio-tools' protoc, then makes the generated service module import its message
module relatively (protoc writes an absolute `converge.context.v1` import), so the stubs
live inside this package. `tests/test_stubs.py` regenerates them into a temporary
directory and compares, so the committed stubs cannot drift from the proto.
"""

from __future__ import annotations

import pathlib
import sys

PROTO = "converge/context/v1/context.proto"
FILES = ("context_pb2.py", "context_pb2.pyi", "context_pb2_grpc.py")


def generate(proto_dir: pathlib.Path, out_dir: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc  # only needed to regenerate

    import importlib.resources

    tmp = out_dir / "_gen"
    tmp.mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(proto_dir / PROTO),
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed with status {rc}")
    src = tmp / pathlib.Path(PROTO).parent
    written = []
    for name in FILES:
        text = (src / name).read_text()
        text = text.replace(
            "from converge.context.v1 import context_pb2", "from . import context_pb2"
        )
        dest = out_dir / name
        dest.write_text(text)
        written.append(dest)
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    tmp.rmdir()
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m converge_ledger._gen_stubs PROTO_DIR OUT_DIR")
    for p in generate(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])):
        print(p)
