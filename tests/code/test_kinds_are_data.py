"""Kinds are data (registrations/kinds.py: Plan; models.py: what each kind's request carries): no other module of
the product decides anything by asking a registration's type by name."""

from __future__ import annotations

import ast
from pathlib import Path

from registrations.kinds import PLANS

ROOT = Path(__file__).resolve().parents[2]


def type_names_compared(source: str) -> list[tuple[int, str]]:
    """(line, kind name) of every comparison (==, !=, in, not in) with a kind's name as a string constant."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            constants = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            found += [(node.lineno, c.value) for c in constants
                      if isinstance(c, ast.Constant) and c.value in PLANS]
    return found


def test_no_module_but_kinds_asks_a_type_by_name():
    asked = {str(path.relative_to(ROOT)): found for path in sorted((ROOT / "registrations").rglob("*.py"))
             if path.name != "kinds.py" and (found := type_names_compared(path.read_text()))}
    assert asked == {}, f"decide by a Plan field or the request model instead: {asked}"


def test_the_check_finds_what_it_looks_for():
    source = 'a = t == "service"\nb = "public" != t\nc = t in ("public", "confidential")\nd = t == "web"\n'
    assert type_names_compared(source) == [(1, "service"), (2, "public"), (3, "public"), (3, "confidential")]
