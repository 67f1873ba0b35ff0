"""Atomic writes: a failure or a kill mid-write leaves the old file or folder intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model.files import (
    file_sha256,
    staged_directory,
    write_atomically,
    write_bytes_atomically,
    write_text_atomically,
)

REPO = Path(__file__).resolve().parents[2]


def test_text_and_bytes_replace_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "config.json"
    write_text_atomically(target, "first")
    write_text_atomically(target, "second ü")
    assert target.read_text(encoding="utf-8") == "second ü"
    write_bytes_atomically(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["config.json"]


def test_a_failing_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")

    def broken(stream) -> None:
        stream.write(b"half of the new conte")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_killed_writer_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    """SIGKILL in the middle of writing 50 MB: the target still holds the old text."""
    target = tmp_path / "big.bin"
    target.write_text("old")
    code = (
        "import os, signal\n"
        "from model.files import write_atomically\n"
        "def write(stream):\n"
        "    stream.write(b'x' * 50_000_000)\n"
        "    stream.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"write_atomically({str(target)!r}, write)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False)
    assert completed.returncode == -9
    assert target.read_text() == "old"


def test_staged_directory_replaces_a_folder_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with staged_directory(target) as staging:
        (staging / "a.txt").write_text("1")
    with staged_directory(target) as staging:
        (staging / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "c.txt").write_text("3")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_sha256_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert file_sha256(path) == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
