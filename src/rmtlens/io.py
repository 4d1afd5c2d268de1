"""Atomic file output and the few array/table formats the workflow exchanges.

Every writer first writes to a hidden temporary file in the target's directory
and then renames it over the target (``os.replace`` is atomic on POSIX), so an
interrupted job never leaves a truncated file under a name a later run trusts.
Temporary files carry the suffix :data:`PARTIAL_SUFFIX`; :func:`remove_partials`
deletes any that a killed process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

PARTIAL_SUFFIX = ".partial"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary file keeps ``path``'s extension (some writers, such as
    ``numpy.save`` and matplotlib, choose the format from it). On any exception
    the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f"{PARTIAL_SUFFIX}{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_partials(root: str | os.PathLike) -> list[Path]:
    """Delete temporary files left below ``root`` by killed writers; return them."""
    root = Path(root)
    if not root.exists():
        return []
    leftovers = [p for p in root.rglob(f".*{PARTIAL_SUFFIX}*") if p.is_file()]
    for p in leftovers:
        p.unlink()
    return leftovers


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as ``.npy`` atomically."""
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Read a ``.npy`` array, memory-mapped read-only by default."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Write named arrays as an uncompressed ``.npz`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file into a dict."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_table(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as parquet or CSV (chosen by extension) atomically."""
    suffix = Path(path).suffix
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        elif suffix == ".csv":
            frame.to_csv(tmp, index=False, float_format="%.10g")
        else:
            raise ValueError(f"unsupported table extension {suffix!r} for {path}")


def load_table(path: str | os.PathLike):
    """Read a table written by :func:`save_table`."""
    import pandas as pd

    suffix = Path(path).suffix
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"unsupported table extension {suffix!r} for {path}")


def save_json(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_figure(fig, *paths: str | os.PathLike) -> None:
    """Save a matplotlib figure to each path (format from the extension) atomically."""
    for path in paths:
        with atomic_path(path) as tmp:
            # Fixed metadata keeps SVG/PNG bytes reproducible across runs.
            metadata = {"Date": None} if Path(path).suffix == ".svg" else {"Software": None}
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."), metadata=metadata)
