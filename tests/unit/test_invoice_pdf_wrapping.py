"""The invoice PDF's lines table wraps its cells in work that grows with the text, not with the
square of each printed line: fpdf2's table (multi_cell) measured the whole line again for each
character it added, and again for each font fragment in it, twice a row; 300 lines of long
CJK names took 1.4-2 s of CPU."""
from __future__ import annotations

import io

import pytest
from fpdf.fonts import TTFFont
from pypdf import PdfReader

from api import renderings
from api.renderings import Row, _wrapped, context_pdf


def _context(rows: list[Row]) -> dict:
    return {"invoice": {"currency": "EUR", "content_hash": None}, "title": "Invoice INV-2026-000001",
            "facts": [("Customer", "acme")], "rows": rows,
            "summary": [("Total", "0.01"), ("Amount due", "0.01")]}


def test_a_cell_wraps_at_spaces_and_cuts_a_word_wider_than_a_line() -> None:
    """Every character 1 wide, lines 5 wide: "aaa" (3), then " bb" would make 6: "bb" begins the
    next line (2); "cccccccc" (8) is wider than any line, so it is cut: its first 2 after "bb "
    (2 + 1 + 2 = 5), the next 5, the last 1; then " d" fits after it (1 + 1 + 1 = 3)."""
    assert _wrapped("aaa bb cccccccc d", 5, len) == ["aaa", "bb cc", "ccccc", "c d"]
    assert _wrapped("aa\nbb", 5, len) == ["aa", "bb"]  # a line break is kept
    assert _wrapped("", 5, len) == [""]
    assert _wrapped("abcde", 5, len) == ["abcde"]  # exactly full fits


@pytest.mark.skipif(renderings.cjk_font() is None, reason="no CJK TrueType font on this system (.ci/run installs one)")
def test_wrapping_measures_each_printed_character_a_few_times_not_once_per_character_before_it(monkeypatch) -> None:
    """Counted: the characters fpdf2 is asked the width of (TTFFont.get_text_width), over those
    printed in the table. Wrapping a word measures it once, a word cut once a character, and the
    drawing of each line measures it once more: a few times each. multi_cell measured, for each
    character it added, every character before it on the line (a 90 mm column holds about 28 CJK
    characters at 9 pt: about 14 each on average) and the character again, and did all of it
    twice (the row's height, then the drawing): 30 and more a character. The bound is 6."""
    description = "模型-大型语言模型-中文描述-" * 6 + " input"  # 18 CJK runs between hyphens: 19 fragments
    rows = [Row(f"{description} {n}", "1,000", "10.00 per 1M", "0.01") for n in range(40)]
    context = _context(rows)
    table = sum(len(v) for row in rows for v in (row.description, row.quantity, row.unit_price, row.amount))
    measured = 0
    get_text_width = TTFFont.get_text_width

    def counting(self, text, *args, **kwargs):
        nonlocal measured
        measured += len(text)
        return get_text_width(self, text, *args, **kwargs)

    monkeypatch.setattr(TTFFont, "get_text_width", counting)
    context_pdf(context)
    assert measured < 6 * table, f"{measured} characters measured for {table} printed in the table"


def test_the_heading_is_on_every_page_and_each_line_once_in_order() -> None:
    rows = [Row(f"model-{n:03} input " + "word " * 30, "1,000", "10.00 per 1M", "0.01") for n in range(60)]
    reader = PdfReader(io.BytesIO(context_pdf(_context(rows))))
    pages = [page.extract_text() for page in reader.pages]
    assert len(pages) > 2
    assert all("Description Quantity Unit price Amount (EUR)" in " ".join(p.split()) for p in pages)
    text = "\n".join(pages)
    found = [text.index(f"model-{n:03} input") for n in range(60)]
    assert found == sorted(found) and all(text.count(f"model-{n:03} input") == 1 for n in range(60))


def test_a_row_longer_than_a_page_goes_on_over_the_next_pages() -> None:
    """A description of 3,000 words ("w0001" ... "w3000") cannot stand on one page: its lines go
    on over the next ones, each word printed once, in order, and the figures beside its first line."""
    words = [f"w{n:04}" for n in range(1, 3001)]
    reader = PdfReader(io.BytesIO(context_pdf(_context([Row(" ".join(words), "1,000", "10.00 per 1M", "0.01")]))))
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    assert len(reader.pages) > 2
    found = [text.index(w) for w in words]
    assert found == sorted(found)
    assert "1,000 10.00 per 1M 0.01" in text


@pytest.mark.skipif(renderings.cjk_font() is None, reason="no CJK TrueType font on this system (.ci/run installs one)")
def test_a_first_row_whose_first_line_is_all_cjk_prints_its_figures() -> None:
    """Below the bold heading, a row whose first line is all in the CJK (fallback) font: fpdf2
    wrote the regular font inside that line's q ... Q and took it as written, so the figures
    beside it printed in the bold font's glyph numbers ("1,000 10.00 per 1M 0.01" read
    "UAmmm Um(mm 1eN UE m(mU"). 80 CJK characters fill more than two 90 mm lines."""
    row = Row("模型" * 40 + " input", "1,000", "10.00 per 1M", "0.01")
    reader = PdfReader(io.BytesIO(context_pdf(_context([row]))))
    printed = [" ".join(line.split()) for line in reader.pages[0].extract_text().splitlines()]
    assert any(line.endswith("1,000 10.00 per 1M 0.01") for line in printed), printed
    text = "".join(printed)
    assert text.count("模") == text.count("型") == 40, printed  # each printed once (a line may part them)
