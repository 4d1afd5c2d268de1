"""Packaging: compatible ranges in pyproject.toml, the tested versions in constraints.txt,
the same versions in envs/rmtlens.yaml, and install commands that use the lock."""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
TEST_COMMAND = 'python3.11 -m venv .venv && .venv/bin/pip install -c constraints.txt -e ".[test]" && .venv/bin/python -m pytest'


def requirements(extra: str | None = None) -> list[Requirement]:
    lines = PYPROJECT["dependencies"] if extra is None else PYPROJECT["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert version, f"constraints.txt line {line!r} is not an exact pin"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_dependencies_are_ranges_and_the_lock_satisfies_them():
    assert SpecifierSet(PYPROJECT["requires-python"]) == SpecifierSet(">=3.11")
    pins = constraints()
    for req in requirements() + requirements("test"):
        spec = str(req.specifier)
        assert "==" not in spec and ">=" in spec, f"{req}: give a compatible range, the exact version goes to constraints.txt"
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert pins[name] in req.specifier, f"constraints.txt pins {req.name}=={pins[name]}, outside {req.specifier}"


def test_conda_environment_lists_the_locked_versions():
    env = yaml.safe_load((REPO / "envs" / "rmtlens.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert Version(python.split("=", 1)[1]) in SpecifierSet(PYPROJECT["requires-python"])
    pins = constraints()
    listed = {}
    for line in pip:
        if line.startswith("-e"):
            assert line == "-e ..", line
            continue
        req = Requirement(line)
        (version,) = [s.version for s in req.specifier if s.operator == "=="]
        listed[canonicalize_name(req.name)] = Version(version)
    runtime = {canonicalize_name(r.name) for r in requirements()}
    assert set(listed) == runtime, "envs/rmtlens.yaml must pin exactly the runtime dependencies"
    for name, version in listed.items():
        assert pins[name] == version, f"envs/rmtlens.yaml pins {name}=={version}, constraints.txt {pins[name]}"


def test_install_commands_use_the_lock():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert TEST_COMMAND in readme, "README's test command changed: update this test and .ci/run together"
    assert TEST_COMMAND in ci, ".ci/run must call the README's test command verbatim"
    for command in re.findall(r"pip install [^\n&#]*", readme + ci):
        assert "-c constraints.txt" in command or "/path/to/rmtlens" in command, command


def test_workflow_catalog_file_declares_usage():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert catalog["report"] is True
    assert catalog["software-stack-deployment"]["conda"] is True
    assert "-c constraints.txt" in catalog["mandatory-flags"]["desc"]
    for profile in catalog["mandatory-flags"]["flags"].split()[1::2]:
        assert (REPO / profile / "config.yaml").is_file(), profile
    assert (REPO / "config" / "README.md").is_file()
