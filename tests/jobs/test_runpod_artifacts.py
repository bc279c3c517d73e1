"""The pod's artifact archive, as our WorkerClient receives it over real HTTP from a loopback server
playing a hostile pod: a member aimed at a file only this side writes (`./spec.json`, `a/../x`),
out of the folder, absolute, a link or a device refuses the WHOLE archive and changes nothing;
an honest archive lands, replacing what it names and nothing else."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from finetune_mcp.jobs.backends.runpod.client import STAGING_PREFIX, ArtifactsRefused, WorkerClient

TOKEN = "t" * 40


class FakePod:
    """Serves `GET /artifacts` with whatever tar bytes the test sets, checking the bearer token."""

    def __init__(self) -> None:
        self.body = b""
        pod = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                ok = self.path == "/artifacts" and self.headers.get("Authorization") == f"Bearer {TOKEN}"
                body = pod.body if ok else b"{}"
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/x-tar" if ok else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def pod() -> Iterator[FakePod]:
    fake = FakePod()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def tar_of(*members: tuple[str, bytes | str | None, str]) -> bytes:
    """(name, content, type) with type file | dir | symlink (content = target) | hardlink | fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = content if isinstance(content, bytes) else str(content).encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = str(content)
            tar.addfile(info)
    return buffer.getvalue()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "spec.json").write_text('{"model": "local"}')
    (run / "events.jsonl").write_text('{"type": "start"}\n')
    (run / ".runpod.json").write_text('{"events_offset": 17}')
    (run / "adapter" / "old.bin").write_bytes(b"old")
    return run


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


HOSTILE = [
    ("./spec.json", [("./spec.json", "pwned", "file")]),
    ("a/../events.jsonl", [("adapter/x.bin", "ok", "file"), ("adapter/../events.jsonl", "pwned", "file")]),
    ("./.runpod.json", [("./.runpod.json", '{"collected": true}', "file")]),
    # issue 26 bug 4: export/exports.json names the files deploy_to_hf uploads; only export_model writes it
    ("export/", [("export/exports.json", '[{"gguf": "/etc/hostname", "modelfile": "/etc/hostname"}]', "file")]),
    ("./export", [("./export", None, "dir")]),
    ("absolute", [("/tmp/finetune-mcp-escape.txt", "pwned", "file")]),
    ("parent", [("../escape.txt", "pwned", "file")]),
    ("deep parent", [("adapter/../../escape.txt", "pwned", "file")]),
    ("symlink", [("adapter/link", "/etc/passwd", "symlink")]),
    ("symlink in place of a folder", [("tensorboard", "/tmp", "symlink"), ("tensorboard/x", "pwned", "file")]),
    ("hardlink", [("adapter/hard", "spec.json", "hardlink")]),
    ("fifo", [("adapter/pipe", None, "fifo")]),
    ("device", [("adapter/dev", None, "chardev")]),
]


@pytest.mark.parametrize("members", [m for _, m in HOSTILE], ids=[name for name, _ in HOSTILE])
async def test_a_hostile_archive_is_refused_whole_and_changes_nothing(pod: FakePod, run_dir: Path, members) -> None:
    before = snapshot(run_dir)
    pod.body = tar_of(("result.json", '{"status": "succeeded"}', "file"), *members)
    with pytest.raises(ArtifactsRefused, match="the member"):
        await WorkerClient(pod.url, TOKEN, run_dir).download_artifacts()
    assert snapshot(run_dir) == before  # not even result.json, which came first
    assert not (run_dir.parent / "escape.txt").exists() and not Path("/tmp/finetune-mcp-escape.txt").exists()


async def test_an_archive_that_is_not_a_tar_changes_nothing(pod: FakePod, run_dir: Path) -> None:
    before = snapshot(run_dir)
    pod.body = b"this is not a tar archive" * 100
    with pytest.raises(ArtifactsRefused, match="could not be extracted"):
        await WorkerClient(pod.url, TOKEN, run_dir).download_artifacts()
    assert snapshot(run_dir) == before


async def test_an_honest_archive_lands_and_replaces_only_what_it_names(pod: FakePod, run_dir: Path) -> None:
    pod.body = tar_of(("adapter", None, "dir"), ("adapter/adapter_model.safetensors", b"\x00weights", "file"),
                      ("./result.json", '{"status": "succeeded"}', "file"), ("tensorboard/run/ev", "tb", "file"),
                      ("train.log", "log", "file"))
    names = await WorkerClient(pod.url, TOKEN, run_dir).download_artifacts()
    assert names == ["adapter", "result.json", "tensorboard", "train.log"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == b"\x00weights"
    assert not (run_dir / "adapter" / "old.bin").exists()  # the pod's adapter/ replaces the old one whole
    assert (run_dir / "spec.json").read_text() == '{"model": "local"}'
    assert (run_dir / ".runpod.json").read_text() == '{"events_offset": 17}'
    assert not [p for p in run_dir.iterdir() if p.name.startswith((STAGING_PREFIX, ".artifacts-"))]
