"""``scripts/check_site.py`` (run by CI on the built documentation) finds broken internal
links and anchors, and leaves external links and sound ones alone."""

from __future__ import annotations

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def check_site():
    return load_script("check_site")


def test_broken_links_and_anchors_are_found(check_site, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#here">ok</a> <a href="sub/page.html#gone">bad anchor</a>'
        ' <a href="missing.html">bad file</a> <a href="https://example.org/x">external</a>'
        ' <a href="#top">self</a> <span id="top"></span>'
    )
    (tmp_path / "sub" / "page.html").write_text(
        '<section id="here"><a href="../index.html">up</a><a name="old"></a></section>'
        '<a href="#old">named anchor</a>'
    )
    assert check_site.broken_links(tmp_path) == [
        "index.html: sub/page.html#gone (no such anchor)",
        "index.html: missing.html (no such file)",
    ]


def test_blank_screenshot(check_site, tmp_path):
    from PIL import Image, ImageDraw

    flat = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), "white").save(flat)
    drawn = tmp_path / "drawn.png"
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).text((4, 4), "scvi", fill="black")
    image.save(drawn)
    assert check_site.blank(flat) and not check_site.blank(drawn)
