"""Regenerate dledger/_proto from protos/dledger.proto (run after editing the schema).

Usage: python scripts/gen_proto.py [OUT_DIR]   (default: dledger/_proto)

Needs grpcio-tools at the version pinned in pyproject.toml; tests/test_proto_fresh.py fails when the
committed code differs from what this script generates.
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
NAMES = ["dledger"]


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc  # imported late: only the test extra has it

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        args = [
            "protoc",
            f"--proto_path={PROTO_DIR}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_DIR / f"{name}.proto"),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed for {name}.proto")
        grpc_file = out_dir / f"{name}_pb2_grpc.py"
        # protoc writes a top-level import; the package needs a relative one
        text = grpc_file.read_text()
        text = text.replace(f"import {name}_pb2 as", f"from . import {name}_pb2 as")
        grpc_file.write_text(text)
    return sorted(p for p in out_dir.iterdir() if p.name.endswith((".py", ".pyi")) and p.name != "__init__.py")


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dledger" / "_proto"
    for path in generate(target):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
