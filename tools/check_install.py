"""Exit 0 when this checkout's package and every requirement in pyproject.toml (with the dev
extra) are installed at an allowed version in the running Python; exit 1 and say what is
missing otherwise. `make setup` runs `pip install -e ".[dev]"` only when this fails, so a
set-up machine skips a slow resolver run and a fresh one installs everything.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirements() -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: let pip sort it out
        return []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def problems() -> list[str]:
    try:
        from packaging.requirements import Requirement
    except ModuleNotFoundError:
        from pip._vendor.packaging.requirements import Requirement
    found = []
    spec = importlib.util.find_spec("velm_course")
    if spec is None or not Path(spec.origin).resolve().is_relative_to(ROOT):
        found.append(f"velm_course is not installed from {ROOT}")
    reqs = requirements()
    if not reqs:
        found.append("cannot read pyproject.toml requirements on this Python")
    for line in reqs:
        req = Requirement(line)
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            found.append(f"{req.name} is missing")
            continue
        if not req.specifier.contains(version, prereleases=True):
            found.append(f"{req.name} {version} is outside {req.specifier}")
    return found


if __name__ == "__main__":
    missing = problems()
    for line in missing:
        print(f"setup: {line}", file=sys.stderr)
    sys.exit(1 if missing else 0)
