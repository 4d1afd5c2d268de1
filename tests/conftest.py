"""Shared fixtures and the one Snakemake runner of the tests (only from tests marked
``workflow``, checked), job counts, and where the test configuration's run puts its outputs.
Models, inputs and reference kernels shared with the bench scripts are in ``helpers.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CIFAR10_ENV = "RMTLENS_CIFAR10_JPEG"
CIFAR10_SHA256 = "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db"


# The test being set up or run, for the marker check of :func:`snakemake` (hooks run before
# any fixture, so a session fixture that runs Snakemake is checked against the test that
# first needs it).
_current_test: list[pytest.Item] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _current_test[:] = [item]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _current_test.clear()


WORKFLOW_MARKER = "workflow"


def check_workflow_marker() -> None:
    """Fail unless the current test carries the ``workflow`` marker: every test that runs
    Snakemake is slow, and ``pytest -m "not workflow"`` (the fast subset) must leave it out."""
    if _current_test and _current_test[0].get_closest_marker(WORKFLOW_MARKER) is None:
        pytest.fail(
            f"{_current_test[0].nodeid} runs Snakemake but lacks the '{WORKFLOW_MARKER}' marker: add "
            f"`pytestmark = pytest.mark.{WORKFLOW_MARKER}` (or the decorator) so that the fast subset "
            f"`pytest -m \"not {WORKFLOW_MARKER}\"` leaves it out",
            pytrace=False,
        )


def snakemake_command(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> list[str]:
    """The command line that runs a workflow in ``workdir``, for tests that start the
    process themselves; only from tests marked ``workflow`` (checked)."""
    check_workflow_marker()
    return [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir), *args]


def snakemake(
    workdir: Path,
    *args: str,
    check: bool = True,
    timeout: int = 1200,
    snakefile: Path = REPO / "Snakefile",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run a workflow (this repository's by default) with ``workdir`` as working directory.

    The one way tests run Snakemake: only from tests marked ``workflow`` (checked)."""
    cmd = snakemake_command(workdir, *args, snakefile=snakefile)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def job_counts(output: str, total: bool = False) -> dict[str, int]:
    """Job counts per rule from the first 'Job stats:' table in Snakemake's output ({} when
    there is nothing to do); with ``total``, also its 'total' row."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Job stats:")), None)
    counts: dict[str, int] = {}
    if start is None:
        return counts
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if total or parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def dry_run_jobs(workdir: Path, *args: str, **kwargs) -> dict[str, int]:
    """Job counts per rule of a dry run (keyword arguments as for :func:`snakemake`)."""
    proc = snakemake(workdir, "-n", *args, **kwargs)
    return job_counts(proc.stdout + proc.stderr)


REQUIRE_ENV = "RMTLENS_REQUIRE"


def missing_prerequisite(name: str, reason: str) -> None:
    """Skip with the printed reason, or fail where CI promised the prerequisite
    (``name`` listed in $RMTLENS_REQUIRE, comma-separated: data sets and tools)."""
    print(reason)
    if name in os.environ.get(REQUIRE_ENV, "").split(","):
        pytest.fail(f"{reason} ({REQUIRE_ENV} lists {name}: it must be present)")
    pytest.skip(reason)


TEST_CONFIG = REPO / "config" / "test.yaml"
# Where a run of config/test.yaml (or of a test's variant of it) puts its outputs and logs,
# relative to the working directory.
RUN = yaml.safe_load(TEST_CONFIG.read_text())["run"]
RESULTS = f"results/{RUN}"
LOGS = f"logs/{RUN}"


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A working directory where the whole DAG of config/test.yaml has run."""
    workdir = tmp_path_factory.mktemp("run")
    snakemake(workdir, "--configfile", str(TEST_CONFIG), "--cores", "2")
    return workdir


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium executable for headless browser tests; skips with the reason if absent."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing_prerequisite("chromium", "Chromium not installed: `apt-get install chromium` (Debian)")
    return path


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    """The CIFAR-10 JPEG archive named by $RMTLENS_CIFAR10_JPEG; skips (with the reason) if absent."""
    path = os.environ.get(CIFAR10_ENV)
    if not path or not Path(path).is_file():
        missing_prerequisite("cifar10", f"CIFAR-10 JPEG archive not available: set {CIFAR10_ENV} to its path (now {path!r})")
    return Path(path)


@pytest.fixture(scope="session")
def debian_fashion_mnist() -> Path:
    """The folder of Debian's dataset-fashion-mnist files; skips (with the reason) if not installed."""
    from rmtlens.inputs.downloads import FASHION_MNIST_DEBIAN_DIR

    if not all((FASHION_MNIST_DEBIAN_DIR / f"{n}.gz").is_file() for n in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
    )):
        missing_prerequisite(
            "fashion_mnist", f"Fashion-MNIST files not in {FASHION_MNIST_DEBIAN_DIR}: `apt-get install dataset-fashion-mnist`"
        )
    return FASHION_MNIST_DEBIAN_DIR
