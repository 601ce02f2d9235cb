"""The API reference covers every public module, and the declared lower bounds are the tested
ones. Cheap checks that run with the suite; `make docs` builds the pages themselves."""

import importlib
import pkgutil
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

import optjax

ROOT = Path(__file__).resolve().parents[1]


def _public_modules() -> list[str]:
    found = []
    for info in pkgutil.walk_packages(optjax.__path__, "optjax."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return found


def test_every_public_module_is_on_a_docs_page():
    pages = "".join(p.read_text() for p in (ROOT / "docs").glob("*.rst"))
    directives = re.findall(r"^\.\. optjax-api:: (.+)$", pages, re.MULTILINE)
    prefixes = [prefix for line in directives for prefix in line.split()]
    for prefix in prefixes:
        importlib.import_module(prefix)  # a page names a module that exists
    missing = [
        m for m in _public_modules() if not any(m == p or m.startswith(p + ".") for p in prefixes)
    ]
    assert not missing, f"on no page of docs/ (add an optjax-api directive): {missing}"


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    requirements = [Requirement(line) for line in lines]
    return {r.name.lower(): r for r in requirements if r.name != "optjax"}


def _pinned() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints-min.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = Version(version)
    return pins


def test_lower_bounds_are_the_versions_make_test_min_installs():
    declared, pinned = _declared(), _pinned()
    assert set(pinned) == set(declared), "constraints-min.txt and pyproject.toml differ"
    for name, requirement in declared.items():
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert lower == [pinned[name]], f"{name}: declared {requirement}, tested {pinned[name]}"


def test_py_typed_ships_with_the_package():
    assert (ROOT / "optjax" / "py.typed").is_file()
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in setuptools["package-data"]["optjax"]
