"""`tokentill bench rating`: a short run prints its figures, on a book imported as asked."""
from __future__ import annotations

import json

from api.cli import main


def test_the_rating_bench_rates_an_imported_book_and_prints_its_figures(capsys):
    assert main(["bench", "rating", "--seconds", "0.2", "--rules", "60", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert 60 <= figures["rules"] < 80  # whole models, until the book has the rules asked for
    assert figures["usages"] >= 4096 and figures["usages_per_cpu_second"] > 0
    assert figures["ratio_to_goal"] == round(figures["usages_per_cpu_second"] / 100_000, 2)
