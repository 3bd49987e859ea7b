"""The invoice PDF's lines table wraps its cells in work that grows with the text, not with the
square of each printed line: fpdf2's table (multi_cell) measured the whole line again for each
character it added, and again for each font fragment in it, twice a row; 300 lines of long
CJK names took 1.4-2 s of CPU."""
from __future__ import annotations

import io

import pytest
from fpdf.fonts import TTFFont
from pypdf import PdfReader
from pypdf.generic import ContentStream

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


def _drawn_text(rows: list[Row]) -> dict[str, list[tuple[float, float]]]:
    """Each piece of text the first page draws, stripped, with where it begins (mm from the left
    and from the top of the A4 page, 297 mm: PDF units are points, 72 an inch)."""
    drawn: dict[str, list[tuple[float, float]]] = {}

    def seen(text, cm, tm, font, size) -> None:
        if text.strip():
            drawn.setdefault(text.strip(), []).append((tm[4] * 25.4 / 72, 297 - tm[5] * 25.4 / 72))

    PdfReader(io.BytesIO(context_pdf(_context(rows)))).pages[0].extract_text(visitor_text=seen)
    return drawn


def _rectangles(context: dict) -> list[tuple[float, float]]:
    """The left and right edges (mm) of the rectangles the first page draws (the table's cells)."""
    reader = PdfReader(io.BytesIO(context_pdf(context)))
    k = 72 / 25.4
    return [(round(float(operands[0]) / k, 2), round((float(operands[0]) + float(operands[2])) / k, 2))
            for operands, operator in ContentStream(reader.pages[0].get_contents(), reader).operations
            if operator == b"re"]


def test_the_table_spans_the_page_between_its_margins_as_fpdf2s_table_drew_it() -> None:
    """fpdf2's table (before 582af61) took the column widths 90, 30, 35, 25 as shares of the page
    between its margins: A4 is 210 mm, fpdf2's margins 10 mm each, so 190 mm, and the columns
    190 * 90 / 180 = 95, 190 * 30 / 180 = 31.67, 190 * 35 / 180 = 36.94, 190 * 25 / 180 = 26.39 mm:
    edges at 10, 105, 136.67, 173.61 and 200 mm. 582af61 drew them 90, 30, 35, 25 mm (edges 10, 100,
    130, 165, 190): every figure 10 mm to the left and the descriptions wrapped 5 mm sooner."""
    edges = {edge for rectangle in _rectangles(_context([Row("gpt-4o input", "1,000", "10.00 per 1M", "0.01")]))
             for edge in rectangle}
    assert edges == {10.0, 105.0, 136.67, 173.61, 200.0}, sorted(edges)


def test_the_figures_of_a_row_of_two_lines_stand_between_its_lines_as_fpdf2s_table_drew_them() -> None:
    """fpdf2's table centred each cell in its row: beside a description of two lines, a row's
    figures stand half a line below the first, midway between the two lines (each 2 * 9 pt =
    6.35 mm: 3.175 mm below the first); 582af61 drew them beside the first line. A row of one
    line is drawn on the line as before."""
    drawn = _drawn_text([Row("gpt-4o input", "1,234,567", "2.50 per 1M", "3.09"),
                         Row("claude-sonnet-4-5 cached input tokens, tier 2 above 200,000 tokens per request",
                             "9,999,999", "0.30 per 1M", "3.00")])
    (_, first_y), = drawn["claude-sonnet-4-5 cached input tokens, tier 2 above 200,000"]
    (_, second_y), = drawn["tokens per request"]
    assert abs(second_y - first_y - 6.35) < 0.01
    for figure in ("9,999,999", "0.30 per 1M", "3.00"):
        (_, y), = drawn[figure]
        assert abs(y - first_y - 3.175) < 0.01, (figure, y, first_y)
    (_, one_y), = drawn["gpt-4o input"]
    assert [round(y, 2) for _, y in drawn["1,234,567"]] == [round(one_y, 2)]


def test_a_word_wider_than_a_line_is_cut_between_letters_with_their_marks_never_before_a_mark() -> None:
    """Every character 1 wide, lines 4 wide. "abcd\u0301ef" (d with a combining acute, 7
    characters) is wider than a line, so it is cut; cut between characters it was "abcd" and
    "\u0301ef": the accent alone at the start of a line (shaped, HarfBuzz draws it on a dotted
    circle). d and its accent are one letter (2 wide): after "abc" (3) it makes 5 > 4, so the
    first line is "abc" and the next "d\u0301ef" (2 + 1 + 1 = 4). Likewise a joiner (U+200D) goes
    with the letter before it and the one after."""
    assert _wrapped("abcd\u0301ef", 4, len) == ["abc", "d\u0301ef"]
    # a, b (2); c, joiner, d (3 wide: 5 > 4) begin the next line, e fills it (4); f (5 > 4) the next
    assert _wrapped("abc\u200ddef", 4, len) == ["ab", "c\u200dde", "f"]


def test_a_word_cut_between_letters_that_join_ends_and_begins_its_lines_with_a_joiner() -> None:
    """Every character 1 wide, lines 4 wide: "abcdefghij" (10) is cut "abcd", "efgh", "ij". Where
    the letters either side of a cut join (Arabic letters, `joined`), the line before ends and the
    line after begins with a zero width joiner (U+200D, no width), so that each keeps the form it
    has in the whole word when the lines are shaped apart; where they do not (here d and e), no
    joiner."""
    zwj = "\u200d"

    def width(text: str) -> int:  # a piece of a word cut is measured as printed, its joiners of no width
        return len(text.replace(zwj, ""))

    assert _wrapped("abcdefghij", 4, width, lambda before, after: True) == [
        "abcd" + zwj, zwj + "efgh" + zwj, zwj + "ij"]
    assert _wrapped("abcdefghij", 4, width, lambda before, after: before != "d") == ["abcd", "efgh" + zwj, zwj + "ij"]
    assert _wrapped("abcdefghij", 4, len) == ["abcd", "efgh", "ij"]


def test_the_first_row_on_each_next_page_prints_in_the_regular_font_not_the_headings_bold() -> None:
    """60 rows of 3 lines (about 19 mm each) fill more than two pages. A row that goes whole to the
    next page came after that page's heading, drawn bold, and was drawn in the heading's font: the
    first row of every page but the first printed bold ("model-012 input ..." on page 2). By hand:
    on every page the bold text of the table is the heading's four cells and nothing else."""
    rows = [Row(f"model-{n:03} input " + "word " * 30, "1,000", "10.00 per 1M", "0.01") for n in range(60)]
    reader = PdfReader(io.BytesIO(context_pdf(_context(rows))))
    assert len(reader.pages) > 2
    for number, page in enumerate(reader.pages):
        bold: list[str] = []

        def seen(text, cm, tm, font, size, bold=bold) -> None:
            if text.strip() and font is not None and "Bold" in font.get("/BaseFont", ""):
                bold.append(text.strip())

        page.extract_text(visitor_text=seen)
        # the title (first page) and the summary's bold figures (last page) aside
        bold = [text for text in bold if not text.startswith(("Invoice INV-", "Total", "Amount due", "0.01 EUR"))]
        assert bold == ["Description", "Quantity", "Unit price", "Amount (EUR)"], (number, bold)


def test_the_totals_end_where_the_tables_amounts_end() -> None:
    """The totals under the table are right-aligned in a cell 35 mm wide that ended at 190 mm,
    10 mm short of the table's right edge (200 mm, above): every total 10 mm left of the amounts
    it adds up. Each ends a cell margin (1 mm: fpdf2's 10 mm page margin / 10) inside its cell.
    By hand, Liberation Sans and Helvetica share their widths (per 1,000 of the font's size):
    digits 556, "." 278, " " 278, E 667, U 722, R 722, bold the same. The table's "0.01" at 9 pt:
    (3 * 556 + 278) * 9 / 1000 = 17.514 pt = 6.179 mm; the totals' "0.01 EUR" at 10 pt:
    (3 * 556 + 278 + 278 + 667 + 722 + 722) * 10 / 1000 = 43.35 pt = 15.293 mm. Both end at
    200 - 1 = 199 mm."""
    row = Row("gpt-4o input", "1,000", "10.00 per 1M", "0.01")
    assert max(right for _, right in _rectangles(_context([row]))) == 200
    drawn = _drawn_text([row])
    (amount_x, _), = drawn["0.01"]
    assert abs(amount_x + 6.179 - 199) < 0.01, amount_x
    assert len(drawn["0.01 EUR"]) == 2  # Total, Amount due
    for x, _ in drawn["0.01 EUR"]:
        assert abs(x + 15.293 - 199) < 0.01, x


def _summary_context(rows: list[Row], figure: str, currency: str = "USD") -> dict:
    return {"invoice": {"currency": currency, "content_hash": None}, "title": "Invoice INV-2026-000001",
            "facts": [("Customer", "acme")], "rows": rows,
            "summary": [("Total", figure), ("Amount due", "0.01")]}


def _drawn_on_first_page(context: dict) -> dict[str, list[tuple[float, float]]]:
    drawn: dict[str, list[tuple[float, float]]] = {}

    def seen(text, cm, tm, font, size) -> None:
        if text.strip():
            drawn.setdefault(text.strip(), []).append((tm[4] * 25.4 / 72, 297 - tm[5] * 25.4 / 72))

    PdfReader(io.BytesIO(context_pdf(context))).pages[0].extract_text(visitor_text=seen)
    return drawn


def test_a_total_wider_than_the_totals_cell_widens_it_and_never_runs_into_its_label() -> None:
    """The totals are exact atomic units (9 decimals), so a customer billed $123,456.789012345
    has a figure of "123456.789012345 USD": at 10 pt (Helvetica's widths: digits 556, "." 278,
    " " 278, U 722, S 667, D 722) (15 * 556 + 278 + 278 + 722 + 667 + 722) * 10 / 1000 = 110.07 pt
    = 38.83 mm, in a cell 35 mm wide with a 1 mm margin: it began at 199 - 38.83 = 160.17 mm, to
    the left of its own cell (165 mm) and over its label "Total" (bold: T 611, o 611, t 333, a 556,
    l 278: 23.89 pt = 8.43 mm, right-aligned to 164 mm: 155.57 to 164 mm), so the two were printed
    one over the other. Now the totals' cell is as wide as its widest figure and its margins,
    38.83 + 2 = 40.83 mm, so it begins at 200 - 40.83 = 159.17 mm: the figure still ends at
    199 mm (160.17 to 199), and "Total" ends a margin before its cell, at 158.17 mm (149.74)."""
    drawn = _drawn_on_first_page(_summary_context([Row("gpt-4o input", "1,000", "10.00 per 1M", "0.01")],
                                                  "123456.789012345"))
    (figure_x, _), = drawn["123456.789012345 USD"]
    (label_x, _), = drawn["Total"]
    assert abs(figure_x - 160.17) < 0.01, figure_x
    assert abs(label_x - 149.74) < 0.01, label_x  # 158.17 - 8.43: it ends 2 mm before the figure begins
    (due_x, _), = drawn["0.01 USD"]  # a narrow figure still ends at 199 mm: "0.01 USD" 43.35 pt = 15.293 mm
    assert abs(due_x + 15.293 - 199) < 0.01, due_x


def test_a_short_total_keeps_the_35_mm_totals_cell() -> None:
    """"12345.67 USD" is (7 * 556 + 278 + 278 + 722 + 667 + 722) * 10 / 1000 = 65.59 pt = 23.139 mm
    (bold, the same widths): with its two 1 mm margins 25.14 mm, it fits the 35 mm cell, which stays
    where it was, 165 to 200 mm: the figure begins at 199 - 23.139 = 175.861 mm, and "Total" (8.43 mm)
    ends at 165 - 1 = 164 mm (155.57)."""
    drawn = _drawn_on_first_page(_summary_context([Row("gpt-4o input", "1,000", "10.00 per 1M", "0.01")],
                                                  "12345.67"))
    (label_x, _), = drawn["Total"]
    assert abs(label_x - 155.57) < 0.01, label_x
    (figure_x, _), = drawn["12345.67 USD"]
    assert abs(figure_x - 175.861) < 0.01, figure_x


def test_an_amount_wider_than_its_column_widens_it_and_is_printed_whole() -> None:
    """An invoice finalized before lines were rounded has exact amounts; a line of
    $12,345.678901234 is (14 * 556 + 278) * 9 / 1000 = 72.558 pt = 25.597 mm at 9 pt, wider than
    the amount column's 26.39 mm less its two 1 mm margins (24.39 mm): it was cut, "12345.67890123"
    on one line and "4" on the next. Now the column is as wide as its widest figure and its
    margins, 27.597 mm, taken from the description's (95 - (27.597 - 26.389) = 93.792 mm): the amount printed
    whole, ending at 199 mm (173.403 mm from the left), and the table still 10 to 200 mm wide. The
    edges as the PDF writes them: fpdf2's A4 is 595.28 pt = 210.0016 mm wide, its margins 10 mm, so the
    page between them is 190.0016 mm, the description 95.0008 - 1.2078 = 93.793 mm (edge 103.79), the
    quantity 31.667 (135.46), the unit price 36.945 (172.4047) and the amount 27.597 (200.0016); a
    rectangle is written in points to the hundredth: 172.4047 mm = 488.706 pt, written 488.71 pt =
    172.406 mm (172.41), and its width 27.597 mm = 78.227 pt, written 78.23: its right edge
    488.71 + 78.23 = 566.94 pt = 200.004 mm (200.0)."""
    context = _context([Row("gpt-4o input", "1,234,567,890", "10.00 per 1M", "12345.678901234")])
    drawn = _drawn_on_first_page(context)
    (amount_x, _), = drawn["12345.678901234"]
    assert abs(amount_x - 173.403) < 0.01, amount_x
    edges = {edge for rectangle in _rectangles(context) for edge in rectangle}
    assert edges == {10.0, 103.79, 135.46, 172.41, 200.0}, sorted(edges)


def test_an_invoice_without_lines_says_so_in_the_pdf_as_its_page_does() -> None:
    """A period with no usage (a prepaid customer's top-up alone, an invoice of 0.00): the printable
    page says "No usage in this period." under the table's heading; the PDF printed the heading over
    an empty table, as if its lines had been lost. Now it prints the same sentence, in one row."""
    reader = PdfReader(io.BytesIO(context_pdf(_context([]))))
    text = " ".join(reader.pages[0].extract_text().split())
    assert "Description Quantity Unit price Amount (EUR) No usage in this period." in text, text


def test_a_fact_wider_than_the_page_wraps_in_its_column_not_off_the_page() -> None:
    """A customer's name may be 200 characters and its id 100: "Bill to" printed its value on one
    line from 51 mm, past the page's right edge (210 mm), where the rest was lost, the id too. Here
    40 words "word" and " (acme)". By hand at 10 pt (Helvetica's widths: w 722, o 556, r 333, d 556,
    " " 278): "word" is 21.67 pt = 7.645 mm, a space 0.981 mm; the value's column runs from 50 mm to
    the right margin (150 mm) less its two 1 mm margins: 148 mm; n words take 7.645 n + 0.981 (n - 1)
    <= 148, n <= 17.27: 17 words a line, so 17, 17, then 6 and "(acme)" (6 x 7.645 + 6 x 0.981 +
    "(acme)" 333 + 556 + 500 + 833 + 556 + 333 = 31.11 pt = 10.975 mm: 62.73 mm): three lines, each
    from 51 mm, under one another (6 mm apart), the label beside the first alone."""
    value = " ".join(["word"] * 40) + " (acme)"
    context = {**_context([Row("gpt-4o input", "1,000", "10.00 per 1M", "0.01")]), "facts": [("Bill to", value)]}
    drawn = _drawn_on_first_page(context)
    first, last = " ".join(["word"] * 17), " ".join(["word"] * 6) + " (acme)"
    [(x1, y1), (x2, y2)] = drawn[first]
    [(x3, y3)] = drawn[last]
    assert [round(x, 2) for x in (x1, x2, x3)] == [51.0] * 3, (x1, x2, x3)
    assert [round(y, 2) for y in (y2 - y1, y3 - y2)] == [6.0, 6.0]
    [(label_x, label_y)] = drawn["Bill to"]
    assert round(label_x, 2) == 11.0  # in its 40 mm column from 10 mm, a 1 mm margin
    assert round(label_y, 2) == round(y1, 2)
