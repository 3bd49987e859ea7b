"""Audio and PDF tokens by the providers' published rules: durations of WAV clips written here by
the stdlib, pages of PDFs written by fpdf2 (and one with its pages in an object stream, built by
hand) and counted back by pypdf, a reader independent of the rule."""
from __future__ import annotations

import base64
import io
import struct
import wave
import zlib

import pypdf
import pytest
from fpdf import FPDF

from pricing.attachments import (
    PDF_MAX_PAGES,
    PDF_TEXT_TOKENS_PER_PAGE,
    audio_tokens,
    decoded_size,
    pdf_pages,
    pdf_tokens,
)
from pricing.images import rule_for


def wav(seconds_x100: int, rate: int = 24_000, channels: int = 1, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as clip:
        clip.setnchannels(channels)
        clip.setsampwidth(width)
        clip.setframerate(rate)
        clip.writeframes(b"\x01" * (rate * seconds_x100 // 100) * channels * width)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# OpenAI: "Audio tokens in user messages are 1 token per 100 ms of audio".
@pytest.mark.parametrize(("hundredths", "rate", "channels", "width", "tokens"), [
    (1000, 24_000, 1, 2, 100),  # 10 s
    (255, 24_000, 1, 2, 26),  # 2.55 s: 25.5, rounded up
    (300, 44_100, 2, 2, 30),  # 3 s of CD audio
    (6000, 8_000, 1, 1, 600),  # a minute at 8 kHz, 8 bits
    (5, 16_000, 1, 2, 1),  # 50 ms
])
def test_a_wav_counts_its_duration_at_ten_tokens_a_second(hundredths, rate, channels, width, tokens):
    assert audio_tokens(b64(wav(hundredths, rate, channels, width))) == tokens


def test_a_wav_header_that_lies_about_its_length_counts_what_its_bytes_hold():
    data = bytearray(wav(1000))  # 10 s at 24 kHz, 16 bits: 480,000 bytes of samples
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)  # a streaming writer's "unknown length"
    assert audio_tokens(b64(bytes(data))) == 100
    data[40:44] = struct.pack("<I", 48_000)  # claims 1 s
    assert audio_tokens(b64(bytes(data))) == 100


def test_an_mp3_or_an_unreadable_clip_counts_the_longest_its_size_allows_at_8_kbit_s():
    mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(15_990)  # 16,000 bytes: 16 s at 8 kbit/s
    assert audio_tokens(b64(mp3)) == 160
    assert audio_tokens(b64(bytes(1001))) == 11  # 1.001 s
    float_wav = bytearray(wav(100))  # 1 s, but format tag 3 (IEEE float): not PCM for wave
    float_wav[20:22] = struct.pack("<H", 3)
    assert audio_tokens(b64(bytes(float_wav))) == -(-len(float_wav) * 8 * 10 // 8_000)
    assert audio_tokens("") == 0


def test_a_base64_text_decodes_to_at_most_its_size():
    for size in (0, 1, 2, 3, 4, 1000, 1001):
        text = b64(bytes(size))
        assert decoded_size(text) == size
        assert decoded_size("\n".join(text[i:i + 76] for i in range(0, len(text), 76))) == size


def fpdf_pages(count: int) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for n in range(count):
        pdf.add_page()
        pdf.cell(text=f"page {n + 1}")
    return bytes(pdf.output())


@pytest.mark.parametrize("count", [1, 3, 7, 42, 100])
def test_the_pages_of_a_pdf_are_counted(count):
    data = fpdf_pages(count)
    assert len(pypdf.PdfReader(io.BytesIO(data)).pages) == count
    assert pdf_pages(data) == count


def object_stream_pdf(count: int, filter_name: bytes = b"/FlateDecode") -> bytes:
    """A PDF 1.5 whose catalog, page tree and pages are all in one compressed object stream,
    found through a cross-reference stream: no page object is in the file's own bytes."""
    kids = b" ".join(b"%d 0 R" % (3 + n) for n in range(count))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count)]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"] * count
    offsets, body = [], b""
    for obj in objects:
        offsets.append(len(body))
        body += obj + b"\n"
    header = b" ".join(b"%d %d" % (1 + n, off) for n, off in enumerate(offsets)) + b"\n"
    packed = zlib.compress(header + body)
    stream_num, xref_num = len(objects) + 1, len(objects) + 2
    out = b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n"
    stream_at = len(out)
    out += (b"%d 0 obj\n<< /Type /ObjStm /N %d /First %d /Filter %s /Length %d >>\nstream\n"
            % (stream_num, len(objects), len(header), filter_name, len(packed)) + packed + b"\nendstream\nendobj\n")
    xref_at = len(out)
    rows = [struct.pack(">BIH", 0, 0, 0xFFFF)]
    rows += [struct.pack(">BIH", 2, stream_num, n) for n in range(len(objects))]
    rows += [struct.pack(">BIH", 1, stream_at, 0), struct.pack(">BIH", 1, xref_at, 0)]
    table = b"".join(rows)
    out += (b"%d 0 obj\n<< /Type /XRef /Size %d /W [1 4 2] /Root 1 0 R /Length %d >>\nstream\n"
            % (xref_num, xref_num + 1, len(table)) + table + b"\nendstream\nendobj\n")
    return out + b"startxref\n%d\n%%%%EOF\n" % xref_at


def test_pages_kept_in_a_compressed_object_stream_are_counted():
    data = object_stream_pdf(12)
    assert b"/Type /Page " not in data
    assert len(pypdf.PdfReader(io.BytesIO(data)).pages) == 12
    assert pdf_pages(data) == 12


def test_pages_that_cannot_be_counted_are_unknown():
    assert pdf_pages(object_stream_pdf(3, b"/LZWDecode")) is None  # a stream this does not inflate
    assert pdf_pages(b"%PDF-1.4\n%%EOF\n") is None  # no page found
    assert pdf_pages(b"PK\x03\x04 a zip") is None  # not a PDF
    assert pdf_pages(fpdf_pages(150)) == PDF_MAX_PAGES  # refused upstream anyway


def test_a_pdf_counts_each_pages_text_and_image_and_an_unknown_one_the_most_a_request_takes():
    claude, gpt_4o = rule_for("claude-sonnet-4-5").most_tokens, rule_for("gpt-4o").most_tokens
    assert (claude, gpt_4o) == (1600, 1445)
    # Anthropic: up to 3,000 text tokens a page, and the page's image (1,600 at most): 3 pages
    # hold 13,800 (the provider's own example of a 3-page PDF is about 7,000 tokens)
    assert pdf_tokens(3, claude) == 3 * (3000 + 1600) == 13_800
    assert pdf_tokens(1, gpt_4o) == PDF_TEXT_TOKENS_PER_PAGE + 1445
    assert pdf_tokens(None, claude) == 100 * 4600
