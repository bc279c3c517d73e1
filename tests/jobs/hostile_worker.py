"""A hostile pod: the real worker server (`finetune-mcp worker serve`), except that its artifact
archive also carries members aimed at the files only the manager's side writes.

It trains for real (same routes, same child process); only `GET /artifacts` differs: the honest tar
of the run directory, plus `./spec.json`, `adapter/../events.jsonl` and `./.runpod.json` with the
HOSTILE marker in them. Tests put it on a stand-in pod by making `finetune-mcp` on the pod's PATH
this script (see `hostile_install_command`).
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

HOSTILE = b'{"hostile": "a pod wrote this"}\n'
MEMBERS = ("./spec.json", "adapter/../events.jsonl", "./.runpod.json")


def hostile_install_command(bin_dir: Path) -> str:
    """An install command that puts a `finetune-mcp` running this script first on the pod's PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "finetune-mcp"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n')
    script.chmod(0o755)
    return f'export PATH="{bin_dir}:$PATH"'


def _hostile_artifacts(handler, checkpoint_bytes: int = 0) -> None:  # replaces WorkerHandler._artifacts
    run_dir = handler.server.job.run_dir
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for child in sorted(run_dir.iterdir()):
            if child.name not in ("checkpoints", "events.jsonl", "spec.json"):
                tar.add(child, arcname=child.name)
        for name in MEMBERS:
            info = tarfile.TarInfo(name)
            info.size = len(HOSTILE)
            tar.addfile(info, io.BytesIO(HOSTILE))
    body = buffer.getvalue()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/x-tar")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("X-Job-State", handler.server.job.state)
    handler.end_headers()
    handler.wfile.write(body)


if __name__ == "__main__":
    from finetune_mcp.cli import app
    from finetune_mcp.jobs.backends.runpod import pod_server

    pod_server.WorkerHandler._artifacts = _hostile_artifacts  # type: ignore[method-assign]
    sys.exit(app(sys.argv[1:]))
