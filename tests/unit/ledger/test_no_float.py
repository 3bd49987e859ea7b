"""No float on a money path: the ledger's money modules contain no float literal, call or annotation."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ledger

MONEY_MODULES = ["model.py", "posting.py", "accounts.py", "audit.py", "seal.py"]


@pytest.mark.parametrize("name", MONEY_MODULES)
def test_money_modules_never_use_floats(name):
    tree = ast.parse((Path(ledger.__file__).parent / name).read_text())
    offenders = [
        f"line {node.lineno}"
        for node in ast.walk(tree)
        if (isinstance(node, ast.Constant) and isinstance(node.value, float))
        or (isinstance(node, ast.Name) and node.id == "float")
        or (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div))
    ]
    assert offenders == [], f"{name} uses floats or true division at {offenders}"
