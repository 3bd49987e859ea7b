"""The invoice PDF prints the names it is given: a model or customer name outside Latin-1 (a
euro sign, Greek, Polish, Cyrillic) prints as written where a Unicode font is installed, and a
character no font has prints as '?', never silently dropped."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from api import renderings
from api.renderings import Row, context_pdf


def _context(description: str) -> dict:
    return {"invoice": {"currency": "EUR", "content_hash": None}, "title": "Invoice INV-2026-000001",
            "facts": [("Customer", "Łódź Spółka"), ("Currency", "EUR")],
            "rows": [Row(description, "1,000", "10.00 per 1M", "0.01")],
            "summary": [("Total", "0.01"), ("Amount due", "0.01")]}


def _printed(context: dict) -> list[str]:
    reader = PdfReader(io.BytesIO(context_pdf(context)))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return [" ".join(line.split()) for line in text.splitlines()]


@pytest.mark.skipif(renderings.unicode_font() is None, reason="no Unicode TrueType font on this system")
def test_names_outside_latin_1_print_as_written_in_the_pdf() -> None:
    printed = _printed(_context("modèle-€-Ω-ł-Ж input"))
    assert "modèle-€-Ω-ł-Ж input 1,000 10.00 per 1M 0.01" in printed, printed
    assert "Customer Łódź Spółka" in printed, printed


@pytest.mark.skipif(renderings.unicode_font() is None, reason="no Unicode TrueType font on this system")
def test_a_character_no_font_has_prints_as_a_question_mark_not_nothing() -> None:
    printed = _printed(_context("model-\U00013000\U00013001 input"))  # Egyptian hieroglyphs: no font here has them
    assert "model-?? input 1,000 10.00 per 1M 0.01" in printed, printed


@pytest.mark.skipif(renderings.cjk_font() is None, reason="no CJK TrueType font on this system (.ci/run installs one)")
def test_chinese_and_japanese_names_print_as_written_in_the_pdf() -> None:
    context = _context("模型-大 input")
    context["facts"][0] = ("Customer", "株式会社テスト 北京")
    printed = _printed(context)
    assert "模型-大 input 1,000 10.00 per 1M 0.01" in printed, printed
    assert "Customer 株式会社テスト 北京" in printed, printed


@pytest.mark.skipif(renderings.unicode_font() is None, reason="no Unicode TrueType font on this system")
def test_without_a_cjk_font_chinese_prints_as_question_marks(monkeypatch) -> None:
    monkeypatch.setattr(renderings, "cjk_font", lambda: None)
    printed = _printed(_context("model-模型 input"))
    assert "model-?? input 1,000 10.00 per 1M 0.01" in printed, printed


def test_without_a_unicode_font_latin_1_prints_and_the_rest_is_a_question_mark(monkeypatch) -> None:
    monkeypatch.setattr(renderings, "unicode_font", lambda: None)
    printed = _printed(_context("modèle-€ input"))
    assert "modèle-? input 1,000 10.00 per 1M 0.01" in printed, printed


@pytest.mark.skipif(renderings.unicode_font() is None or renderings.script_font() is None,
                    reason="no Unicode TrueType font with Hebrew and Arabic on this system (DejaVu Sans)")
def test_hebrew_and_arabic_names_print_as_written_in_the_pdf() -> None:
    """Liberation Sans has no Hebrew or Arabic: "Customer שלום Ltd" printed "Customer ???? Ltd",
    and an Arabic model "?????", though DejaVu Sans, installed beside it, has both. pypdf reads
    right-to-left runs back into their logical order, so the text extracted is the name as sent
    only if the PDF draws it in display order (test below)."""
    context = _context("نموذج input")
    context["facts"][0] = ("Customer", "שלום Ltd (acme)")
    printed = _printed(context)
    assert "Customer שלום Ltd (acme)" in printed, printed
    assert "نموذج input 1,000 10.00 per 1M 0.01" in printed, printed


def test_right_to_left_runs_are_drawn_in_display_order() -> None:
    """fpdf2 (no shaping here) draws a string in the order it is given, so "שלום" drawn as stored
    reads backwards. By hand, UAX #9 on a left-to-right line: shin-lamed-vav-final mem is shown
    left to right as final mem, vav, lamed, shin; the Latin text, the parentheses and the figures
    stay in place; brackets inside a run are mirrored; an Arabic run (nun-meem-waw-thal-jeem)
    likewise, and a figure after Arabic letters belongs to their run (W2: a European digit after
    Arabic is an Arabic number; N1: the space between takes their direction), so it shows to
    their left, as a browser shows it; text with no right-to-left letter is untouched."""
    assert renderings._display_order("שלום Ltd (acme)") == "םולש Ltd (acme)"
    assert renderings._display_order("Bill to نموذج 2") == "Bill to 2 جذومن"
    assert renderings._display_order("Łódź (acme)") == "Łódź (acme)"
    # alef (bet): the brackets enclose a Hebrew letter after one, so they are right to left too
    # (N0), and reversed they show mirrored (L4): "(", bet, ")", " ", alef
    assert renderings._display_order("א (ב)") == "(ב) א"


CORE_DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Debian's fonts-dejavu-core


@pytest.mark.skipif(renderings.unicode_font() is None or not Path(CORE_DEJAVU).is_file(),
                    reason="no Liberation Sans or fonts-dejavu-core on this system")
def test_hebrew_prints_where_only_the_dejavu_fontconfig_installs_is_there(monkeypatch) -> None:
    """fontconfig pulls in fonts-dejavu-core: DejaVuSans.ttf (which has Hebrew and Arabic), not
    DejaVuSansCondensed.ttf, which is fonts-dejavu-extra's. With SCRIPT_FONTS naming Condensed
    alone, a machine with DejaVu as Debian installs it found no script font, and "שלום Ltd"
    printed as "???? Ltd"."""
    is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: "Condensed" not in self.name and is_file(self))
    renderings.script_font.cache_clear()
    try:
        context = _context("model input")
        context["facts"][0] = ("Customer", "שלום Ltd (acme)")
        assert "Customer שלום Ltd (acme)" in _printed(context)
    finally:
        renderings.script_font.cache_clear()
