"""The dependency rules of ARCHITECTURE.md, checked on the source tree.

    domain       imports only the standard library, msgspec and domain
    commands     never imports projections or workers
    projections  never imports commands or workers

Imports are read with ``ast`` (including those under ``if TYPE_CHECKING:`` and
inside functions), so nothing is executed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "commands", "projections", "workers")
FORBIDDEN: dict[str, frozenset[str]] = {
    "commands": frozenset({"projections", "workers"}),
    "projections": frozenset({"commands", "workers"}),
    "workers": frozenset(),
}
DOMAIN_ALLOWED = frozenset(sys.stdlib_module_names) | {"msgspec", "domain"}


def imported_modules(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, absolute top-level module) for every import; relative imports are skipped
    because they cannot leave their package."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(layer: str, source: str, filename: str = "<source>") -> list[str]:
    """Every import in ``source`` (a module of ``layer``) that breaks the rules."""
    problems = []
    for line, module in imported_modules(source, filename):
        allowed = module in DOMAIN_ALLOWED if layer == "domain" else module not in FORBIDDEN[layer]
        if not allowed:
            problems.append(f"{filename}:{line}: {layer} imports {module}")
    return problems


def layer_files(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_follow_the_dependency_rules(layer: str) -> None:
    files = layer_files(layer)
    assert files, f"no Python files under {ROOT / layer}"
    problems = [
        problem
        for path in files
        for problem in violations(
            layer, path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))
        )
    ]
    assert problems == []


def test_the_domain_package_is_checked_module_by_module() -> None:
    names = {path.name for path in layer_files("domain")}
    assert {"codec.py", "organization.py", "project.py", "environment.py", "user.py"} <= names


@pytest.mark.parametrize(
    ("layer", "source", "module"),
    [
        ("domain", "import asyncpg\n", "asyncpg"),
        ("domain", "from litestar import Litestar\n", "litestar"),
        ("domain", "def f():\n    import nats.aio.client\n", "nats"),
        (
            "domain",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import commands\n",
            "commands",
        ),
        ("domain", "from projections.runner import run\n", "projections"),
        ("commands", "from projections import queries\n", "projections"),
        ("commands", "import workers.relay\n", "workers"),
        ("projections", "from commands.store import EventStore\n", "commands"),
        ("projections", "import workers\n", "workers"),
    ],
)
def test_the_checker_reports_a_forbidden_import(layer: str, source: str, module: str) -> None:
    assert violations(layer, source, "synthetic.py") == [
        f"synthetic.py:{source.count(chr(10))}: {layer} imports {module}"
    ]


@pytest.mark.parametrize(
    ("layer", "source"),
    [
        ("domain", "import uuid\nimport msgspec.json\nfrom domain.errors import NotFound\n"),
        ("domain", "from . import errors\nfrom .codec import Event\n"),
        ("commands", "import asyncpg\nfrom domain import organization\n"),
        ("projections", "from domain.codec import CODEC\n"),
        ("workers", "from commands import store\n"),
    ],
)
def test_the_checker_accepts_allowed_imports(layer: str, source: str) -> None:
    assert violations(layer, source) == []
