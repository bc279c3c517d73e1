"""The import cache: content-addressed, and a folder appears only complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_mcp.model.cache import SOURCE_RECORD, build_once, cached_folder, content_hash


def test_a_crash_mid_conversion_leaves_nothing_a_later_call_trusts(tmp_path: Path):
    def crash(folder: Path) -> dict:
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        build_once(tmp_path, "abc", crash, {"file": "x"})
    assert cached_folder(tmp_path, "abc") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abc.lock"]

    def build(folder: Path) -> dict:
        (folder / "model.safetensors").write_bytes(b"whole")
        return {"dtype": "bfloat16"}

    done = build_once(tmp_path, "abc", build, {"file": "x"})
    assert done == cached_folder(tmp_path, "abc") == tmp_path / "abc"
    assert (done / SOURCE_RECORD).read_text().count('"dtype": "bfloat16"') == 1
    assert build_once(tmp_path, "abc", crash, {}) == done  # built once: the second call does not build


def test_a_folder_left_by_a_killed_process_is_cleared_and_rebuilt(tmp_path: Path):
    stale = tmp_path / ".tmp-abc-999999"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    done = build_once(tmp_path, "abc", lambda folder: {}, {"file": "x"})
    assert not stale.exists() and (done / SOURCE_RECORD).is_file()


def test_the_hash_is_the_contents_and_remembered(tmp_path: Path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF same bytes")
    b.write_bytes(b"GGUF same bytes")
    root = tmp_path / "cache"
    assert content_hash(a, root) == content_hash(b, root)
    assert len((root / "hashes.json").read_text().splitlines()) == 4  # {, two entries, }
    b.write_bytes(b"GGUF other bytes")
    assert content_hash(a, root) != content_hash(b, root)
