"""`snakemake --lint` finds nothing to complain about."""

import subprocess
import sys

import pytest
from conftest import REPO, snakemake


@pytest.mark.workflow
def test_snakemake_lint_is_clean():
    proc = snakemake(REPO, "--lint", check=False, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Lints for" not in output and "good condition" in output, output


def test_snakefmt_check_passes_on_every_rule_file():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    assert len(files) > 5
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *map(str, files)], capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"run `.venv/bin/snakefmt Snakefile workflow/rules/*.smk`:\n{output}"
    assert f"All {len(files)} file(s) would be left unchanged" in output, output


def test_snakefmt_check_catches_an_unformatted_rule(tmp_path):
    bad = tmp_path / "bad.smk"
    bad.write_text('rule x:\n    output: "a"\n    shell: "touch {output}"\n')
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
