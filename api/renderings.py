"""An invoice as a person or a spreadsheet reads it: a printable HTML page, a PDF (fpdf2, pure
Python, no browser) and a CSV of its lines, all drawn from the invoice's own JSON document, so
the three show exactly the lines and totals the API returns (nothing recomputed here).

`negotiate` picks the rendering from the request's Accept header: JSON (the default, and for
*/*), text/html, application/pdf or text/csv, leaving out what it refuses (q=0); anything else
is a 406 `not_acceptable`."""
from __future__ import annotations

import csv
import io
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from itertools import groupby
from pathlib import Path
from typing import Any

import fpdf.fpdf
from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.bidi import BidiParagraph
from fpdf.enums import TextDirection
from fpdf.fonts import TTFFont
from fpdf.unicode_script import UnicodeScript, get_unicode_script
from litestar import Request
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema

from api.accept import taken
from api.errors import ApiError
from pricing.money import format_amount
from pricing.units import KINDS, TOKENS

JSON, HTML, PDF, CSV = "application/json", "text/html", "application/pdf", "text/csv"
MEDIA_TYPES = (JSON, HTML, PDF, CSV)
KIND_LABELS = {"usage": "", "request": "", "discount": "discount", "free_allowance": "free allowance",
               "volume_true_up": "volume true-up", "adjustment": "adjustment", "rounding": "rounding"}
CSV_FIELDS = ("number", "period", "kind", "model", "token_type", "original_period", "quantity", "unit_price",
              "per", "amount", "currency", "rule_id", "tier", "override_id", "price_version", "customer_id",
              "customer_name")
# every rendering of a customer's document (an invoice, a credit note): kept by no browser or shared cache
NOT_KEPT = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
HTML_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                **NOT_KEPT}


def negotiate(request: Request, media_types: tuple[str, ...] = MEDIA_TYPES) -> str:
    """The media type of `media_types` to answer with; no Accept header (or */*) is JSON, and a
    type the header refuses (q=0) is never chosen."""
    if "accept" not in request.headers:
        return JSON
    best = request.accept.best_match(taken(request.headers["accept"], media_types))
    if best is None:
        raise ApiError("not_acceptable", f"this document is available as {', '.join(media_types)}; "
                       f"not as {request.headers['accept']}", 406)
    return best


_AS_TEXT = {HTML: Schema(type=OpenAPIType.STRING), PDF: Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY),
            CSV: Schema(type=OpenAPIType.STRING)}


def rendered_as(*media_types: str) -> type[Operation]:
    """The Operation class (for `documented(operation=)`) that documents, beside the JSON of the
    200, each other media type `negotiate` answers it in (Litestar documents one)."""

    @dataclass
    class RenderedOperation(Operation):
        def __post_init__(self) -> None:
            ok = (self.responses or {}).get("200")
            if isinstance(ok, OpenAPIResponse):
                ok.content = {**(ok.content or {}),
                              **{media: OpenAPIMediaType(schema=_AS_TEXT[media]) for media in media_types}}

    return RenderedOperation


@dataclass(frozen=True, slots=True)
class Row:
    """One line as printed: what it is, how many, at what price, for how much."""
    description: str
    quantity: str
    unit_price: str
    amount: str


def per_label(token_type: str | None) -> str:
    per = KINDS[token_type].per if token_type in KINDS else 1
    return {TOKENS: "per 1M", 1: "each", 3600: "per hour"}.get(per, f"per {per:,}")


def rows(document: Mapping[str, Any]) -> list[Row]:
    described = [(_described(line), line) for line in document["lines"]]
    told = _told_apart(described)
    out = []
    for what, line in described:
        token = line.get("token_type")
        if line["kind"] == "rounding":
            what = "Rounding difference (" + rounding_note(document) + ")"
        elif told.get(what):
            what += " (" + ", ".join(f"{label} {bidi_closed(str(line[key]))}" for key, label in told[what]
                                     if line.get(key) is not None) + ")"
        price = f"{line['unit_price']} {per_label(token)}" if line.get("unit_price") is not None else ""
        quantity = f"{int(line['quantity']):,}" if line.get("quantity") is not None else ""
        out.append(Row(what, quantity, price, line["amount"]))
    return out


def _described(line: Mapping[str, Any]) -> str:
    """What a line is, as printed: its model, unit and kind (and the period of late usage)."""
    token = line.get("token_type")
    unit = KINDS[token].label if token in KINDS else (token or "")
    what = " ".join(p for p in (bidi_closed(line.get("model") or "all models"),
                                unit if token != "request" else "requests",
                                KIND_LABELS.get(line["kind"], line["kind"])) if p)
    return what + (f" (usage of {line['original_period']})" if line.get("original_period") else "")


# What keeps two lines of one description apart (invoicing's line key), as printed beside it.
APART = (("price_version", "price version"), ("rule_id", "rule"), ("tier", "tier"), ("override_id", "override"))


def _told_apart(described: list[tuple[str, Mapping[str, Any]]]) -> dict[str, list[tuple[str, str]]]:
    """For each description two lines or more share, the parts of the line key that differ among
    them: a price version that took effect mid-period, or two rules matching other dimensions, at
    one unit price, printed the same line twice."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for what, line in described:
        groups.setdefault(what, []).append(line)
    return {what: [(key, label) for key, label in APART if len({str(ln.get(key)) for ln in lines}) > 1]
            for what, lines in groups.items() if len(lines) > 1}


def rounding_note(document: Mapping[str, Any]) -> str:
    """How the lines' amounts are shown: rounded (documents from the line rounding on), or exact."""
    rounding = document.get("line_rounding")
    if rounding is None:
        return "exact amounts, not rounded"
    step = format_amount(1, rounding["decimals"], min_decimals=rounding["decimals"]) if rounding["decimals"] else "1"
    return f"each line rounded to {step}, half to even"


def summary(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The figures under the lines, label and amount, in the order a reader checks them."""
    credits, opening, closing = document["credits_applied"], document["opening_balance"], document["closing_balance"]
    figures = [("Total", document["total"]),
               ("Paid by promotional credits", credits["promotional"]), ("Paid by prepaid credits", credits["paid"]),
               ("Charged to account", document["charged_to_account"]),
               *([("Credit note rounding", document["credit_note_rounding"])]
                 if Decimal(document.get("credit_note_rounding") or 0) else []),
               ("Top-ups received", document["top_ups"]), ("Grants received", document["grants"]),
               ("Credits expired", document["expired"]),
               *([("Credit refunded in cash", document["refunds"])] if Decimal(document.get("refunds") or 0) else []),
               *([("Grants revoked", document["grants_revoked"])]
                 if Decimal(document.get("grants_revoked") or 0) else []),
               ("Payments received", document["payments_received"]),
               ("Opening credit balance", opening["credits"]), ("Closing credit balance", closing["credits"]),
               ("Opening amount owed", opening["receivable"]), ("Closing amount owed", closing["receivable"])]
    if Decimal(document.get("amount_due_rounding") or 0):  # the close's, to the minor unit (newer documents)
        figures.append(("Amount due rounding", document["amount_due_rounding"]))
    if "amount_paid" in document:
        figures.append(("Paid on this invoice", document["amount_paid"]))
    figures.append(("Amount due", document["amount_due"]))
    if "amount_remaining" in document:  # what is still owed once the payments on it count
        figures.append(("Amount remaining", document["amount_remaining"]))
    return figures


def title(document: Mapping[str, Any]) -> str:
    return f"Invoice {document.get('number') or '(upcoming)'}"


def bill_to(document: Mapping[str, Any]) -> str:
    """Who the document bills: the customer's name as frozen at issue, then its id ("Acme Inc.
    (acme)"); the id alone for a customer without a name, or a document issued before names
    were recorded. What bidi controls in the name open is closed before the id (`bidi_closed`)."""
    name = document.get("customer_name")
    return f"{bidi_closed(name)} ({document['customer_id']})" if name else document["customer_id"]


# Unicode's explicit bidi formatting characters (UAX #9): embeddings and overrides (LRE, RLE, LRO,
# RLO) closed by PDF, isolates (LRI, RLI, FSI) closed by PDI
_EMBEDDINGS, _ISOLATES, _PDF, _PDI = "\u202a\u202b\u202d\u202e", "\u2066\u2067\u2068", "\u202c", "\u2069"
BIDI_CONTROLS = frozenset(_EMBEDDINGS + _ISOLATES + _PDF + _PDI)


def bidi_closed(value: str) -> str:
    """A customer's string (a name, a model, an id) as printed beside other text: what its bidi
    controls open (a U+202E right-to-left override, an isolate) closed at its end, and a closer
    that closes nothing of its own dropped, so that nothing printed after it is reordered (an
    override ran on to the end of the paragraph: "Bill to: \u202eEvil (acme)" read "Bill to:
    )emca( livE"). Display only: what is stored stays as sent. A string without them is as is."""
    if BIDI_CONTROLS.isdisjoint(value):
        return value
    kept: list[str] = []
    opened: list[str] = []
    for ch in value:
        if ch in _EMBEDDINGS or ch in _ISOLATES:
            opened.append(ch)
        elif ch == _PDF:
            if not opened or opened[-1] not in _EMBEDDINGS:
                continue  # none of its own to close (or an isolate is open inside it): nothing
            opened.pop()
        elif ch == _PDI:
            if not any(c in _ISOLATES for c in opened):
                continue  # it would close an isolate around the string
            while opened.pop() not in _ISOLATES:  # with what was opened inside the isolate
                pass
        kept.append(ch)
    return "".join(kept) + "".join(_PDF if c in _EMBEDDINGS else _PDI for c in reversed(opened))


def facts(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    period = document["period"]
    out = [("Bill to", bill_to(document)), ("Billing", document["billing"]),
           ("Period", f"{period['label']}: {_day(period['start'])} to {_day(period['end'])} ({period['time_zone']})"),
           ("Issued", _day(document["issued_at"])), ("Due", _day(document["due_at"])),
           ("Currency", document["currency"]), ("Line amounts", rounding_note(document))]
    if "payment_status" in document:
        out.append(("Status", document["payment_status"].replace("_", " ")))
    return out


def _day(at: str | None) -> str:
    """An RFC 3339 time as people read it, in UTC: the day alone at UTC midnight, else day and
    time. A time with another offset (a document frozen on a server in another time zone keeps
    the offset it was written with) is the UTC instant it names, not its local digits."""
    if not at or "T" not in at:
        return at or ""
    moment = datetime.fromisoformat(at)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    day, clock = moment.date().isoformat(), moment.strftime("%H:%M:%S")
    return day if clock == "00:00:00" else f"{day} {clock} UTC"


def html_context(document: Mapping[str, Any]) -> dict[str, Any]:
    return {"invoice": document, "title": title(document), "facts": facts(document), "rows": rows(document),
            "summary": summary(document)}


def credit_note_context(document: Mapping[str, Any]) -> dict[str, Any]:
    """A credit (or debit) note as the invoice page and PDF print it: its lines are the
    differences by model and token type (what was charged, what it is now), its total theirs."""
    label = "Credit note" if document["kind"] == "credit" else "Debit note"
    lines = []
    for line in document["lines"]:
        token = line["token_type"]
        unit = KINDS[token].label if token in KINDS else token
        what = f"{bidi_closed(line['model'])} {unit} (was {line['old_amount']}, now {line['new_amount']})"
        lines.append(Row(what, "", "", line["amount"]))
    return {"invoice": document, "title": f"{label} {document['number']}",
            "facts": [("Bill to", bill_to(document)),
                      ("Corrects", f"invoice {document['invoice_number']} ({document['period']})"),
                      ("Price", f"{document['price_book']} version {document['price_version']}"),
                      ("Charges", str(document["charges"])), ("Issued", _day(document["issued_at"])),
                      ("Currency", document["currency"])],
            "rows": lines, "summary": [("Total", document["total"]), *_note_money(document)]}


def _note_money(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What a note moved, in whole minor units, and the rounding that took it there (notes issued
    before notes were rounded moved their exact total and print none of it)."""
    if "amount" not in document:
        return []
    figures = [("Amount rounding", document["amount_rounding"])] if Decimal(document["amount_rounding"]) else []
    label = "Amount credited" if document["kind"] == "credit" else "Amount charged"
    return [*figures, (label, document["amount"])]


def pdf(document: Mapping[str, Any]) -> bytes:
    """The invoice as a one-or-more-page A4 PDF, in a Unicode font where one is installed (else
    the core fonts, Latin-1), with a CJK font for what it lacks where one is installed (a
    character no font has prints as '?'), lines as a table that repeats its heading on each page."""
    return context_pdf(html_context(document))


# Unicode TrueType fonts (regular, bold) a PDF prints in when the system has them: the core
# fonts know Latin-1 only, so a model named with a euro sign, Greek or Cyrillic printed as '?'.
UNICODE_FONTS = (  # Liberation Sans first: Helvetica's widths, so the layout is the core fonts'
    ("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
     "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf"),
    ("/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
     "/usr/share/fonts/liberation-sans/LiberationSans-Bold.ttf"),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf",
     "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf"),
    ("/usr/share/fonts/dejavu/DejaVuSansCondensed.ttf", "/usr/share/fonts/dejavu/DejaVuSansCondensed-Bold.ttf"),
)


# TrueType fonts with Chinese, Japanese and Korean (one style: bold text prints in it too), for the
# characters the body font lacks: a customer or model named in them printed as '?'. Debian's
# fonts-wqy-microhei (5 MB; .ci/run installs it), fonts-wqy-zenhei, fonts-droid-fallback.
CJK_FONTS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
             "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf")


@cache
def unicode_font() -> tuple[str, str] | None:
    """The first installed pair of UNICODE_FONTS, or None (then the core fonts, Latin-1)."""
    return next((pair for pair in UNICODE_FONTS if all(Path(f).is_file() for f in pair)), None)


# TrueType fonts with the scripts Liberation Sans lacks beside CJK (Hebrew, Arabic, Armenian,
# Georgian, ...): DejaVu Sans. A name in Hebrew printed '?'. Condensed is fonts-dejavu-extra's;
# fontconfig pulls in fonts-dejavu-core, which has DejaVuSans.ttf alone (with Condensed listed
# alone, a machine with that found none, and "שלום Ltd" printed "???? Ltd").
SCRIPT_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf",
                "/usr/share/fonts/dejavu/DejaVuSansCondensed.ttf",
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf")


@cache
def script_font() -> str | None:
    """The first installed of SCRIPT_FONTS, or None."""
    return next((f for f in SCRIPT_FONTS if Path(f).is_file()), None)


@cache
def cjk_font() -> str | None:
    """The first installed of CJK_FONTS, or None (CJK then prints as '?')."""
    return next((f for f in CJK_FONTS if Path(f).is_file()), None)


def _font(doc: FPDF, texts: Iterable[str]) -> tuple[str, Any]:
    """The family to print `texts` in and a function that makes text printable in it: a character
    no font has becomes '?' (a TrueType font would drop it without a trace). Characters the body
    font lacks print in DejaVu Sans (Hebrew, Arabic, ...) or the CJK font where installed (fpdf2's
    fallback fonts), each loaded only when `texts` need it (the CJK font costs ~0.9 s a document).
    A document with text that needs shaping (`_needs_shaping`) is shaped (`_shape`)."""
    pair = unicode_font()
    if pair is None:
        return "Helvetica", _latin
    doc.add_font("body", "", pair[0])
    doc.add_font("body", "B", pair[1])
    known = doc.fonts["body"].cmap.keys() & doc.fonts["bodyB"].cmap.keys()
    wanted = {ord(ch) for text in texts for ch in text if ch != "\n"}
    fallbacks = []
    for name, path in (("script", script_font()), ("cjk", cjk_font())):
        # only a font that has some of what is lacking: an unused font is embedded all the same
        if path is not None and (lacking := wanted - known) and lacking & _characters(path):
            doc.add_font(name, "", path)
            fallbacks.append(name)
            known |= doc.fonts[name].cmap.keys()
    if fallbacks:
        doc.set_fallback_fonts(fallbacks, exact_match=False)
    if any(_needs_shaping(chr(code)) for code in wanted & known):
        _shape(doc)
    return "body", lambda value: "".join(ch if ord(ch) in known or ch in "\n" else "?"
                                         for ch in value if ch not in BIDI_CONTROLS)


@cache
def _characters(path: str) -> frozenset[int]:
    """The code points the font at `path` (the first of a collection) has glyphs for."""
    with TTFont(path, fontNumber=0, lazy=True) as font:
        return frozenset(font.getBestCmap())


def _needs_shaping(ch: str) -> bool:
    """Whether text with `ch` prints wrong unshaped: a right-to-left letter (Hebrew, Arabic: drawn
    in the order given, "שלום" read backwards; Arabic letters unjoined, each in its isolated form)
    or a combining mark (a vowel sign or an accent, placed by the font's rules)."""
    return unicodedata.bidirectional(ch) in ("R", "AL") or unicodedata.category(ch) in ("Mn", "Mc", "Me")


@cache
def _script(ch: str) -> UnicodeScript:
    """The script fpdf2 splits a line's text by, a piece shaped apart each time it changes (fpdf2's
    `get_unicode_script`, where this takes its place), with Unicode's Inherited script (a combining
    mark, a zero width joiner or non-joiner) counted as Common, which does not change it: the
    character takes the script of the one before it (UAX #24). As Inherited, a mark began a piece
    of its own and the next letter another, so "بَب" (beh, fatha, beh) printed two unjoined behs and
    the mark unplaced, and a joiner joined nothing. Cached: fpdf2 clears this cache on output, so
    the lookup is fpdf2's uncached one (its cached one kept every character ever printed)."""
    script = get_unicode_script.__wrapped__(ch)
    return UnicodeScript.COMMON if script is UnicodeScript.INHERITED else script


# fpdf2 >= 2.8 looks the name up in fpdf.fpdf's globals on each use (and clears its cache on output);
# should a release move it, setting it would change nothing, silently: fail at import instead.
if not hasattr(getattr(fpdf.fpdf, "get_unicode_script", None), "cache_clear"):
    raise ImportError("fpdf2 no longer has fpdf.fpdf.get_unicode_script: api.renderings replaces it (_script)")
fpdf.fpdf.get_unicode_script = _script  # the only user of fpdf2 in the process is this module


def _missing_internals() -> list[str]:
    """The fpdf2 internals this module uses, beside its documented API, that this fpdf2 lacks (as
    `_script`'s name above): `_joins` shapes with a font's `perform_harfbuzz_shaping`, `_runs`
    reads the characters its bidi algorithm reorders by their `character_index` and
    `embedding_level` (probed on one: a character's are set on the instance). Without one, the
    import went through and every English invoice printed, but one with Hebrew or Arabic (`_runs`),
    or an Arabic word cut to wrap (`_joins`), failed as it was drawn (an AttributeError, a 500)."""
    missing = [] if callable(getattr(TTFFont, "perform_harfbuzz_shaping", None)) else [
        "fpdf.fonts.TTFFont.perform_harfbuzz_shaping (_joins)"]
    if not callable(getattr(BidiParagraph, "get_reordered_characters", None)):
        return [*missing, "fpdf.bidi.BidiParagraph.get_reordered_characters (_runs)"]
    shown = BidiParagraph("a", base_direction=TextDirection.LTR).get_reordered_characters()
    return missing + [f"fpdf.bidi.BidiCharacter.{name} (_runs)" for name in ("character_index", "embedding_level")
                      if not shown or not all(hasattr(c, name) for c in shown)]


if missing := _missing_internals():
    raise ImportError(f"fpdf2 no longer has {', '.join(missing)}: api.renderings uses it")


def _shape(doc: FPDF, direction: TextDirection = TextDirection.LTR) -> None:
    """Text shaping (fpdf2 with uharfbuzz, HarfBuzz): Arabic letters joined (initial, medial, final
    forms and ligatures), marks placed, right-to-left text drawn right to left with its brackets
    mirrored, on a left-to-right paragraph (`direction`, for `_cell`'s right-to-left pieces), as
    the printable page shows it. Only documents that need it (`_needs_shaping`): shaped, a
    1,000-line invoice took 4 times as long."""
    doc.set_text_shaping(True, direction=direction)


def _cell(doc: FPDF, width: float, height: float, text: str, align: str = "L") -> None:
    """`text` in a cell `width` wide (0: to the right margin) at the current position, which then
    moves past it, as cell() does. Shaped, fpdf2 draws a line's right-to-left and left-to-right
    pieces each in its direction but in the order they are written, so a figure after Arabic
    letters (UAX #9: an Arabic number, in their run, shown to their left) was drawn to their
    right: a line with right-to-left text is drawn here a piece a cell, the pieces (its level
    runs) in the order the Unicode bidi algorithm shows them (fpdf2's own, UAX #9)."""
    _font_on_page(doc)
    if not doc.text_shaping or not any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in text):
        doc.cell(width, height, text, align=align)
        return
    x, y = doc.x, doc.y
    width = width or doc.w - doc.r_margin - x
    pieces = [(piece, level % 2 == 1) for level, piece in _runs(text)]
    widths = []
    for piece, rtl in pieces:
        _shape(doc, TextDirection.RTL if rtl else TextDirection.LTR)
        widths.append(doc.get_string_width(piece))
    at = x + doc.c_margin if align == "L" else x + width - doc.c_margin - sum(widths)
    margin, doc.c_margin = doc.c_margin, 0
    try:
        for (piece, rtl), wide in zip(pieces, widths, strict=True):
            _shape(doc, TextDirection.RTL if rtl else TextDirection.LTR)
            doc.set_xy(at, y)
            doc.cell(wide, height, piece)
            at += wide
    finally:
        doc.c_margin = margin
        _shape(doc)
    doc.set_xy(x + width, y)


def _runs(text: str) -> list[tuple[int, str]]:
    """`text`'s level runs on a left-to-right line, in display order, each with its level and its
    characters in their own (logical) order, for shaping: "نموذج 2 input" is "2" (level 2),
    "نموذج " (1), " input" (0). fpdf2's bidi algorithm leaves out what UAX #9 X9 removes (BN: a
    zero width joiner or non-joiner, which decide how Arabic letters join: Persian "می‌خواهم"
    printed its yeh and khah joined); each goes in the run of the character before it (UAX #9
    5.2, retaining BNs), or of the one after it where it begins the text."""
    shown = BidiParagraph(text, base_direction=TextDirection.LTR).get_reordered_characters()
    runs = [(level, [c.character_index for c in run]) for level, run in groupby(shown, key=lambda c: c.embedding_level)]
    run_of = {i: n for n, (_, indices) in enumerate(runs) for i in indices}
    for i in range(len(text)):
        if i in run_of:
            continue
        host = i - 1 if i - 1 in run_of else next((j for j in range(i + 1, len(text)) if j in run_of), None)
        if host is not None:
            run_of[i] = run_of[host]
            runs[run_of[i]][1].append(i)
    return [(level, "".join(text[i] for i in sorted(indices))) for level, indices in runs]


def context_pdf(context: Mapping[str, Any]) -> bytes:
    """A document's printed context (html_context, credit_note_context) as an A4 PDF."""
    document = context["invoice"]
    doc = FPDF(format="A4", unit="mm")
    texts = [context["title"], *(t for fact in context["facts"] for t in fact),
             *(v for row in context["rows"] for v in (row.description, row.quantity, row.unit_price, row.amount)),
             *(label for label, _ in context["summary"])]
    family, _text = _font(doc, texts)
    doc.set_title(_text(context["title"]))
    doc.set_creator("tokentill")
    doc.set_auto_page_break(auto=True, margin=15)
    doc.add_page()
    doc.set_font(family, "B", 16)
    _cell(doc, 0, 10, _text(context["title"]))
    doc.ln(10)
    doc.set_font(family, size=10)
    measure, joined = _measurer(doc), _joins(doc)
    for label, value in context["facts"]:  # a value wraps in its column (a 200-character name ran off the page)
        for n, line in enumerate(_wrapped(_text(value), doc.epw - FACTS - 2 * doc.c_margin, measure, joined)):
            _cell(doc, FACTS, 6, "" if n else _text(label))
            _cell(doc, 0, 6, line)
            doc.ln(6)
    doc.ln(4)
    doc.set_font(family, size=9)
    _table(doc, family, ("Description", "Quantity", "Unit price", f"Amount ({document['currency']})"),
           [tuple(_text(v) for v in (row.description, row.quantity, row.unit_price, row.amount))
            for row in context["rows"]] or [(NO_LINES, "", "", "")])
    doc.ln(4)
    figures = [(label, _text(label), _text(f"{value} {document['currency']}")) for label, value in context["summary"]]
    doc.set_font(family, "B", 10)  # the widest a figure prints (bold, or the same widths)
    wide = max([TOTALS, *(doc.get_string_width(figure) + 2 * doc.c_margin for _, _, figure in figures)])
    for label, text, figure in figures:
        bold = label in ("Total", "Amount due", "Amount remaining")
        doc.set_font(family, "B" if bold else "", 10)
        _cell(doc, doc.epw - wide, 6, text, align="R")
        _cell(doc, wide, 6, figure, align="R")
        doc.ln(6)
    if document.get("content_hash"):
        doc.ln(4)
        doc.set_font(family, size=7)
        doc.cell(0, 5, f"Content hash (SHA-256): {document['content_hash']}", new_x="LMARGIN", new_y="NEXT")
    return bytes(doc.output())


FACTS = 40  # the facts' labels' column (mm); their values wrap in the rest of the page's width
NO_LINES = "No usage in this period."  # a table without lines, as the printable page says it (documents/invoice.html)

# The cell (mm) the totals' figures are right-aligned in, at the right end of the table, so that they
# end where its amounts do (after a 145 mm label from the left margin, they ended 10 mm short); wider
# where a figure needs it (exact to 9 decimals, "123456.789012345 USD" is 38.8 mm: it ran into its label).
TOTALS = 35

# The lines' table: each column's share of the page between its margins and its alignment (as
# fpdf2's table took them: 95, 31.67, 36.94 and 26.39 mm on A4); a line of text is twice the font's size.
COLUMNS = ((90, "L"), (30, "R"), (35, "R"), (25, "R"))


def _table(doc: FPDF, family: str, heading: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """The lines as a bordered table across the page, its heading (bold) again at the top of each
    page, each cell's lines in the middle of its row as fpdf2's table drew them; a row goes to the
    next page whole where it fits on one, else it goes on there line by line (its cells from the top).

    The cells are wrapped here (`_wrapped`) and drawn a line a cell(): fpdf2's table wraps with
    multi_cell, which measures the whole line again for each character it adds (quadratic in a
    line's length, and again for each font fragment in it: a CJK name in the fallback font between
    Latin hyphens is one), twice a row; 300 lines of long CJK names took 1.4 s of CPU."""
    height = 2 * doc.font_size
    measure, joined = _measurer(doc), _joins(doc)
    columns = _columns(doc, measure, rows)

    def draw(cells: tuple[str, ...], style: str) -> None:
        doc.set_font(family, style, 9)
        wrapped = [_wrapped(text, width - 2 * doc.c_margin, measure, joined)
                   for text, (width, _) in zip(cells, columns, strict=True)]
        count = max(len(lines) for lines in wrapped)
        room = doc.page_break_trigger - doc.t_margin - height  # on a new page, below the heading
        if doc.y + count * height > doc.page_break_trigger and count * height <= room:
            new_page(style)
        top = doc.y
        if top + count * height <= doc.page_break_trigger:  # the row on this page: its cells centred
            x = doc.l_margin
            for lines, (width, align) in zip(wrapped, columns, strict=True):
                for n, line in enumerate(lines):
                    doc.set_xy(x, top + (count - len(lines)) * height / 2 + n * height)
                    _cell(doc, width, height, line, align)
                x += width
            doc.set_xy(doc.l_margin, top + count * height)
            borders(top, doc.y)
            return
        for n in range(count):
            if doc.y + height > doc.page_break_trigger:  # a row longer than a page: on to the next
                borders(top, doc.y)
                new_page(style)
                top = doc.y
            x = doc.l_margin
            for lines, (width, align) in zip(wrapped, columns, strict=True):
                doc.set_x(x)
                _cell(doc, width, height, lines[n] if n < len(lines) else "", align)
                x += width
            doc.ln(height)
        borders(top, doc.y)

    def borders(top: float, bottom: float) -> None:
        x = doc.l_margin
        for width, _ in columns:
            doc.rect(x, top, width, bottom - top)
            x += width

    def new_page(style: str) -> None:
        """A page, its heading (bold), then the font of the row that goes on it (`style`) again."""
        doc.add_page()
        draw(heading, "B")
        doc.set_font(family, style, 9)

    draw(heading, "B")
    for row in rows:
        draw(row, "")
    doc.set_font(family, "", 9)


def _columns(doc: FPDF, measure: Callable[[str], float], rows: list[tuple[str, ...]]) -> list[tuple[float, str]]:
    """The table's columns (width, alignment): COLUMNS' shares of the page between its margins, but
    a figure's column as wide as its widest word and the cell's margins, taken off the description's,
    so that no figure is cut (an exact amount, "12345.678901234" at 9 pt, 25.6 mm, was cut in a
    26.39 mm column: "12345.67890123" over "4")."""
    shares = sum(share for share, _ in COLUMNS)
    widths = [doc.epw * share / shares for share, _ in COLUMNS]
    for n in range(1, len(COLUMNS)):
        words = (measure(word) for row in rows for word in row[n].split())
        widths[n] = max(widths[n], max(words, default=0.0) + 2 * doc.c_margin)
    widths[0] = doc.epw - sum(widths[1:])
    return [(width, align) for width, (_, align) in zip(widths, COLUMNS, strict=True)]


def _font_on_page(doc: FPDF) -> None:
    """Has fpdf2 write the current font (set_font only notes it) before a line of text. Given a
    line that begins in a fallback font (all CJK, or a right-to-left piece of `_cell`'s in DejaVu
    Sans), fpdf2 writes the current font inside the line's q ... Q, which forgets it, and then
    takes it as written: the next cell printed in the font before (a first row whose first line
    was all CJK, below the bold heading, printed its figures in the bold font's glyph numbers:
    "1,000" read "UAmmm"). text() writes it first, outside."""
    if not doc.current_font_is_set_on_page:
        doc.text(doc.x, doc.y, "")


def _measurer(doc: FPDF) -> Any:
    """The width of a string in the document's current font, size and style, each string measured
    once (fpdf2 measures it in the fonts it prints in, fallback fonts included)."""
    widths: dict[tuple[str, str, float, str], float] = {}

    def measure(text: str) -> float:
        key = (doc.font_family, doc.font_style, doc.font_size_pt, text)
        if key not in widths:
            widths[key] = doc.get_string_width(text)
        return widths[key]

    return measure


def _joins(doc: FPDF) -> Callable[[str, str], bool] | None:
    """Whether two right-to-left letters (`_letters`) join, in the document's current font and
    size: shaped together, their glyphs are not their glyphs shaped apart (an Arabic letter's
    initial, medial or final form, a lam-alef ligature), in one font that has a zero width joiner
    (`_wrapped` puts one each side of a cut between them). HarfBuzz knows which letters join and
    the font which forms it has; each pair is shaped once a font. None for a document not shaped."""
    if not doc.text_shaping:
        return None
    known: dict[tuple[str, str, str, str], bool] = {}

    def font_of(ch: str) -> Any:
        if ord(ch) in doc.current_font.cmap:
            return doc.current_font
        fallback = doc.get_fallback_font(ch, doc.font_style)
        return doc.fonts[fallback] if fallback else None

    def joined(before: str, after: str) -> bool:
        if not all(unicodedata.bidirectional(ch) in ("R", "AL") for ch in (before[0], after[0])):
            return False
        key = (doc.font_family, doc.font_style, before, after)
        if key not in known:
            font = font_of(before[0])

            def glyphs(text: str) -> list[int]:
                infos, _ = font.perform_harfbuzz_shaping(text, doc.font_size_pt, doc.text_shaping)
                return sorted(info.codepoint for info in infos)

            known[key] = (font is not None and font is font_of(after[0]) and ord(ZWJ) in font.cmap
                          and glyphs(before + after) != sorted(glyphs(before) + glyphs(after)))
        return known[key]

    return joined


ZWJ = "\u200d"  # zero width joiner


def _wrapped(text: str, width: float, measure: Any, joined: Callable[[str, str], bool] | None = None) -> list[str]:
    """`text` in lines no wider than `width`: broken at its line breaks and at spaces, and a word
    wider than a line between its letters (`_letters`), as multi_cell breaks it between its
    characters. Each word is measured once, so the work grows with the text's length. Where the
    letters either side of a cut join (`joined`: Arabic), the line ends and the next begins with a
    zero width joiner, so that each line, shaped alone, keeps them in the forms they have in the
    whole word (as a browser breaks it, overflow-wrap: anywhere): shaped alone, the letter before
    the cut took its final form, the one after it its initial form. How much of a word a line
    holds: `_Cut`."""
    lines: list[str] = []
    space = measure(" ")
    for paragraph in text.split("\n"):
        line: list[str] = []
        used = 0.0
        for word in paragraph.split(" "):
            wide = measure(word) if word else 0.0
            gap = space if line else 0.0
            if used + gap + wide <= width:
                line.append(word)
                used += gap + wide
                continue
            if wide <= width:  # on a line of its own
                lines.append(" ".join(line))
                line, used = [word], wide
                continue
            cut = _Cut(_letters(word), measure, joined)
            room = width - used - gap
            if line and cut.width(0, 1) <= room:  # cut: its beginning after the line's words
                end = cut.fit(0, room)
                line.append(cut.text(0, end))
                used += gap + cut.width(0, end)
            else:
                if line:
                    lines.append(" ".join(line))
                end = max(cut.fit(0, width), 1)  # a letter wider than a line goes on one alone
                line, used = [cut.text(0, end)], cut.width(0, end)
            while end < len(cut.letters):
                lines.append(" ".join(line))
                start, end = end, max(cut.fit(end, width), end + 1)
                line, used = [cut.text(start, end)], cut.width(start, end)
        lines.append(" ".join(line))
    return lines


class _Cut:
    """A word cut between its letters: a piece of it (letters `start` to `end`) as a line prints it
    (`text`: with a zero width joiner where a letter either side of a cut joins the one across it)
    and its width, and how many letters a line holds (`fit`).

    Unshaped (no `joined`), a piece is as wide as its letters: each is measured once, and a line
    holds the letters their widths add up to. Shaped, a piece is measured as it prints (HarfBuzz,
    as fpdf2 draws it): an Arabic letter measured alone is in its isolated form, wider than its
    joined ones, and their sum filled only 56-77 % of the line. The letters' sum first, then each
    measurement of a piece guesses the next (letters in proportion to the room), a few a line."""

    def __init__(self, letters: list[str], measure: Any, joined: Callable[[str, str], bool] | None) -> None:
        self.letters, self.measure, self.joined = letters, measure, joined
        self.sums = [0.0]  # the letters' widths measured apart, added up
        for letter in letters:
            self.sums.append(self.sums[-1] + measure(letter))
        self.joins: dict[int, bool] = {}

    def _joins(self, at: int) -> bool:
        """Whether the letters either side of a cut before letter `at` join (none at either end)."""
        if self.joined is None or not 0 < at < len(self.letters):
            return False
        if at not in self.joins:
            self.joins[at] = self.joined(self.letters[at - 1], self.letters[at])
        return self.joins[at]

    def text(self, start: int, end: int) -> str:
        return ((ZWJ if self._joins(start) else "") + "".join(self.letters[start:end])
                + (ZWJ if self._joins(end) else ""))

    def width(self, start: int, end: int) -> float:
        if self.joined is None:
            return self.sums[end] - self.sums[start]
        return self.measure(self.text(start, end))

    def fit(self, start: int, room: float) -> int:
        """The most letters from `start` on a line with `room` left: where they end (`start`: none)."""
        n = len(self.letters)
        guess = bisect_right(self.sums, self.sums[start] + room) - 1
        if self.joined is None:
            return guess
        fits, too_wide = start, n + 1  # the most letters known to fit, the fewest known not to
        guess = min(max(guess, start + 1), n)
        while True:
            wide = self.width(start, guess)
            if wide <= room:
                fits = guess
            else:
                too_wide = guess
            if fits == n or too_wide == fits + 1:
                return fits
            guess = start + int((guess - start) * room / wide) if wide > 0 else fits + 1
            guess = min(max(guess, fits + 1), too_wide - 1, n)


JOINERS = ("\u200c", ZWJ)  # zero width non-joiner and joiner


def _letters(word: str) -> list[str]:
    """`word` cut where a line may end inside it: before each character but a combining mark (an
    accent, a vowel sign), a variation selector or a joiner, nor after a joiner. A mark cut from
    its letter began the next line alone (shaped, HarfBuzz drew it on a dotted circle)."""
    letters: list[str] = []
    for ch in word:
        if letters and (unicodedata.category(ch) in ("Mn", "Mc", "Me") or ch in JOINERS
                        or "\ufe00" <= ch <= "\ufe0f" or letters[-1][-1] in JOINERS):
            letters[-1] += ch
        else:
            letters.append(ch)
    return letters


def _latin(value: str) -> str:
    return "".join(ch for ch in value if ch not in BIDI_CONTROLS).encode("latin-1", "replace").decode("latin-1")


def csv_text(document: Mapping[str, Any]) -> str:
    """The lines, one a row, with the invoice's number, period, currency and customer (its id and
    name as issued) on each. A text cell
    a spreadsheet would take as a formula (a model name from a usage event, priced by a rule with
    a pattern: `=HYPERLINK(...)`) is written after a ' (OWASP's "CSV injection"); figures are not."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for line in document["lines"]:
        row = {**{k: line.get(k) for k in CSV_FIELDS if k in line}, "number": document.get("number") or "",
               "period": document["period"]["label"], "currency": document["currency"], "per": _per(line),
               "customer_id": document.get("customer_id"), "customer_name": document.get("customer_name")}
        writer.writerow({k: v if k in CSV_FIGURES else _as_text(v) for k, v in row.items()})
    return out.getvalue()


def usage_csv(report: Mapping[str, Any]) -> str:
    """A usage report's rows, one a line: its group keys in order, then quantity, amount,
    currency and charges; a text cell a spreadsheet would run (a dimension a caller sent, a
    model name, a dimension's name in the header) written after a ', as an invoice's."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*(_as_text(g) for g in report["group_by"]), "quantity", "amount", "currency", "charges"])
    for row in report["rows"]:
        writer.writerow([*(_as_text(row[g]) for g in report["group_by"]),
                         row["quantity"], row["amount"], report["currency"], row["charges"]])
    return out.getvalue()


def wants_csv(request: Request) -> bool:
    """Whether the Accept header prefers CSV to JSON, or refuses JSON alone (no header, */* or
    anything else: JSON)."""
    return "accept" in request.headers and request.accept.best_match(
        taken(request.headers["accept"], (JSON, CSV))) == CSV


CSV_FIGURES = frozenset({"quantity", "unit_price", "per", "amount", "tier"})  # numbers ("-0.01" is one)


def _as_text(value: Any) -> Any:
    """A text cell as written: after a ' when a spreadsheet would run it, and what its bidi
    controls open closed in the cell (read as text, an override ran on over the next cells)."""
    if isinstance(value, bool):  # a dimension's true or false, as JSON spells it (csv would write True)
        return "true" if value else "false"
    if not isinstance(value, str):
        return value
    return "'" + bidi_closed(value) if value[:1] in FORMULA_STARTS else bidi_closed(value)


FORMULA_STARTS = frozenset("=+-@\t\r")


def _per(line: Mapping[str, Any]) -> int | str:
    """The units one unit price covers; none for a line without a price (the rounding line)."""
    if line.get("unit_price") is None:
        return ""
    return KINDS[line["token_type"]].per if line.get("token_type") in KINDS else 1


def filename(document: Mapping[str, Any], extension: str) -> str:
    return f"{document.get('number') or 'invoice-' + document['period']['label']}.{extension}"


__all__ = ["BIDI_CONTROLS", "CSV", "HTML", "HTML_HEADERS", "JSON", "MEDIA_TYPES", "NOT_KEPT", "PDF", "Row",
           "bidi_closed", "bill_to", "context_pdf", "credit_note_context", "csv_text", "filename", "html_context",
           "negotiate", "pdf", "rounding_note", "rows", "summary"]
