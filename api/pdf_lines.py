"""fpdf2's line breaking with each line's width kept as it grows, rather than measured again.

fpdf2 (2.8) wraps text character by character (`fpdf.line_break.MultiLineBreak.get_line`), and
for each one asks `CurrentLine.width`, which sums the glyph widths of every character already on
the line again: for a line of n characters, about n²/2 glyph widths. Wrapping a 200-character
Chinese model name in an invoice's description column (8 lines of up to 27) measured 3,319
characters, and a table wraps each cell twice (its height pass, then its drawing); with
`MeasuredLine`, 407. It sums a fragment's glyph widths once, as characters come, and gives the
same width to the last bit: the same integers (a TrueType font's
widths, in thousandths of an em) summed in the same order, then scaled by the same operations
as `Fragment.get_width`. A fragment that would be measured otherwise (a core font, a symbol
font, text shaping, character spacing or stretching) is measured by fpdf2 itself.
`install` puts it in fpdf2's place, for the fpdf2 releases in VERSIONS only: another keeps its
own, and tests/unit/test_invoice_pdf_wrapping.py says so until its drawing is checked the same."""
from __future__ import annotations

import fpdf
from fpdf import line_break
from fpdf.fonts import TTFFont

STOCK = line_break.CurrentLine
VERSIONS = ("2.8.9",)  # fpdf2 releases whose CurrentLine this was checked against (another keeps its own)


def _plain(fragment: line_break.Fragment) -> bool:
    """Whether `fragment.get_width` is its TrueType glyph widths summed and scaled, nothing else."""
    font = fragment.font
    return (isinstance(font, TTFFont) and not font.is_symbol and not fragment.text_shaping_parameters
            and fragment.font_stretching == 100 and fragment.char_spacing == 0)


class MeasuredLine(STOCK):
    """fpdf2's CurrentLine; its width from per-fragment sums kept as characters are added."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # the line's n-th fragment -> (that fragment, its character list, characters summed, sum)
        self._sums: dict[int, tuple[line_break.Fragment, list[str], int, float]] = {}

    @property
    def width(self) -> float:
        width: float = 0
        for i, fragment in enumerate(self.fragments):
            if not _plain(fragment):
                width += fragment.get_width(initial_cs=i > 0)
                continue
            chars = fragment.characters
            known = self._sums.get(i)
            # a fragment trimmed (a break) has a new character list: summed again from its start
            counted, total = (known[2], known[3]) if known and known[0] is fragment and known[1] is chars \
                and known[2] <= len(chars) else (0, 0)
            font = fragment.font
            widths = font.cw
            for ch in chars[counted:]:
                total += widths[ord(ch)]
            self._sums[i] = (fragment, chars, len(chars), total)
            size = fragment.font_size_pt
            if size > font.biggest_size_pt:  # as Font.get_text_width records it
                font.biggest_size_pt = size
            width += total * size * 0.001 / fragment.k
        return width

    def _apply_automatic_hint(self, break_hint: line_break.SpaceHint | line_break.HyphenHint) -> None:
        super()._apply_automatic_hint(break_hint)
        self._sums.clear()

    def trim_trailing_spaces(self) -> None:
        super().trim_trailing_spaces()
        self._sums.clear()


def install() -> None:
    """MeasuredLine in fpdf2's place (`MultiLineBreak.get_line` looks the class up by name), for
    the fpdf2 releases it was checked against."""
    if fpdf.FPDF_VERSION in VERSIONS:
        line_break.CurrentLine = MeasuredLine  # type: ignore[misc]
