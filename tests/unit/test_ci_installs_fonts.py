""".ci/run installs the fonts the invoice PDF's tests print in, rather than trusting the image to
have them: those tests skip where a font is missing (a developer's machine), so a CI machine
without one passed them untested. Liberation Sans is the body font (`UNICODE_FONTS`' first pair),
DejaVu Sans has the Hebrew and Arabic (`SCRIPT_FONTS`: fonts-dejavu-core's DejaVuSans.ttf; the
Condensed ones are fonts-dejavu-extra's), WenQuanYi Micro Hei the CJK (`CJK_FONTS`' first). Before,
.ci/run installed only fonts-wqy-microhei (and chromium), and the others were there only where
something else had pulled them in (fontconfig-config takes any one of seven font packages)."""
from __future__ import annotations

import re
from pathlib import Path

from api import renderings

CI_RUN = (Path(__file__).parents[2] / ".ci" / "run").read_text()
# Debian's package of each font file: `dpkg -S` on bookworm
PACKAGES = {renderings.UNICODE_FONTS[0][0]: "fonts-liberation", renderings.UNICODE_FONTS[0][1]: "fonts-liberation",
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf": "fonts-dejavu-core",
            renderings.CJK_FONTS[0]: "fonts-wqy-microhei"}


def test_ci_installs_each_font_the_pdf_tests_print_in_where_it_is_missing() -> None:
    assert "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf" in renderings.SCRIPT_FONTS
    for path, package in PACKAGES.items():
        # the file is looked for (on one line, or lines joined by a backslash), and its package is
        # installed where it is not found
        assert re.search(rf"\[ -f {re.escape(path)} \](?:[^\n]|\\\n)*\|\| need\+=\({re.escape(package)}\)", CI_RUN), \
            (path, package)
    assert 'apt-get install -y -qq "${need[@]}"' in CI_RUN
