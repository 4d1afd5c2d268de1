"""Logging and progress reporting for workflow jobs.

Jobs log to their Snakemake ``log:`` file and to stderr, so a user sees progress
in the terminal and finds the full record in ``logs/`` afterwards.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path


def job_logger(log_path: str | None, name: str) -> logging.Logger:
    """A logger writing timestamped lines to ``log_path`` (if given) and stderr."""
    logger = logging.getLogger(f"rmtlens.{name}")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s [%(name)s] %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


class Progress:
    """Counts work done and logs rate and ETA at most every ``interval`` seconds.

    Call the instance with the amount of work just finished.
    """

    def __init__(self, logger: logging.Logger, total: int, what: str, interval: float = 10.0):
        self.logger, self.total, self.what, self.interval = logger, total, what, interval
        self.done = 0
        self.start = self.last = time.perf_counter()
        logger.info("%s: 0/%d", what, total)

    def __call__(self, amount: int = 1) -> None:
        self.done += amount
        now = time.perf_counter()
        if now - self.last >= self.interval or self.done >= self.total:
            self.last = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else float("inf")
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            self.logger.info(
                "%s: %d/%d (%.0f%%) %.1f/s, elapsed %.0fs, ETA %.0fs",
                self.what, self.done, self.total, 100 * self.done / max(1, self.total), rate, elapsed, eta,
            )


def set_torch_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch (Snakemake's ``threads`` of the job)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


def snakemake_incomplete_outputs(workdir: str | Path) -> set[Path]:
    """Outputs that Snakemake will rebuild under ``--rerun-incomplete`` in ``workdir``.

    Snakemake marks each output of a job incomplete when the job starts, and unmarks it
    only after the job's process has exited and Snakemake has recorded it. An output whose
    file exists can therefore still be incomplete: a run killed between a job's final
    (atomic) rename and that bookkeeping reruns the job. The marks are files under
    ``.snakemake/incomplete/`` named by the URL-safe base64 of the output's path, split
    into directories of at most ``NAME_MAX`` characters, all but the last prefixed ``@``.

    Returns absolute paths (outputs named relative to ``workdir`` are resolved against it).
    """
    from base64 import urlsafe_b64decode

    workdir = Path(workdir)
    root = workdir / ".snakemake" / "incomplete"
    outputs: set[Path] = set()
    if not root.is_dir():
        return outputs
    for mark in root.rglob("*"):
        if not mark.is_file() or mark.name == "migration_underway":
            continue
        chunks = [part.removeprefix("@") for part in mark.relative_to(root).parts]
        output = Path(urlsafe_b64decode("".join(chunks)).decode())
        outputs.add(output if output.is_absolute() else workdir / output)
    return outputs
