"""The project's own promises: one set of dependencies, the two commands, CI calling make test."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
CONDA_ONLY = {"python", "pip", "openjdk"}  # the interpreter and tools pip cannot install


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    out = {}
    for line in reqs:
        name, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", line).groups()
        out[name.lower()] = spec.replace(" ", "")
    return out


def environment_requirements() -> dict[str, str]:
    out = {}
    text = (ROOT / "environment.yml").read_text()
    deps = text[text.index("dependencies:"):]  # skip the channels list
    for line in deps.splitlines():
        m = re.match(r"\s+- ([A-Za-z0-9_.\-]+)([<>=!,.0-9*]*)\s*(#.*)?$", line)
        if m and m.group(1) not in ("-e",):
            name = CONDA_NAMES.get(m.group(1).lower(), m.group(1).lower())
            out[name] = m.group(2).replace(" ", "")
    return out


def test_environment_yml_matches_pyproject():
    env = environment_requirements()
    for name in CONDA_ONLY:
        env.pop(name, None)
    assert env == pyproject_requirements()


def test_pyproject_admits_the_local_torch_builds():
    from packaging.specifiers import SpecifierSet

    reqs = pyproject_requirements()
    assert "2.14.1" in SpecifierSet(reqs["torch"])
    assert "0.29.1" in SpecifierSet(reqs["torchvision"])


def test_ci_runs_make_test_only():
    lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith("set ") and not ln.startswith("cd ")]
    assert commands == ["make test"]


def test_readme_leads_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_screen = readme[:2500]
    assert "make run" in first_screen and "make test" in first_screen


def test_every_module_has_a_test_file():
    modules = {p.stem for p in (ROOT / "velm_course").rglob("*.py") if not p.stem.startswith("_")}
    tested = " ".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    untested = sorted(m for m in modules if m not in tested)
    assert not untested, f"modules no test file mentions: {untested}"
