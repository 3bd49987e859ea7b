"""The input tokens of an audio clip or a PDF, by each provider's published rule (pure: no I/O,
integers only), as :mod:`pricing.images` does for an image: the gateway holds a call for them
and charges a stream cut before the provider's usage from them, so each is an UPPER bound where
the exact figure cannot be read.

Audio (OpenAI's ``input_audio``, base64 ``wav`` or ``mp3``): OpenAI bills "audio tokens in user
messages [at] 1 token per 100 ms of audio" (developers.openai.com/api/docs/guides/realtime-costs,
the rule of its gpt-4o audio models): AUDIO_TOKENS_PER_SECOND, rounded up. The duration of a PCM
WAV comes from its header (stdlib ``wave``: channels, sample width, frame rate) and its size: the
frames its bytes after the smallest header (44 bytes) can hold, so a header that claims more
frames than the bytes carry cannot inflate it, and one that claims fewer cannot shrink it. An mp3,
a WAV ``wave`` cannot read (compressed, WAVE_FORMAT_EXTENSIBLE) or bytes of no known format count
the longest clip their size can be: at LOWEST_BITRATE, MPEG audio's lowest (8 kbit/s, MPEG-2.5
Layer III), 1 token per 100 bytes.

PDFs (OpenAI's ``file``/``input_file``, Anthropic's ``document``): both providers put the text
of each page and an image of it in the model's context (OpenAI: "both the extracted text and an
image of each page", developers.openai.com/api/docs/guides/pdf-files; Anthropic: each page is
converted into an image and its text extracted, "each page typically uses 1,500-3,000 tokens"
of text, and the image costs what an image does, docs.claude.com/en/docs/build-with-claude/
pdf-support). A page counts PDF_TEXT_TOKENS_PER_PAGE, the top of Anthropic's range (OpenAI
publishes no figure of its own), plus the most the model's image rule gives for an image
(``ImageRule.most_tokens``: a page's size is not read). The pages are counted in the file itself
(``pdf_pages``: its page objects, in the file and in its compressed object streams); a PDF given
by URL or file id, or one whose pages cannot be counted, counts PDF_MAX_PAGES, the most either
provider takes in one request ("Maximum pages per request: 100"; OpenAI: "up to 100 pages ...
in a single request"), as does a count above it (such a call is refused upstream, and released).
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import wave
import zlib

AUDIO_TOKENS_PER_SECOND = 10
# the assistant's audio: "1 token per 50 ms" (the same page); a chat stream sends it as pcm16,
# 24 kHz mono, 48,000 bytes a second
OUTPUT_AUDIO_TOKENS_PER_SECOND = 20
PCM16_BYTES_PER_SECOND = 48_000
LOWEST_BITRATE = 8_000  # bits per second
WAV_HEADER_BYTES = 44  # RIFF (12) + fmt (24) + data chunk header (8): no WAV's samples start sooner
PDF_TEXT_TOKENS_PER_PAGE = 3_000
PDF_MAX_PAGES = 100
_HEADER_CHARS = 64 * 1024  # base64 read for a WAV header (a LIST chunk may come before data)
_PAGE = re.compile(rb"/Type\s*/Page(?![^\s/<>\[\]()%{}])")  # a page object, never /Pages
_STREAM = re.compile(rb">>\s*stream\r?\n")  # the end of a stream's dictionary, its data next
_OBJECT_STREAM = re.compile(rb"/Type\s*/ObjStm")
MAX_OBJECT_STREAMS = 10_000
_DICTIONARY_BYTES = 4096  # how far back from a stream's data its object's dictionary is looked for
_OBJECT_STREAMS_LIMIT = 64 * 1024 * 1024  # decompressed bytes read from all object streams of a PDF


def decoded_size(text: str) -> int:
    """How many bytes a base64 text decodes to, at most (without decoding it)."""
    padding = text.count("=")
    spaces = sum(text.count(c) for c in " \t\r\n")
    return (len(text) - padding - spaces) * 3 // 4


def decoded(text: str) -> bytes | None:
    """The bytes of a base64 text (characters outside the alphabet skipped), None if it cannot be
    decoded (cut mid-quantum)."""
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return None


def _per_second(seconds: tuple[int, int], rate: int = AUDIO_TOKENS_PER_SECOND) -> int:
    """`rate` tokens a second for `numerator / denominator` seconds, rounded up."""
    numerator, denominator = seconds
    return -(-numerator * rate // denominator)


def output_audio_tokens(pcm16_bytes: int) -> int:
    """The output tokens of the assistant's pcm16 audio (a chat stream's), rounded up."""
    return -(-pcm16_bytes * OUTPUT_AUDIO_TOKENS_PER_SECOND // PCM16_BYTES_PER_SECOND)


def audio_tokens(text: str) -> int:
    """The input tokens of a base64 audio clip (wav or mp3, whatever its declared format): a PCM
    WAV by its duration, anything else by the longest its size allows at LOWEST_BITRATE."""
    return _per_second(_clip_seconds(text))


def answer_audio_tokens(text: str, audio_format: str | None) -> int:
    """The output tokens of the assistant's audio in a whole chat answer (base64
    `message.audio.data`, in the format the call asked for): pcm16 by its size, as a stream's
    (`output_audio_tokens`); any other format by its duration as `audio_tokens` reads it (a PCM
    WAV's from its header; mp3, opus, aac, flac the longest their size allows at LOWEST_BITRATE)."""
    if audio_format == "pcm16":
        return output_audio_tokens(decoded_size(text))
    return _per_second(_clip_seconds(text), OUTPUT_AUDIO_TOKENS_PER_SECOND)


def _clip_seconds(text: str) -> tuple[int, int]:
    """The duration of a base64 audio clip, as (numerator, denominator) seconds: see `audio_tokens`."""
    size = decoded_size(text)
    header = decoded(text[:_HEADER_CHARS - _HEADER_CHARS % 4])
    if header is not None and header[:4] == b"RIFF" and header[8:12] == b"WAVE":
        try:
            with wave.open(io.BytesIO(header)) as clip:
                frame_bytes = clip.getnchannels() * clip.getsampwidth()
                rate = clip.getframerate()
        except (wave.Error, EOFError, ValueError):  # not PCM (3.11's wave reads PCM only), or cut short
            frame_bytes = rate = 0
        if frame_bytes > 0 and rate > 0:
            return max(size - WAV_HEADER_BYTES, 0) // frame_bytes, rate
    return size * 8, LOWEST_BITRATE


def pdf_pages(data: bytes) -> int | None:
    """The pages of a PDF, at most PDF_MAX_PAGES; None when they cannot be counted (not a PDF, no
    page found, an object stream that cannot be read). Counted as page objects (``/Type /Page``)
    in the file and in its Flate-compressed object streams (PDF 1.5 keeps them there): an object
    rewritten by an incremental update counts twice, an over-count. In time linear in the file,
    whatever its bytes: at most MAX_OBJECT_STREAMS object streams, 64 MiB inflated in all."""
    if not data.startswith(b"%PDF-"):
        return None
    pages, budget, streams, after = len(_PAGE.findall(data)), _OBJECT_STREAMS_LIMIT, 0, 0
    data_start = None  # the next stream's data after an object stream's /Type: searched forward only
    for found in _OBJECT_STREAM.finditer(data):
        if found.start() < after:  # inside the object stream just read
            continue
        if data_start is None or data_start.start() < found.end():
            data_start = _STREAM.search(data, found.end())
            if data_start is None:
                return None  # an object stream without its data
        if data_start.start() - found.end() > _DICTIONARY_BYTES:
            continue  # not in a stream's dictionary
        streams += 1
        head = data.rfind(b"obj", max(after, found.start() - _DICTIONARY_BYTES), found.start())
        end = data.find(b"endstream", data_start.end())
        if streams > MAX_OBJECT_STREAMS or head < 0 or end < 0 \
                or data.find(b"/FlateDecode", head, data_start.start()) < 0:
            return None  # an object stream this cannot read: its pages are not counted
        try:
            inflate = zlib.decompressobj()
            objects = inflate.decompress(data[data_start.end():end], budget)
        except zlib.error:
            return None
        budget -= len(objects)
        if inflate.unconsumed_tail or budget <= 0:  # past what is read for one call: not counted
            return None
        pages += len(_PAGE.findall(objects))
        after = end
    return min(pages, PDF_MAX_PAGES) if pages else None


def pdf_tokens(pages: int | None, page_image_tokens: int) -> int:
    """What a PDF of `pages` (None: unknown) costs, each page its text and its image."""
    return (PDF_MAX_PAGES if pages is None else pages) * (PDF_TEXT_TOKENS_PER_PAGE + page_image_tokens)
