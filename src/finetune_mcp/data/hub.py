"""Hugging Face Hub datasets: look an id up without hanging, and find what the local caches hold.

Standard library at the top (the server calls `check_hub` at job start); huggingface_hub and
`datasets` are imported inside. Environment variables are read at call time, not import time, so
HF_HUB_OFFLINE / HF_ENDPOINT / HF_HOME set after start-up (a worker's env, a test) take effect.

Where the data can come from, in order:
  1. the `datasets` cache (a dataset prepared before): `datasets.load_dataset` reads it offline too;
  2. a Hub snapshot (`hf download --repo-type dataset`): its files are read like a local folder,
     keeping the files whose path names the split (HF's own convention: data/train-*.parquet);
  3. the Hub itself, after one quick metadata request so an unreachable Hub fails in well under a
     second instead of `load_dataset`'s ~25 s of retries.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from finetune_mcp.errors import DatasetError


def offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()


def in_datasets_cache(repo_id: str) -> bool:
    """Whether `datasets` prepared this dataset before (its cache folder is `owner___name`)."""
    ds_cache = Path(os.environ.get("HF_DATASETS_CACHE") or _hf_home() / "datasets").expanduser()
    return (ds_cache / repo_id.replace("/", "___")).is_dir()


def hub_snapshot(repo_id: str) -> Path | None:
    """The folder of the cached Hub snapshot of `repo_id` at `main`, if one was downloaded."""
    hub_cache = Path(os.environ.get("HF_HUB_CACHE") or _hf_home() / "hub").expanduser()
    repo = hub_cache / f"datasets--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    return snapshots[-1] if len(snapshots) == 1 else None


def split_files(files: tuple[Path, ...], root: Path, split: str, repo_id: str) -> tuple[Path, ...]:
    """The files of `split`: those whose relative path has the split name as a word
    (train.jsonl, data/train-00000-of-00001.parquet, train/part.csv); all files for 'train' when
    no file names a split (a repo with one unnamed data file)."""
    def words(path: Path) -> list[str]:
        return re.split(r"[-_./]", str(path.relative_to(root)).lower())

    chosen = tuple(p for p in files if split.lower() in words(p))
    if chosen:
        return chosen
    if split == "train" and not any({"test", "validation", "valid", "dev"} & set(words(p)) for p in files):
        return files
    raise DatasetError(
        f"the cached snapshot of {repo_id!r} has no files for split {split!r} (files: "
        f"{', '.join(str(p.relative_to(root)) for p in files[:8])}); set dataset_split",
        path=root,
    )


def unreachable(repo_id: str, why: str) -> DatasetError:
    network = (
        "unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE to allow network access"
        if offline()
        else "check the network connection and the id"
    )
    return DatasetError(
        f"the Hugging Face dataset {repo_id!r} could not be reached ({why}); pass a local file or folder "
        f"(JSONL, JSON, CSV, Parquet) instead, or {network}"
    )


def check_hub(repo_id: str, split: str) -> dict[str, Any]:
    """Cheap existence check: the caches when offline, one metadata request (10 s timeout) otherwise."""
    cached = in_datasets_cache(repo_id) or hub_snapshot(repo_id) is not None
    if offline():
        if not cached:
            raise unreachable(repo_id, "offline mode is on and it is not in the local cache")
        return {"source": repo_id, "kind": "hub", "cached": True, "split": split}
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).dataset_info(repo_id, timeout=10)
    except GatedRepoError:
        raise DatasetError(
            f"the Hugging Face dataset {repo_id!r} is gated; accept its terms on the Hub and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise DatasetError(
            f"the Hugging Face dataset {repo_id!r} does not exist (or is private); check the id or set HF_TOKEN"
        ) from None
    except Exception as exc:  # connection refused, DNS, timeout, 5xx: all mean "cannot use the Hub now"
        raise unreachable(repo_id, type(exc).__name__) from None
    return {"source": repo_id, "kind": "hub", "cached": cached, "split": split}


def load_hub_rows(repo_id: str, split: str) -> list[tuple[int, Any]]:
    """Rows (1-based number, dict) of `split` through `datasets.load_dataset`."""
    if not in_datasets_cache(repo_id):
        check_hub(repo_id, split)
    import datasets

    try:
        ds = datasets.load_dataset(repo_id, split=split)
    except ValueError as exc:  # unknown split or config name: the id was reached
        raise DatasetError(f"the Hugging Face dataset {repo_id!r} could not be loaded: {exc}; check dataset_split") from None
    except Exception as exc:  # ConnectionError, DatasetNotFoundError, offline cache misses
        raise unreachable(repo_id, f"{type(exc).__name__}: {str(exc)[:200]}") from None
    rows = list(enumerate(ds, start=1))
    if not rows:
        raise DatasetError(f"split {split!r} is empty; choose another dataset_split", path=repo_id)
    return rows
