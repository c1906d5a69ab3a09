"""The gRPC contracts: stubs match the .proto sources, and buf lint passes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_the_proto_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_drift_is_caught(tmp_path: Path) -> None:
    """Changing a .proto without regenerating makes the check fail."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "proto", copy / "proto")
    shutil.copytree(ROOT / "services" / "pb", copy / "services" / "pb")
    proto = copy / "proto" / "custos" / "chain" / "v1" / "chain.proto"
    proto.write_text(
        proto.read_text().replace(
            "message ListChainsRequest {}", "message ListChainsRequest {\n  string family = 1;\n}"
        )
    )
    result = subprocess.run(
        [sys.executable, str(copy / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "chain_pb2.py" in result.stdout


def test_buf_lint_passes() -> None:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent))
    if buf is None:
        pytest.fail("buf (PyPI buf-bin) is not installed in the project environment")
    result = subprocess.run([buf, "lint"], cwd=ROOT / "proto", capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
