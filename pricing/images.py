"""The input tokens of an image, by each provider's published rule (pure: no I/O, integers only).

A hold must be an upper bound on what a call can cost, and a stream cut before the provider's
usage is charged from the gateway's own count; both need what an image costs, which depends on
the model and on the image's size. The rules (OpenAI's "Calculating costs" for vision, Anthropic's
"Vision" page), matched by the longest model-name prefix in IMAGE_RULES:

- ``tiles`` (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, gpt-4o-mini, computer-use): ``detail:
  "low"`` costs ``base``; otherwise the image is scaled down to fit 2048 x 2048, then down so that
  its shorter side is at most 768, and costs ``base + per_tile`` for each 512 x 512 tile it covers
  (``auto`` is counted as ``high``: the larger);
- ``patches`` (gpt-4.1-mini, gpt-4.1-nano, o4-mini, gpt-5-mini, gpt-5-nano): one 32 x 32 patch per
  token, times the model's multiplier, rounded up; an image of more than 1,536 patches, which the
  provider scales down to at most 1,536 (by a square root, then to whole patches across), counts
  1,536: an upper bound, not the exact figure (1,452 for the provider's 1800 x 2400 example).
  gpt-5's point releases (``gpt-5.`` : 5.2, 5.3-codex, 5.4 and its mini and nano, as measured
  against their usage; 5.1's tiles, if tiles, never cost more) count patches at 1.2 tokens each,
  up to 2,500 patches at ``high`` or ``auto`` and 10,000 at ``original`` (the full size); ``low``
  changes nothing on a patches model;
- ``area`` (claude-*): after scaling the long edge down to the model's (1,568; Claude Opus 4.7:
  2,576), the larger of width x height / 750 (Anthropic's older formula) and one token a 28 x 28
  patch (its newer: the image padded to a multiple of 28 pixels), rounded up; at most the
  model's most (1,600; Opus 4.7: 4,784; a larger image is scaled down to fit): a bound by either
  formula.

Scaling uses integer arithmetic with the pixel counts rounded down, as the providers' own
examples do. An image whose size cannot be read (a URL, a file id, bytes no decoder knows) costs
the rule's most (``most_tokens``): 8 tiles, 1,536 patches, 1,600 or 4,784. A model no rule names gets
None, and the caller keeps its flat figure.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image

TILE, PATCH, MAX_PATCHES = 512, 32, 1536
AREA_DIVISOR, AREA_LONG_EDGE, AREA_MOST, AREA_PATCH = 750, 1568, 1600, 28
FIT_BOX, SHORT_SIDE = 2048, 768
_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.ASCII)
_PREFIX_CHARS = 64 * 1024  # base64 read first: a header is within it but for a JPEG's big EXIF


@dataclass(frozen=True, slots=True)
class ImageRule:
    kind: str  # "tiles", "patches" or "area"
    base: int = 0  # tiles: what any image costs, and all a "low" one does
    per_tile: int = 0
    multiplier: tuple[int, int] = (1, 1)  # patches: tokens per patch, as a fraction
    budget: int = MAX_PATCHES  # patches: the most an image is scaled down to
    original: int = MAX_PATCHES  # patches: the most at `detail: "original"` (the image's own size)
    long_edge: int = AREA_LONG_EDGE  # area: the longest side an image is scaled down to
    most: int = AREA_MOST  # area: the most an image costs

    def tokens(self, size: tuple[int, int] | None, detail: str | None = None) -> int:
        """What one image of `size` (width, height; None: unknown) costs at `detail`."""
        if self.kind == "tiles":
            if detail == "low":
                return self.base
            w, h = _tiled_size(size) if size is not None else (SHORT_SIDE, FIT_BOX)
            return self.base + self.per_tile * -(-w // TILE) * -(-h // TILE)
        if self.kind == "patches":
            budget = self.original if detail == "original" else self.budget
            patches = min(_patches(*size), budget) if size is not None else budget
            num, den = self.multiplier
            return -(-patches * num // den)
        if size is None:
            return self.most
        w, h = _fit(size, self.long_edge)
        patches = -(-w // AREA_PATCH) * -(-h // AREA_PATCH)
        return min(max(-(-w * h // AREA_DIVISOR), patches), self.most)

    @property
    def most_tokens(self) -> int:
        return self.tokens(None)


# Longest prefix first wins (see rule_for). Multipliers and tile costs: OpenAI's vision pricing
# page; Anthropic's vision page. A model not listed keeps the gateway's flat figure.
IMAGE_RULES: dict[str, ImageRule] = {
    "gpt-4o-mini": ImageRule("tiles", 2833, 5667),
    "gpt-4o": ImageRule("tiles", 85, 170),
    "chatgpt-4o": ImageRule("tiles", 85, 170),
    "gpt-4.1-mini": ImageRule("patches", multiplier=(162, 100)),
    "gpt-4.1-nano": ImageRule("patches", multiplier=(246, 100)),
    "gpt-4.1": ImageRule("tiles", 85, 170),
    "gpt-4.5": ImageRule("tiles", 85, 170),
    "gpt-5-mini": ImageRule("patches", multiplier=(162, 100)),
    "gpt-5-nano": ImageRule("patches", multiplier=(246, 100)),
    "gpt-5": ImageRule("tiles", 70, 140),
    "gpt-5.": ImageRule("patches", multiplier=(120, 100), budget=2500, original=10_000),
    "o4-mini": ImageRule("patches", multiplier=(172, 100)),
    "o1": ImageRule("tiles", 75, 150),
    "o3": ImageRule("tiles", 75, 150),
    "computer-use-preview": ImageRule("tiles", 65, 129),
    "claude-": ImageRule("area"),
    # Anthropic's vision page: Opus 4.7 takes images up to 2,576 pixels on the long edge, 4,784 tokens
    "claude-opus-4-7": ImageRule("area", long_edge=2576, most=4784),
}
_BY_LENGTH = sorted(IMAGE_RULES, key=len, reverse=True)


def rule_for(model: str) -> ImageRule | None:
    """The image rule of `model` by the longest prefix of its name, None if none names it."""
    name = model.lower()
    return next((IMAGE_RULES[p] for p in _BY_LENGTH if name.startswith(p)), None)


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """`size` scaled down (aspect kept, rounded down) so that neither side exceeds `longest`."""
    w, h = size
    if w <= longest and h <= longest:
        return w, h
    return (longest, max(1, h * longest // w)) if w >= h else (max(1, w * longest // h), longest)


def _tiled_size(size: tuple[int, int]) -> tuple[int, int]:
    w, h = _fit(size, FIT_BOX)
    if min(w, h) <= SHORT_SIDE:
        return w, h
    return (w * SHORT_SIDE // h, SHORT_SIDE) if w >= h else (SHORT_SIDE, h * SHORT_SIDE // w)


def _patches(w: int, h: int) -> int:
    return -(-w // PATCH) * -(-h // PATCH)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header (PNG, JPEG, GIF, WebP and what else Pillow reads
    without decoding pixels), or None if no decoder knows the bytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                w, h = image.size
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def data_url_size(url: str) -> tuple[int, int] | None:
    """The size of the image a ``data:image/...;base64,`` URL carries, None for any other URL."""
    match = _DATA_URL.match(url)
    return base64_size(url[match.end():]) if match else None


def base64_size(text: str) -> tuple[int, int] | None:
    """The size of a base64-encoded image: from its first 64 KiB, else from all of it."""
    prefix = text[:_PREFIX_CHARS]
    for part in (prefix, text) if len(prefix) < len(text) else (text,):
        try:
            data = base64.b64decode(part, validate=False)
        except (binascii.Error, ValueError):  # a prefix cut mid-quantum (whitespace inside)
            continue
        size = image_size(data)
        if size is not None:
            return size
    return None
