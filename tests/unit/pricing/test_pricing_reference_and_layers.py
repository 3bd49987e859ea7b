import ast
import json
from decimal import Decimal
from pathlib import Path

import pytest
from pricing_testkit import AT
from pricing_testkit import version as book_version

import pricing
from pricing.errors import UnpricedModelError
from pricing.estimate import estimate_upper_bound
from pricing.normalize import normalize_openai
from pricing.rating import Usage, rate
from pricing.reference import load_reference_book

PRICING_DIR = Path(pricing.__file__).parent


def test_the_reference_book_loads_validated_with_sources_for_every_rule():
    book = load_reference_book()
    assert (book.id, book.currency, len(book.versions)) == ("reference", "USD", 1)
    rules = book.versions[0].rules
    assert all(r.source and r.source.startswith("https://") for r in rules)
    provenance = json.loads((PRICING_DIR / "data" / "reference_prices.json").read_text())["models"]
    assert {"openai", "anthropic"} <= {m["provider"] for m in provenance}
    assert {m["model"] for m in provenance} == {r.model for r in rules}
    assert all(m["price_effective_from"] and m["source"].startswith("https://") for m in provenance)


def test_the_reference_book_prices_a_claude_call_with_cache_reads_and_writes():
    book = load_reference_book()
    usage = Usage(
        "claude-sonnet-4-20250514",
        {"input": 6039, "cached_input": 188086, "cache_write": 1024, "output": 931},
        AT,
    )
    rating = rate(usage, book.version_at(AT))
    # 6039 x 3 + 188086 x 0.30 + 1024 x 3.75 + 931 x 15 = 18117 + 56425.8 + 3840 + 13965 per 1M
    assert rating.total == Decimal("0.0923478")


def test_the_reference_book_prices_an_openai_embeddings_call_and_its_hold():
    """Its embeddings model is priced by an `embedding` rule; OpenAI's embeddings usage reports
    prompt tokens, input. No rule priced input for it, so every such call was unpriced_model:
    input falls back to embedding."""
    book = load_reference_book()
    usage = normalize_openai({"prompt_tokens": 1000, "total_tokens": 1000})
    rating = rate(Usage("text-embedding-3-small", usage.token_counts(), AT), book.version_at(AT))
    # 1,000 tokens at $0.02 per 1M
    lines = [(ln.token_type, ln.rule_id, ln.amount) for ln in rating.lines]
    assert lines == [("input", "te3-small", Decimal("0.00002"))]
    assert rating.total_units == 20_000
    hold = estimate_upper_bound(book, "text-embedding-3-small", 1000, 0, None, AT)
    assert hold.total_units == 20_000


def test_an_input_rule_of_a_model_outranks_its_embedding_rule():
    both = book_version({"id": "in", "model": "e", "token_type": "input", "price": "1"},
                        {"id": "emb", "model": "e", "token_type": "embedding", "price": "2"})
    assert [ln.rule_id for ln in rate(Usage("e", {"input": 10, "embedding": 10}, AT), both).lines] == ["in", "emb"]


def test_the_reference_book_is_no_default_for_unknown_models():
    with pytest.raises(UnpricedModelError):
        rate(Usage("gpt-4o-2024-05-13", {"input": 1}, AT), load_reference_book().version_at(AT))


def test_the_reference_file_holds_no_float_prices():
    data = json.loads((PRICING_DIR / "data" / "reference_prices.json").read_text())
    for version in data["versions"]:
        assert all(isinstance(rule["price"], str) for rule in version["rules"])


FORBIDDEN = {"ledger", "wallets", "api", "litestar", "uvicorn", "httpx", "sqlalchemy", "psycopg", "requests"}


@pytest.mark.parametrize("path", sorted(PRICING_DIR.glob("*.py")), ids=lambda p: p.name)
def test_pricing_imports_no_other_layer_and_no_web_or_database_library(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


@pytest.mark.parametrize("path", sorted(PRICING_DIR.glob("*.py")), ids=lambda p: p.name)
def test_pricing_modules_stay_small_and_never_use_float(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 400
    tree = ast.parse(source)
    assert not any(isinstance(n, ast.Constant) and isinstance(n.value, float) for n in ast.walk(tree))
    assert not any(
        isinstance(n, ast.Name)
        and n.id == "float"
        and isinstance(n.ctx, ast.Load)
        and not _is_isinstance_check(tree, n)
        for n in ast.walk(tree)
    )


def _is_isinstance_check(tree: ast.AST, name: ast.Name) -> bool:
    """``float`` may only appear to refuse floats (isinstance checks)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            if any(name is sub for arg in node.args for sub in ast.walk(arg)):
                return True
    return False
