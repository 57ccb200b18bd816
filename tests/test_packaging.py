"""What the wheel holds: the library with its data files, nothing that runs from the checkout."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "setuptools"
]


def test_only_the_library_is_installed():
    assert SETUPTOOLS["packages"]["find"]["include"] == ["kgc*"]  # not jobs, serve, cluster


def test_every_data_file_in_kgc_is_package_data():
    """A prompt table or viewer file missing from package-data works from the checkout and
    breaks in an installed wheel."""
    globs = SETUPTOOLS["package-data"]
    missing = []
    for f in (ROOT / "kgc").rglob("*"):
        if not f.is_file() or f.suffix in {".py", ".pyc"} or "__pycache__" in f.parts:
            continue
        rel = f.relative_to(ROOT)
        shipped = False
        for package, patterns in globs.items():
            base = Path(*package.split("."))
            if base in rel.parents:
                inside = rel.relative_to(base).as_posix()
                shipped |= any(fnmatch.fnmatch(inside, p) for p in patterns)
        if not shipped:
            missing.append(str(rel))
    assert not missing, f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"
