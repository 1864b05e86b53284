"""Check the built documentation site: internal links resolve, and the pages render in Chromium.

``python scripts/check_site.py [docs/_build/html]`` (CI runs it after ``scripts/run.sh docs``):

1. every ``href`` of every page that points inside the site names a file that exists and, with a
   ``#fragment``, an element of that page with that ``id``;
2. the landing page and the method guide, opened in headless Chromium (Debian's ``chromium``),
   render: the DOM after scripts ran has the landing page's sections and the guide's method
   tables, and a screenshot of each is not blank.

Exit 1 with one line per problem; 0 when the site is sound.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: pages opened in the browser -> text their rendered DOM must contain
RENDERED = {
    "index.html": ["Quickstart", "How-to guides", "Explanation", "Reference", "Results"],
    "howto_choose_method.html": ["Decision chart", "<table", "fast_retrain", "dp_sgd"],
}
#: Chromium's flags for a closed network, as root, headless
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(errors="replace"))
    return page


def broken_links(site: Path) -> list[str]:
    """``"page: href"`` for every internal link of the site's pages that does not resolve."""
    pages = {
        p: _parse(p)
        for p in sorted(site.rglob("*.html"))
        if not {"_static", "_sources", "_modules"} & set(p.relative_to(site).parts)
    }
    problems = []
    for path, page in pages.items():
        for href in page.links:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("mailto:"):
                continue  # outside the site
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{path.relative_to(site)}: {href} (no such file)")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{path.relative_to(site)}: {href} (no such anchor)")
    return problems


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(browser: str, page: Path, screenshot: Path) -> str:
    """The DOM of ``page`` after its scripts ran, and its screenshot written to ``screenshot``."""
    with tempfile.TemporaryDirectory() as profile:
        flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
        ).stdout
        subprocess.run(
            [*flags, f"--screenshot={screenshot}", page.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )
    return dom


def blank(screenshot: Path) -> bool:
    """Whether the image has (almost) a single colour."""
    from PIL import Image

    with Image.open(screenshot) as image:
        darkest, brightest = image.convert("L").getextrema()
    return brightest - darkest < 32


def rendering_problems(site: Path, browser: str, out: Path) -> list[str]:
    problems = []
    for name, needles in RENDERED.items():
        page = site / name
        if not page.exists():
            problems.append(f"{name}: not built")
            continue
        shot = out / (page.stem + ".png")
        dom = render(browser, page, shot)
        missing = [n for n in needles if n not in dom]
        if missing:
            problems.append(f"{name}: the rendered page lacks {missing}")
        if not shot.exists() or blank(shot):
            problems.append(f"{name}: the screenshot is blank")
    return problems


def main(argv: list[str]) -> int:
    site = Path(argv[0] if argv else "docs/_build/html").resolve()
    if not (site / "index.html").exists():
        print(f"no built site in {site}: build it first (bash scripts/run.sh docs)")
        return 1
    problems = broken_links(site)
    browser = chromium()
    if browser is None:
        problems.append("chromium not found (apt-get install chromium): pages not rendered")
    else:
        out = site.parent / "screenshots"
        out.mkdir(exist_ok=True)
        problems += rendering_problems(site, browser, out)
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) in {site}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
