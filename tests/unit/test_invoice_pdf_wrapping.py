"""The invoice PDF wraps long names without measuring each line again for every character it
adds (api.pdf_lines), and draws exactly what fpdf2's own line breaking draws."""
from __future__ import annotations

import io

import pytest
from fpdf import FPDF, line_break
from fpdf.fonts import TTFFont
from pypdf import PdfReader

from api import pdf_lines, renderings
from api.renderings import Row, context_pdf

NAME = "大型语言模型推理服务" * 20  # 200 characters, a model name's most


def _measured(monkeypatch) -> list[int]:
    """The lengths of the texts TrueType fonts are asked to measure from now on."""
    seen: list[int] = []
    measure = TTFFont.get_text_width

    def counting(self, text, *args):
        seen.append(len(text))
        return measure(self, text, *args)

    monkeypatch.setattr(TTFFont, "get_text_width", counting)
    return seen


@pytest.mark.skipif(renderings.cjk_font() is None, reason="no CJK TrueType font on this system (.ci/run installs one)")
def test_a_long_cjk_name_is_measured_about_once_a_character_as_it_wraps(monkeypatch) -> None:
    """A CJK glyph is 1,000 thousandths of an em: 3.175 mm at 9 pt. A 90 mm cell less its two 1 mm
    margins holds 88 / 3.175 = 27.7, so 27 a line: 200 characters wrap as 7 lines of 27 and one of
    11. Each character is measured once as it is placed, the one that did not fit on each of the
    7 full lines once more on the next (207), and each line once more as a whole when it is laid
    out, a dry run too (200): 407 characters measured. fpdf2's CurrentLine summed the whole line
    again for each character it added: 3,319."""
    doc = FPDF(format="A4", unit="mm")
    family, _ = renderings._font(doc, [NAME])
    doc.add_page()
    doc.set_font(family, size=9)
    measured = _measured(monkeypatch)
    lines = doc.multi_cell(90, 5, NAME, dry_run=True, output="LINES")
    assert [len(line) for line in lines] == [27] * 7 + [11] and "".join(lines) == NAME
    assert sum(measured) == 207 + 200


def _context(rows: list[str]) -> dict:
    return {"invoice": {"currency": "EUR", "content_hash": "ab" * 32}, "title": "Invoice INV-2026-000001",
            "facts": [("Customer", "株式会社テスト 北京 (acme)"), ("Currency", "EUR")],
            "rows": [Row(description, f"{1000 + n:,}", "10.00 per 1M", "0.01") for n, description in enumerate(rows)],
            "summary": [("Total", "0.40"), ("Amount due", "0.40")]}


WRAPPED = {  # names that wrap at a character, at a space, at a hyphen, in several fonts in one cell
    "cjk": [NAME + " input"] * 20,
    "mixed": [f"模型-{n}-" + "大型语言模型推理服务株式会社テスト北京上海深圳" * 4 + f" input {n}" for n in range(20)],
    "latin": [f"model {n} " + "abcdefghij klmno-pqrst " * 8 + "output" for n in range(20)],
    "unbroken": ["x" * 200 + " input", "Ω" + "W" * 199 + " cached input"] * 10,
    "hebrew": ["שלום עולם " * 15 + "input", "نموذج " * 30 + "output"] * 10,
}


def _drawn(context: dict) -> tuple[list[bytes], str]:
    reader = PdfReader(io.BytesIO(context_pdf(context)))
    return [page.get_contents().get_data() for page in reader.pages], "\n".join(p.extract_text() for p in reader.pages)


@pytest.mark.parametrize("rows", WRAPPED.values(), ids=WRAPPED.keys())
@pytest.mark.parametrize("fonts", ["installed", "core"])
def test_an_invoice_pdf_is_drawn_as_fpdf2_s_own_line_breaking_draws_it(monkeypatch, rows, fonts) -> None:
    """Every page's drawing, byte for byte (each line's text, position and word spacing), and
    the text read back, as fpdf2's CurrentLine gives them; in the core fonts too (Latin-1, whose
    widths MeasuredLine leaves to fpdf2)."""
    if fonts == "core":
        monkeypatch.setattr(renderings, "unicode_font", lambda: None)
    context = _context(rows)
    assert line_break.CurrentLine is pdf_lines.MeasuredLine
    ours = _drawn(context)
    monkeypatch.setattr(line_break, "CurrentLine", pdf_lines.STOCK)
    theirs = _drawn(context)
    assert len(ours[0]) == len(theirs[0]) > 1  # wrapped onto more than one page
    assert ours == theirs
