"""The rendered book, opened page by page in a real headless Chromium.

What is checked, on every HTML page of ``_build/html`` (the output of ``jupyter-book build .``):

- the page loads (HTTP 200), with no console error, no uncaught exception, no failed request and
  no request that leaves localhost (the book must read offline);
- every ``<img>`` has loaded (``naturalWidth > 0``);
- MathJax, served from the book itself, has typeset every math element (each ``.math`` holds an
  ``mjx-container``), reported no TeX error (``mjx-merror``) and left no raw ``$$``, ``\\[`` or ``\\(``;
- every internal link points to an existing page and anchor.

On chapter pages (``notebooks/*.html``): the Colab launch button opens this notebook from the
repository named in ``_config.yml``, and every other Colab link agrees with it. Across chapters:
equations are numbered and referenced from one chapter to another. The search page finds a word
that is in the book and nothing for one that is not. A screenshot of the first screen of each
chapter is saved to ``_build/screenshots/NN_name.png`` (and of the landing page, ``00_intro.png``).

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``make test``), driven by
Playwright from PyPI without any browser download. Run standalone, the module skips when there is no
build; ``make test`` sets ``BOOK_BROWSER_REQUIRED=1``, which turns every skip into a failure.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("BOOK_HTML_DIR", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = Path(os.environ.get("BOOK_SCREENSHOT_DIR", ROOT / "_build" / "screenshots")).resolve()
REQUIRED = os.environ.get("BOOK_BROWSER_REQUIRED") == "1"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}
PAGE_TIMEOUT_MS = 60_000


def skip_or_fail(reason: str):
    """Skip when run standalone; fail under ``make test`` (BOOK_BROWSER_REQUIRED=1)."""
    if REQUIRED:
        pytest.fail(f"{reason} (BOOK_BROWSER_REQUIRED=1: the browser check must run)")
    pytest.skip(reason)


def discover_pages() -> list[str]:
    """Every HTML page of the build, as paths relative to _build/html (assets under _* excluded)."""
    if not (HTML / "index.html").is_file():
        return []
    pages = []
    for path in sorted(HTML.rglob("*.html")):
        rel = path.relative_to(HTML).as_posix()
        if rel.split("/")[0].startswith("_"):  # _static, _sources, _images: assets, not pages
            continue
        pages.append(rel)
    return pages


PAGES = discover_pages()
CHAPTERS = [p for p in PAGES if re.fullmatch(r"notebooks/\d\d_[\w-]+\.html", p)]


def redirect_target(rel: str) -> str | None:
    """The page a <meta http-equiv="Refresh"> page sends the reader to, relative to _build/html."""
    path = HTML / rel.split("?")[0]
    if not path.is_file():
        return None
    m = re.search(r"""http-equiv=["']Refresh["'][^>]*url=([^"'>\s]+)""", path.read_text(encoding="utf-8"), re.I)
    if not m:
        return None
    return (Path(rel).parent / m.group(1)).as_posix().removeprefix("./")


def book_config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def expected_colab_url(page: str) -> str:
    """The Colab URL of a chapter page, derived from _config.yml (the one place the repository URL is kept)."""
    cfg = book_config()
    repo = cfg["repository"]["url"].rstrip("/")
    assert repo.startswith("https://github.com/"), repo
    colab = cfg["launch_buttons"]["colab_url"].rstrip("/")
    branch = cfg["repository"].get("branch", "main")
    book = (cfg["repository"].get("path_to_book") or "").strip("/")
    notebook = page[: -len(".html")] + ".ipynb"
    path = f"{book}/{notebook}" if book else notebook
    return f"{colab}/github/{repo[len('https://github.com/'):]}/blob/{branch}/{path}"


# --------------------------------------------------------------------------------------------
# Fixtures: a static server on a free localhost port, and one Chromium for the whole session.


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture(scope="session")
def base_url():
    if not PAGES:
        skip_or_fail(f"no built book at {HTML} (run `make book` or `jupyter-book build .` first)")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -r requirements.txt)")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        skip_or_fail(f"Debian's chromium is not installed at {chromium} (apt-get install chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,
            service_workers="block",
        )
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


class PageProbe:
    """Opens one page and records everything that went wrong while it loaded."""

    def __init__(self, context, base_url: str):
        self.base = base_url
        self.page = context.new_page()
        self.problems: list[str] = []
        self.external: list[str] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"uncaught exception: {exc}"))
        self.page.on("requestfailed", self._on_failed)
        self.page.on("response", self._on_response)
        self.page.on("request", self._on_request)

    def _on_console(self, msg):
        if msg.type == "error":
            self.problems.append(f"console error: {msg.text} ({msg.location.get('url', '')})")

    def _on_failed(self, request):
        self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _on_response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def _on_request(self, request):
        url = request.url
        if not url.startswith(self.base) and not url.startswith(("data:", "blob:", "about:")):
            self.external.append(url)

    def open(self, rel: str):
        response = self.page.goto(f"{self.base}/{rel}", wait_until="load")
        assert response is not None and response.status == 200, f"{rel}: HTTP {response and response.status}"
        target = redirect_target(rel)
        if target is not None:  # index.html is a <meta http-equiv="Refresh"> to the first page
            assert (HTML / target).is_file(), f"{rel} redirects to a missing page {target}"
            self.page.wait_for_url(f"{self.base}/{target}")
            self.page.wait_for_load_state("load")
        return self.page

    def close(self):
        self.page.close()


@pytest.fixture
def probe(browser_context, base_url):
    p = PageProbe(browser_context, base_url)
    yield p
    p.close()


WAIT_FOR_IMAGES = """async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done, {once: true});
    img.addEventListener('error', done, {once: true});
  })));
  await document.fonts.ready;
  return images.length;
}"""

BROKEN_IMAGES = """() => [...document.images]
  .filter(img => !(img.complete && img.naturalWidth > 0))
  .map(img => img.getAttribute('src'))"""

MATH_STATE = """async () => {
  const maths = [...document.querySelectorAll('.math')];
  if (maths.length === 0) return {count: 0};
  const t0 = Date.now();
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() - t0 > 30000) return {count: maths.length, loaded: false};
    await new Promise(r => setTimeout(r, 50));
  }
  await MathJax.startup.promise;
  const article = document.querySelector('article') || document.body;
  const clone = article.cloneNode(true);
  clone.querySelectorAll('pre, code, mjx-container, script, style, .highlight').forEach(e => e.remove());
  const text = clone.textContent;
  return {
    count: maths.length,
    loaded: true,
    version: MathJax.version,
    untypeset: maths.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
    texErrors: [...document.querySelectorAll('mjx-merror')].map(
      e => e.getAttribute('data-mjx-error') || e.textContent.slice(0, 80)),
    raw: ['$$', '\\\\[', '\\\\('].filter(d => text.includes(d)),
  };
}"""

LINKS = """() => [...document.querySelectorAll('a[href]')].map(a => a.href)"""


def _ids_of(path: Path, cache: dict = {}) -> set[str]:  # noqa: B006 - a deliberate per-process cache
    if path not in cache:
        text = path.read_text(encoding="utf-8", errors="replace")
        cache[path] = set(re.findall(r"""\bid=["']([^"']+)["']""", text))
    return cache[path]


def check_internal_links(rel: str, hrefs: list[str], base: str) -> list[str]:
    problems = []
    for href in sorted(set(hrefs)):
        if not href.startswith(base + "/"):
            continue
        url, fragment = urldefrag(href)
        target_rel = unquote(urlsplit(url).path).lstrip("/") or "index.html"
        target = HTML / target_rel
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"broken link to {target_rel}")
        elif fragment and target.suffix == ".html" and unquote(fragment) not in _ids_of(target):
            problems.append(f"broken anchor {target_rel}#{fragment}")
    return problems


def screenshot_name(rel: str) -> str | None:
    if rel in CHAPTERS:
        return Path(rel).stem + ".png"
    if rel == "book/intro.html":
        return "00_intro.png"
    return None


# --------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("rel", PAGES or ["<no build>"])
def test_page_renders(probe, rel):
    page = probe.open(rel)
    n_images = page.evaluate(WAIT_FOR_IMAGES)
    broken = page.evaluate(BROKEN_IMAGES)
    assert not broken, f"{rel}: {len(broken)} of {n_images} images did not load: {broken}"

    math = page.evaluate(MATH_STATE)
    if math["count"]:
        assert math["loaded"], f"{rel}: has {math['count']} math elements but MathJax never started"
        assert not math["untypeset"], f"{rel}: math left untypeset by MathJax: {math['untypeset'][:5]}"
        assert not math["texErrors"], f"{rel}: MathJax TeX errors: {math['texErrors'][:5]}"
        assert not math["raw"], f"{rel}: raw math delimiters {math['raw']} left in the text"
        assert str(math["version"]).startswith("3."), f"{rel}: unexpected MathJax {math['version']}"

    link_problems = check_internal_links(rel, page.evaluate(LINKS), probe.base)
    assert not link_problems, f"{rel}: {link_problems}"

    if rel in CHAPTERS:
        want = expected_colab_url(rel)
        colab_links = sorted(set(page.evaluate(
            "() => [...document.querySelectorAll('a[href*=\"colab.research.google.com\"]')].map(a => a.href)")))
        assert want in colab_links, f"{rel}: no Colab launch link to {want}; found {colab_links}"
        wrong = [u for u in colab_links if u != want]
        assert not wrong, f"{rel}: Colab links that do not open this notebook ({want}): {wrong}"

    name = screenshot_name(rel)
    if name:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=False)
        assert (SCREENSHOTS / name).stat().st_size > 10_000, f"{name}: suspiciously small screenshot"

    assert not probe.external, f"{rel}: requests that leave localhost (the book must read offline): {probe.external}"
    assert not probe.problems, f"{rel}: " + "; ".join(probe.problems)


def _search(probe, word: str):
    page = probe.open(f"search.html?q={word}")
    page.wait_for_function(
        """() => {
          const s = document.querySelector('#search-results');
          return s && /(found|did not match)/i.test(s.textContent);
        }"""
    )
    return page.evaluate(
        "() => [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.getAttribute('href'))")


def test_search_finds_a_word_of_the_book(probe):
    hits = _search(probe, "posterior")
    assert hits, "searching for 'posterior' found nothing"
    assert any("notation" in h for h in hits), f"the notation page defines the posterior; hits: {hits}"
    assert not probe.problems, "; ".join(probe.problems)


def test_search_finds_nothing_for_a_nonsense_word(probe):
    hits = _search(probe, "qzxjvwkq")
    assert hits == [], f"a nonsense word matched {hits}"
    assert not probe.problems, "; ".join(probe.problems)


def test_equations_numbered_and_cross_referenced(probe):
    if len(CHAPTERS) < 2:
        pytest.skip(f"needs at least two chapters, the build has {len(CHAPTERS)}")
    unnumbered, cross_refs = [], 0
    for rel in CHAPTERS:
        page = probe.open(rel)
        if page.evaluate("() => document.querySelectorAll('span.eqno').length") == 0:
            unnumbered.append(rel)
        targets = page.evaluate(
            "() => [...document.querySelectorAll('article a.reference.internal')].map(a => a.getAttribute('href'))")
        here = Path(rel).name
        cross_refs += sum(1 for t in targets if "#equation-" in t and not t.startswith(("#", here)))
    assert not unnumbered, f"chapters without a numbered equation: {unnumbered}"
    assert cross_refs > 0, "no chapter cites an equation of another chapter with {eq}"


# --------------------------------------------------------------------------------------------
# Exercises (issue 13): the list page links every exercise, and a collapsed solution opens on a click with its
# math typeset.

SOLUTION_WITH_MATH = re.compile(r'<div class="solution dropdown[^"]*"[^>]*id="([^"]+)"')


def _chapter_with_solution_math() -> tuple[str, str] | None:
    """(chapter page, solution id) of the first solution whose body holds math, from the built HTML."""
    for rel in CHAPTERS:
        text = (HTML / rel).read_text(encoding="utf-8")
        for m in SOLUTION_WITH_MATH.finditer(text):
            body = text[m.end(): m.end() + 20_000].split('<div class="solution', 1)[0]
            if 'class="math' in body:
                return rel, m.group(1)
    return None


def test_exercise_list_links_every_chapters_exercises(probe):
    if "book/exercises.html" not in PAGES:
        skip_or_fail("book/exercises.html was not built (is book/exercises in _toc.yml?)")
    page = probe.open("book/exercises.html")
    hrefs = page.evaluate("() => [...document.querySelectorAll('article a.reference.internal')]"
                          ".map(a => a.getAttribute('href'))")
    exercise_links = [h for h in hrefs if "#ex-" in h]
    chapters_linked = {h.split("#")[0].split("/")[-1] for h in exercise_links}
    assert chapters_linked == {Path(c).name for c in CHAPTERS}, (sorted(chapters_linked), CHAPTERS)
    assert len(exercise_links) >= 5 * len(CHAPTERS)
    assert check_internal_links("book/exercises.html", page.evaluate(LINKS), probe.base) == []


def test_a_solution_opens_on_click_with_its_math_typeset(probe):
    found = _chapter_with_solution_math()
    if found is None:
        skip_or_fail("no chapter has a solution with math")
    rel, sid = found
    page = probe.open(rel)
    page.evaluate(MATH_STATE)  # waits for MathJax
    height = f"() => document.getElementById('{sid}').querySelector('section').getBoundingClientRect().height"
    assert page.evaluate(height) == 0, f"{rel}: the solution {sid} is not collapsed"
    # sphinx-togglebutton's button, not the title: the title is mostly a link to the exercise. An attribute
    # selector, because sphinx-exercise's ids hold the page path, with a "/"
    page.click(f'[id="{sid}"] button.toggle-button')
    page.wait_for_function(f"() => ({height})() > 0")
    shown = page.evaluate(f"""() => [...document.getElementById('{sid}').querySelectorAll('.math')].map(e => {{
        const box = e.getBoundingClientRect();
        return {{typeset: !!e.querySelector('mjx-container'), visible: box.width > 0 && box.height > 0}};
    }})""")
    assert shown and all(m["typeset"] and m["visible"] for m in shown), f"{rel} {sid}: {shown}"
    assert not probe.problems, f"{rel}: " + "; ".join(probe.problems)
