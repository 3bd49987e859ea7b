"""Image tokens by each provider's published rule, from sizes read off real image headers
(written here by Pillow, a decoder independent of the rule)."""
from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from pricing.images import IMAGE_RULES, base64_size, data_url_size, image_size, rule_for


def encoded(size: tuple[int, int], fmt: str, **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt, **save)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (300, 2500)])
def test_the_size_is_read_from_the_header_of_each_format(fmt, size):
    assert image_size(encoded(size, fmt)) == size


def test_a_jpeg_whose_frame_header_lies_past_the_first_64_kib_is_read_whole():
    icc = bytes(range(256)) * 600  # 150 KiB of APP2 segments before the frame header
    data = encoded((1234, 567), "JPEG", icc_profile=icc, progressive=True)
    assert data.index(b"\xff\xc2") > 64 * 1024
    text = base64.b64encode(data).decode()
    assert base64_size(text) == (1234, 567)
    assert data_url_size("data:image/jpeg;base64," + text) == (1234, 567)


def test_what_is_not_an_inline_image_has_no_size():
    assert data_url_size("https://example.com/cat.png") is None
    assert data_url_size("data:text/plain;base64,aGVsbG8=") is None
    assert base64_size("A" * 1000) is None
    assert base64_size("not base64 at all!") is None
    assert image_size(b"\x89PNG\r\n\x1a\n") is None  # a signature without its header


# OpenAI's worked examples (vision, "Calculating costs"): gpt-4o, 85 + 170 a tile.
@pytest.mark.parametrize(("size", "detail", "tokens"), [
    ((1024, 1024), "high", 765),  # scaled to 768 x 768: 4 tiles
    ((2048, 4096), "high", 1105),  # 1024 x 2048, then 768 x 1536: 6 tiles
    ((4096, 8192), "low", 85),
    ((4096, 8192), None, 1105),  # no detail: counted as high
    ((4096, 8192), "auto", 1105),
    ((512, 512), "high", 255),  # small images are not scaled up: 1 tile
    ((513, 100), "high", 425),  # 2 tiles
    ((100, 10_000), "high", 85 + 170 * 4),  # 20 x 2048 after the fit: 1 x 4 tiles
])
def test_tiles_follow_openais_examples(size, detail, tokens):
    assert rule_for("gpt-4o-2024-08-06").tokens(size, detail) == tokens


def test_gpt_4o_mini_tiles_cost_what_its_own_rule_says_not_gpt_4os():
    assert rule_for("gpt-4o-mini").tokens((1024, 1024), "high") == 2833 + 5667 * 4
    assert rule_for("gpt-4o-mini-2024-07-18").tokens((1024, 1024), "low") == 2833
    assert rule_for("gpt-4o-mini").most_tokens == 2833 + 5667 * 8  # 768 x 2048: 2 x 4 tiles


@pytest.mark.parametrize(("model", "size", "tokens"), [
    ("gpt-4.1-mini", (1024, 1024), 1659),  # 1,024 patches x 1.62 = 1,658.88, rounded up
    ("gpt-4.1-nano", (1024, 1024), 2520),  # x 2.46 = 2,519.04
    ("o4-mini", (64, 33), 7),  # 2 x 2 patches (33 rows need 2) x 1.72 = 6.88
    ("gpt-4.1-mini", (1800, 2400), 2489),  # past 1,536 patches: 1,536 x 1.62 = 2,488.32 (a bound)
])
def test_patches_are_counted_and_capped(model, size, tokens):
    assert rule_for(model).tokens(size, "high") == tokens


# Anthropic's vision page: tokens = width x height / 750, about 1,600 at most; now also one a 28 x 28
# patch (the image padded to a multiple of 28): the larger of the two, a bound by either.
@pytest.mark.parametrize(("size", "tokens"), [
    ((200, 200), 64),  # 8 x 8 patches (was: 40,000 / 750 = 54, held short by 10)
    ((1000, 1000), 1334), ((1092, 1092), 1590),  # the area: 36 x 36 = 1,296 and 39 x 39 = 1,521 patches
    ((3136, 1568), 1600),  # long edge to 1,568: 1568 x 784 = 1,639 -> at most 1,600
    ((1, 1), 1),
])
def test_claude_images_cost_their_area(size, tokens):
    assert rule_for("claude-sonnet-4-5").tokens(size) == tokens


@pytest.mark.parametrize(("size", "tokens"), [
    ((1920, 1080), 2765),  # 2,073,600 / 750 = 2,764.8 (69 x 39 = 2,691 patches); was 1,600 at most
    ((2576, 1000), 3435),  # 2,576,000 / 750 = 3,434.67 (92 x 36 = 3,312 patches)
    ((5152, 2000), 3435),  # the long edge scaled down to 2,576 first: 2576 x 1000
    ((2576, 2576), 4784),  # 8,847.7 -> at most 4,784
    (None, 4784),
])
def test_claude_opus_4_7_images_are_counted_to_its_larger_size(size, tokens):
    """Claude Opus 4.7 takes images up to 2,576 pixels on the long edge and 4,784 tokens (its vision
    page); counted at the older models' 1,568 and 1,600, a 1920 x 1080 screenshot was held at 1,600
    tokens though billed about 2,765: a hold short of the call's cost."""
    assert rule_for("claude-opus-4-7").tokens(size) == tokens
    assert rule_for("claude-opus-4-7-20260416").tokens(size) == tokens


def test_the_longest_prefix_wins_and_unknown_models_have_no_rule():
    assert rule_for("gpt-4.1-mini-2025-04-14") is IMAGE_RULES["gpt-4.1-mini"]
    assert rule_for("gpt-4.1-2025-04-14") is IMAGE_RULES["gpt-4.1"]
    assert rule_for("GPT-4o") is IMAGE_RULES["gpt-4o"]
    assert rule_for("gpt-5-nano") is IMAGE_RULES["gpt-5-nano"]
    assert rule_for("llama-3-70b") is None
    assert rule_for("gpt-4") is None


def test_an_image_of_unknown_size_costs_the_most_any_image_can():
    for model in ("gpt-4o", "gpt-4.1-mini", "claude-opus-4-1", "claude-opus-4-7", "o3"):
        rule = rule_for(model)
        worst = max(rule.tokens((w, h), "high") for w in (1, 511, 513, 768, 1025, 2048, 4000, 9000)
                    for h in (1, 511, 513, 768, 1025, 2048, 4000, 9000))
        assert rule.most_tokens == rule.tokens(None, "high") >= worst


@pytest.mark.parametrize(("model", "size", "detail", "tokens"), [
    ("gpt-5.4", (1600, 1600), "high", 3000),  # 50 x 50 patches x 1.2 (was: gpt-5's tiles, 630)
    ("gpt-5.4-mini-2026-03-17", (1600, 1600), "auto", 3000),
    ("gpt-5.2", (3200, 3200), "high", 3000),  # past 2,500 patches, scaled down to them: the budget, a bound
    ("gpt-5.4", (3200, 3200), "original", 12000),  # 10,000 patches at the original size
    ("gpt-5.4", None, "original", 12000), ("gpt-5.4-nano", None, "low", 3000),  # low: no effect on patches
    ("gpt-5", (1600, 1600), "high", 70 + 140 * 4),  # gpt-5 itself keeps its tiles
])
def test_gpt_5_point_releases_count_patches_up_to_their_budget_not_gpt_5s_tiles(model, size, detail, tokens):
    """gpt-5.2 and later (5.3-codex, 5.4 and its mini and nano) are billed by 32-pixel patches, 1.2
    tokens each, up to 2,500 patches (`high`, `auto`) or 10,000 (`original`): as measured against
    their usage (community.openai.com, "Introducing GPT-5.4 mini and nano", March 2026). Matched by
    gpt-5's prefix, they were counted at its tiles: a 1,600-pixel square 630 tokens, billed 3,000."""
    assert rule_for(model).tokens(size, detail) == tokens
