"""Atomic file output and the few array/table formats the workflow exchanges.

Every writer first writes to a temporary file and then renames it over the target
(``os.replace`` is atomic on POSIX), so an interrupted job never leaves a truncated
file under a name a later run trusts. Temporary files live in the folder named by
``$RMTLENS_PARTIAL_DIR`` when it is set (the workflow sets ``.partial/``, so
``results/`` never holds one), else beside the target; their names carry the
writer's process id and the suffix :data:`PARTIAL_SUFFIX`, and
:func:`remove_partials` deletes those whose writer is gone.

``$RMTLENS_FAULT_PAUSE`` is a fault-injection hook for the tests: a writer whose
checkpoint name (``write:<target path>``) matches this glob pattern writes the name
to ``$RMTLENS_FAULT_MARKER`` and sleeps, so a test can kill the run right there.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

PARTIAL_SUFFIX = ".partial"
PARTIAL_DIR_ENV = "RMTLENS_PARTIAL_DIR"
_PARTIAL_NAME = re.compile(r"^\..*\.pid(\d+)\..*" + re.escape(PARTIAL_SUFFIX))


def fault_checkpoint(name: str) -> None:
    """Pause here forever if ``$RMTLENS_FAULT_PAUSE`` matches ``name`` (tests kill the run)."""
    pattern = os.environ.get("RMTLENS_FAULT_PAUSE")
    if pattern and fnmatch.fnmatch(name, pattern):
        Path(os.environ["RMTLENS_FAULT_MARKER"]).write_text(name)
        while True:
            time.sleep(60)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``path`` once the block succeeds.

    The temporary file keeps ``path``'s extension (some writers, such as
    ``numpy.save`` and matplotlib, choose the format from it). On any exception
    the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(os.environ.get(PARTIAL_DIR_ENV) or target.parent)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.pid{os.getpid()}.", suffix=f"{PARTIAL_SUFFIX}{target.suffix}", dir=folder
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        fault_checkpoint(f"write:{target}")
        try:
            os.replace(tmp, target)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            # partial folder on another file system: copy beside the target, then rename
            beside = target.with_name(f".{tmp.name}")
            shutil.copyfile(tmp, beside)
            os.replace(beside, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_partials(root: str | os.PathLike) -> list[Path]:
    """Delete temporary files below ``root`` whose writing process is gone; return them."""
    root = Path(root)
    if not root.exists():
        return []
    leftovers = []
    for p in root.rglob(f".*{PARTIAL_SUFFIX}*"):
        match = _PARTIAL_NAME.match(p.name)
        if p.is_file() and (match is None or not _writer_alive(int(match.group(1)))):
            p.unlink()
            leftovers.append(p)
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


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`save_json`."""
    return json.loads(Path(path).read_text())


def save_figure(fig, *paths: str | os.PathLike) -> None:
    """Save a matplotlib figure to each path (format from the extension) atomically."""
    for path in paths:
        with atomic_path(path) as tmp:
            # Fixed metadata keeps SVG/PNG bytes reproducible across runs.
            metadata = {"Date": None} if Path(path).suffix == ".svg" else {"Software": None}
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."), metadata=metadata)
