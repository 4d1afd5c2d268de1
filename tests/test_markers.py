"""The fast subset (`pytest -m "not workflow"`) runs no Snakemake: every test that does is
marked ``workflow``, checked at run time by conftest's runner and here in the sources."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, check_workflow_marker, snakemake, snakemake_command

# Ways a test file could start Snakemake without conftest's runner.
DIRECT_SNAKEMAKE = re.compile(r"""["']-m["']\s*,\s*["']snakemake["']|snakemake\.api|from snakemake import|["']snakemake["']\s*,\s*["']-s["']""")


def test_an_unmarked_test_cannot_run_snakemake(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="lacks the 'workflow' marker"):
        snakemake(tmp_path, "--version")
    with pytest.raises(pytest.fail.Exception, match="lacks the 'workflow' marker"):
        snakemake_command(tmp_path, "--version")


@pytest.mark.workflow
def test_a_marked_test_may():
    check_workflow_marker()  # no error
    assert snakemake_command(REPO, "-n")[1:3] == ["-m", "snakemake"]


def test_every_snakemake_run_goes_through_the_checked_runner():
    offenders = [
        path.name
        for path in sorted((REPO / "tests").glob("*.py"))
        if path.name not in ("conftest.py", "test_markers.py") and DIRECT_SNAKEMAKE.search(path.read_text())
    ]
    assert offenders == [], f"these start Snakemake themselves; use conftest.snakemake or snakemake_command: {offenders}"


def test_the_pattern_catches_a_direct_call():
    assert DIRECT_SNAKEMAKE.search('cmd = [sys.executable, "-m", "snakemake", "-s", snakefile]')
    assert DIRECT_SNAKEMAKE.search("from snakemake.api import SnakemakeApi")
    assert not DIRECT_SNAKEMAKE.search("from snakemake.utils import validate")
