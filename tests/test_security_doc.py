"""docs/SECURITY.md names the test behind each claim: every name it cites must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "SECURITY.md"


def cited() -> list[tuple[str, str | None]]:
    """(test file, test name or None) for each citation; `::name` after a file continues it."""
    found, current = [], None
    for path, name in re.findall(r"`((?:[\w/]+\.py)?)(?:::(\w+))?`", DOC.read_text()):
        if path:
            current = path
        if path or name:
            found.append((current, name or None))
    return found


def test_every_test_the_security_promise_cites_exists():
    citations = cited()
    assert len(citations) > 30
    missing = []
    for path, name in citations:
        file = ROOT / "tests" / path
        if not file.is_file():
            if name is not None or not (ROOT / path).is_file():  # else a source file named in the prose
                missing.append(path)
            continue
        names = {node.name for node in ast.walk(ast.parse(file.read_text()))
                 if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
        if name is not None and name not in names:
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/SECURITY.md cites tests that do not exist: {missing}"
