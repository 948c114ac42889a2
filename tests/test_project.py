"""The project's own promises: one set of dependencies, the two commands, CI calling make test."""

import ast
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


def test_ci_runs_make_test_only():
    lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith("set ") and not ln.startswith("cd ")]
    assert commands == ["make test"]


def make_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{target}:"))
    recipe = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.strip())
    return recipe


def test_make_test_runs_the_tests_the_doctests_and_the_notebooks():
    recipe = make_recipe("test")
    pytest_lines = [ln for ln in recipe if ln.startswith("$(PYTEST)")]
    assert len(pytest_lines) == 1
    args = pytest_lines[0].split()
    assert {"tests", "velm_course", "--doctest-modules"} <= set(args)
    assert "$(NBVAL)" in recipe


def test_readme_leads_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_screen = readme[:2500]
    assert "make run" in first_screen and "make test" in first_screen


def package_modules() -> set[str]:
    """Dotted names of every module of the package, skipping ``__init__`` and private ones."""
    out = set()
    for path in (ROOT / "velm_course").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        if not any(part.startswith("_") for part in rel.parts):
            out.add(".".join(rel.parts))
    return out


def imported_modules(source: str) -> set[str]:
    """Every module a file imports from: ``import a.b``, ``from a.b import c`` (c counts too,
    as a submodule ``a.b.c``, for ``from velm_course.data import shapes``), at any depth."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def test_imported_modules_parses_every_form():
    source = "import velm_course.engine.checkpoint\nimport x as y\nfrom velm_course.data import shapes\n" \
             "def f():\n    from velm_course.text.bpe import merge_pair\n# import velm_course.cli\n"
    assert imported_modules(source) == {"velm_course.engine.checkpoint", "x", "velm_course.data",
                                        "velm_course.data.shapes", "velm_course.text.bpe",
                                        "velm_course.text.bpe.merge_pair"}
    assert "velm_course.text.gpt" in package_modules() and "velm_course.nn.__init__" not in package_modules()


def test_every_module_has_a_test_file():
    imported = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        imported |= imported_modules(path.read_text())
    untested = sorted(package_modules() - imported)
    assert not untested, f"modules no test file imports from: {untested}"
