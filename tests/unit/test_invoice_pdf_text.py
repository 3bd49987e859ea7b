"""The invoice PDF prints the names it is given: a model or customer name outside Latin-1 (a
euro sign, Greek, Polish, Cyrillic) prints as written where a Unicode font is installed, and a
character no font has prints as '?', never silently dropped."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import fpdf.unicode_script
import pytest
from fontTools.ttLib import TTFont
from fpdf import FPDF
from pypdf import PdfReader
from pypdf.generic import ContentStream

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


def _drawn(context: dict) -> list[list[str]]:
    """The glyphs the PDF draws, by their names in the embedded fonts, a list a text line (each
    page from the top), in the order drawn: what shaping chose (a joined Arabic letter is a glyph
    of its own), which the text pypdf extracts (mapped back to the letters) does not show."""
    reader = PdfReader(io.BytesIO(context_pdf(context)))
    lines: dict[tuple[int, float], list[str]] = {}
    for number, page in enumerate(reader.pages):
        fonts = {}
        for name, ref in page["/Resources"]["/Font"].items():
            cid_font = ref.get_object()["/DescendantFonts"][0].get_object()
            order = TTFont(io.BytesIO(cid_font["/FontDescriptor"]["/FontFile2"].get_data())).getGlyphOrder()
            to_glyph = cid_font["/CIDToGIDMap"].get_data()  # 2 bytes a CID: its glyph's index
            fonts[name] = [order[int.from_bytes(to_glyph[i:i + 2], "big")] for i in range(0, len(to_glyph), 2)]
        glyphs, y, saved = [], 0.0, []
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"q":  # the font is part of the graphics state: Q restores it
                saved.append(glyphs)
            elif operator == b"Q":
                glyphs = saved.pop()
            elif operator == b"Tf":
                glyphs = fonts[operands[0]]
            elif operator in (b"Td", b"Tm"):
                y = round(float(operands[-1]), 1)
            elif operator == b"Tj":
                text = operands[0]
                raw = text.original_bytes if hasattr(text, "original_bytes") else bytes(text)
                lines.setdefault((number, -y), []).extend(glyphs[int.from_bytes(raw[i:i + 2], "big")]
                                                          for i in range(0, len(raw), 2))
    return [lines[key] for key in sorted(lines)]


NAMES = {" ": "space", "(": "parenleft", ")": "parenright", ",": "comma", ".": "period", "-": "hyphen",
         **dict(zip("0123456789", ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
                    strict=True))}


def _latin(text: str) -> list[str]:
    """Latin text's glyph names (Liberation Sans names them by the letter)."""
    return [NAMES.get(ch, ch) for ch in text]


@pytest.mark.skipif(renderings.unicode_font() is None or renderings.script_font() is None,
                    reason="no Unicode TrueType font with Hebrew and Arabic on this system (DejaVu Sans)")
def test_arabic_letters_print_joined_and_right_to_left_runs_in_display_order() -> None:
    """Unshaped, fpdf2 drew each Arabic letter in its isolated form: "نموذج" (nun, meem, waw, thal,
    jeem) printed as five unjoined letters. By hand, the joining rules: nun and meem join on both
    sides, waw and thal only to the letter before them, jeem on both: nun initial (U+FEE7), meem
    medial (U+FEE4, between nun and waw), waw final (U+FEEE, it joins meem and nothing after it),
    thal isolated (after waw, which does not join on), jeem isolated (after thal, and last);
    DejaVu Sans names the forms by those code points, the isolated ones by the letter's own. A
    left-to-right line shows the run right to left: jeem, thal, waw, meem, nun from the left.
    "شركة" (sheen, reh, kaf, teh marbuta): sheen initial (U+FEB7), reh final (U+FEAE), kaf
    initial (U+FEDB: reh does not join on), teh marbuta final (U+FE94), shown teh marbuta first.
    A figure after Arabic letters belongs to their run (UAX #9 W2: it is an Arabic number; N1: the
    space between takes their direction): "2" shows left of the word, as a browser shows it.
    Hebrew: "א (ב)" is one right-to-left run (the brackets enclose bet after alef, N0; the space
    is between right-to-left text, N1), shown reversed with its brackets mirrored (L4): "(", bet,
    ")", " ", alef; Latin text stays as it is."""
    context = _context("نموذج 2 input")
    context["facts"][0] = ("Customer", "شركة (acme)")
    context["facts"][1] = ("Currency", "א (ב) EUR")
    drawn = _drawn(context)
    nmwthj = ["uni062C", "uni0630", "uniFEEE", "uniFEE4", "uniFEE7"]  # jeem, thal, waw fin., meem med., nun init.
    assert [*_latin("Customer"), "uniFE94", "uniFEDB", "uniFEAE", "uniFEB7", *_latin(" (acme)")] in drawn, drawn
    assert [*_latin("Currency"), "parenleft", "uni05D1", "parenright", "space", "uni05D0", *_latin(" EUR")] in drawn
    assert [*_latin("2 "), *nmwthj, *_latin(" input"), *_latin("1,00010.00 per 1M0.01")] in drawn, drawn


@pytest.mark.skipif(renderings.unicode_font() is None, reason="no Unicode TrueType font on this system")
def test_a_document_without_right_to_left_text_or_marks_is_not_shaped() -> None:
    """Shaping took 4 times as long for a 1,000-line invoice: only a document that needs it is shaped."""
    doc = FPDF()
    renderings._font(doc, ["modèle-€ input", "模型", "Łódź"])
    assert not doc.text_shaping
    renderings._font(shaped := FPDF(), ["model", "e\u0301"])  # a combining acute accent
    assert shaped.text_shaping


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


def _arabic(line: list[str]) -> list[str]:
    """An Arabic line's letters' glyphs in logical order: drawn right to left, so reversed, the
    rest (Latin, the joiners' blank zero-width glyphs) left out."""
    return [glyph for glyph in reversed(line) if glyph.startswith(("uni06", "uniFB", "uniFE"))]


@pytest.mark.skipif(renderings.unicode_font() is None or renderings.script_font() is None,
                    reason="no Unicode TrueType font with Hebrew and Arabic on this system (DejaVu Sans)")
def test_an_arabic_word_cut_to_wrap_keeps_its_letters_joined_across_the_cut() -> None:
    """"سمك" (seen, meem, kaf) 40 times: 120 letters, all dual-joining, wider than the 93 mm a
    description line holds, so cut between letters (`_wrapped`). Every letter joins the next, the
    cut ones too, as a browser shows a word broken with overflow-wrap: anywhere. By hand: seen
    initial (U+FEB3) first, then each letter medial (seen U+FEB4, meem U+FEE4, kaf U+FEDC), the
    last kaf final (U+FEDA). Each line shaped alone, the letter before each cut printed final
    (kaf U+FEDA, meem U+FEE2 or seen U+FEB2) and the one after it initial."""
    context = _context("سمك" * 40 + " input")
    lines = [arabic for line in _drawn(context) if (arabic := _arabic(line))]
    assert len(lines) > 1, lines  # cut
    assert [glyph for line in lines for glyph in line] == [
        "uniFEB3", "uniFEE4", "uniFEDC", *["uniFEB4", "uniFEE4", "uniFEDC"] * 38, "uniFEB4", "uniFEE4", "uniFEDA"]


def _arabic_lines(context: dict) -> list[tuple[float, float]]:
    """The left and right ends (mm from the page's left edge) of each line the first page draws in
    the description column (its cell from 10 to 105 mm) with glyphs of the script font (DejaVu Sans:
    Arabic) in it, top to bottom. Shaped, fpdf2 places each glyph at a point of its own (Tm) and
    moves the point past the last (a Tm with nothing drawn after it), so a piece ends there."""
    reader = PdfReader(io.BytesIO(context_pdf(context)))
    page = reader.pages[0]
    script = {name for name, ref in page["/Resources"]["/Font"].items()
              if "DejaVu" in ref.get_object()["/BaseFont"]}
    lines: dict[float, list[float]] = {}
    arabic: set[float] = set()
    font, saved, points = None, [], []
    for operands, operator in ContentStream(page.get_contents(), reader).operations:
        if operator == b"q":
            saved.append(font)
        elif operator == b"Q":
            font = saved.pop()
        elif operator == b"Tf":
            font = operands[0]
        elif operator == b"BT":
            points = []
        elif operator in (b"Td", b"Tm"):
            points.append((float(operands[-2]) * 25.4 / 72, round(float(operands[-1]) * 25.4 / 72, 2)))
        elif operator == b"Tj" and font in script:
            arabic.add(points[-1][1])
        elif operator == b"ET" and len(points) > 1 and points[0][0] < 105:
            lines.setdefault(points[0][1], []).extend((points[0][0], points[-1][0]))
    return [(min(ends), max(ends)) for y, ends in sorted(lines.items(), reverse=True) if y in arabic]


@pytest.mark.skipif(renderings.unicode_font() is None or renderings.script_font() is None,
                    reason="no Unicode TrueType font with Hebrew and Arabic on this system (DejaVu Sans)")
@pytest.mark.parametrize("word", ["سمك" * 60, "تحليلالبياناتوالمستنداتللعملاء" * 8])
def test_a_long_arabic_description_is_cut_to_fill_its_column_and_every_line_fits_it(word: str) -> None:
    """A description "نموذج <word> input", its word wider than a line (180 and 240 letters): the
    word is cut between letters, its first letters on the line of "نموذج". By hand, the column:
    A4's 210 mm less 10 mm margins is 190 mm, the description's share 190 * 90 / 180 = 95 mm, less a
    1 mm cell margin each side, 93 mm, from 11 to 104 mm. Every line drawn stays inside it, and each
    line that ends at a cut fills it to within a letter (no letter here is 4.65 mm wide at 9 pt): at
    least 0.95 * 93 = 88.35 mm. The letters were measured apart, each in its isolated form, which is
    wider than the joined forms they print in: the cut lines of "سمك" filled 71.33 and 69.32 mm
    (77 % and 75 %), the other word's 52.04 to 54.44 mm (56 % to 59 %)."""
    context = _context(f"نموذج {word} input")
    lines = _arabic_lines(context)
    assert len(lines) > 2, lines
    assert all(left >= 11 - 0.01 and right <= 104 + 0.01 for left, right in lines), lines
    assert all(right - left >= 88.35 for left, right in lines[:-1]), [round(right - left, 2) for left, right in lines]


@pytest.mark.skipif(renderings.unicode_font() is None or renderings.script_font() is None,
                    reason="no Unicode TrueType font with Hebrew and Arabic on this system (DejaVu Sans)")
def test_a_zero_width_non_joiner_keeps_persian_letters_apart() -> None:
    """Persian writes "می‌خواهم" (meem, Farsi yeh U+06CC, khah, waw, alef, heh, meem) with a zero
    width non-joiner (U+200C) after "می": the letters either side of it do not join. fpdf2's bidi
    algorithm drops it (UAX #9 X9 removes BN characters) and the two joined. By hand: meem initial
    (U+FEE3), yeh final (U+FBFD: the non-joiner follows), khah initial (U+FEA7: the non-joiner
    precedes), waw final (U+FEEE), alef isolated (U+0627: waw does not join on), heh initial
    (U+FEEB), meem final (U+FEE2). Joined, yeh was medial (U+FBFF) and khah medial (U+FEA8)."""
    name = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 input"
    lines = [arabic for line in _drawn(_context(name)) if (arabic := _arabic(line))]
    assert lines == [["uniFEE3", "uniFBFD", "uniFEA7", "uniFEEE", "uni0627", "uniFEEB", "uniFEE2"]], lines


@pytest.mark.skipif(renderings.unicode_font() is None or renderings.script_font() is None,
                    reason="no Unicode TrueType font with Hebrew and Arabic on this system (DejaVu Sans)")
def test_a_vowel_mark_does_not_part_the_arabic_letters_either_side_of_it() -> None:
    """fpdf2 shapes a line a piece a script, and took a mark's script (Unicode's Inherited) for one
    of its own: "بَب" (beh, fatha, beh) was three pieces, shaped apart, and printed two isolated
    behs (U+0628) with the fatha after them. By hand: the fatha is transparent to joining, so the
    behs join: the first initial (U+FE91), the second final (U+FE90),
    shown final first from the left; the fatha is drawn once (placed over its letter, on a line of
    its own here: `_drawn` groups glyphs by their baseline)."""
    drawn = _drawn(_context("\u0628\u064e\u0628 input"))
    assert ["uniFE90", "uniFE91", *_latin(" input"), *_latin("1,00010.00 per 1M0.01")] in drawn, drawn
    assert sum(line.count("uni064E") for line in drawn) == 1, drawn


@pytest.mark.skipif(renderings.unicode_font() is None, reason="no Unicode TrueType font on this system")
def test_the_script_lookups_are_forgotten_once_the_pdf_is_written() -> None:
    """fpdf2 remembers each character's script while it writes a document and forgets them all on
    output (`get_unicode_script.cache_clear()`), so that a process that writes many documents does
    not keep one entry per character it ever printed. `renderings._script` took that name's place,
    so fpdf2 cleared `_script`'s cache, and the lookups `_script` made through fpdf2's own cached
    function were kept for the process's life: 128 distinct letters (Latin Extended-A, U+0100 to
    U+017F) printed in a shaped document (its Hebrew word: fpdf2 looks scripts up only in a shaped
    document or one with fallback fonts), 128 entries and more (the rest of the document's
    characters) kept after the output, 128 more for each other 128 letters printed. By hand:
    after the output, none, in either cache."""
    fpdf.unicode_script.get_unicode_script.cache_clear()
    context_pdf(_context("".join(chr(c) for c in range(0x100, 0x180)) + " שלום input"))
    assert renderings._script.cache_info().currsize == 0
    assert fpdf.unicode_script.get_unicode_script.cache_info().currsize == 0


def test_an_fpdf2_without_the_script_lookup_renderings_replaces_fails_at_import() -> None:
    """`api.renderings` puts `_script` in the place of fpdf2's `fpdf.fpdf.get_unicode_script`
    (pyproject allows any fpdf2 >= 2.8): were the name gone, setting it would change nothing and
    Arabic marks would part their letters again, silently. The import fails, naming it."""
    code = "import fpdf.fpdf\ndel fpdf.fpdf.get_unicode_script\nimport api.renderings"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).parents[2])
    assert done.returncode != 0
    assert "ImportError: fpdf2 no longer has fpdf.fpdf.get_unicode_script" in done.stderr, done.stderr


@pytest.mark.parametrize(("changed", "named"), [
    ("del fpdf.fonts.TTFFont.perform_harfbuzz_shaping", "fpdf.fonts.TTFFont.perform_harfbuzz_shaping (_joins)"),
    ("fpdf.bidi.BidiParagraph.get_reordered_characters = lambda self: ["
     "types.SimpleNamespace(character='a', embedding_level=0, index=0)]",  # character_index renamed
     "fpdf.bidi.BidiCharacter.character_index (_runs)"),
    ("del fpdf.bidi.BidiParagraph.get_reordered_characters", "fpdf.bidi.BidiParagraph.get_reordered_characters"),
])
def test_an_fpdf2_without_the_internals_renderings_uses_fails_at_import(changed: str, named: str) -> None:
    """Beside the script lookup it replaces, `api.renderings` uses fpdf2 internals no API promises
    (pyproject allows any fpdf2 >= 2.8): a font's `perform_harfbuzz_shaping` (`_joins`), the bidi
    algorithm's reordered characters and their `character_index` (`_runs`). Were one renamed, the
    import went through and every English invoice printed; the first with Arabic or Hebrew failed
    as it was drawn (AttributeError, a 500). By hand: the import fails, naming what is gone."""
    code = f"import types\nimport fpdf.fonts, fpdf.bidi\n{changed}\nimport api.renderings"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).parents[2])
    assert done.returncode != 0
    assert f"ImportError: fpdf2 no longer has {named}" in done.stderr, done.stderr
