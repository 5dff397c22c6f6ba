"""The documentation site (docs/): its code examples run, it builds with no warning,
and no internal link of the built HTML is broken.

The examples need only dataforge (a block that imports an optional extra that is not
installed is skipped with the extra's name); the build needs the ``docs`` extra
(sphinx, myst-parser, furo), installed by ``make test`` through the ``dev`` extra, and
skips with that reason where it is missing.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
GUIDES = ("datasets", "samplers", "collate", "transforms", "loading", "resume",
          "distributed", "benchmarks")
OPTIONAL = {"tokenizers", "transformers", "accelerate", "albumentations", "fsspec",
            "matplotlib"}

# NOTE [docs code blocks]: every ```python block of a page runs, in page order, in one
# namespace per page and in a fresh working directory (so a page can write tiny files
# and build on its earlier blocks). A block that cannot run here (a GPU, torchrun,
# the network) is preceded by a MyST comment line "% not run: <reason>", which is
# visible in the source and absent from the built site.
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NOT_RUN = re.compile(r"^% not run: (\S.*)$")


def code_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """``(line, source, reason not run or None)`` of each python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _NOT_RUN.match(before)
        blocks.append((line, m.group(1), skip.group(1) if skip else None))
    return blocks


def test_every_guide_exists_and_has_an_example_that_runs() -> None:
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    for guide in GUIDES:
        assert f"guides/{guide}.md" in names, f"docs/guides/{guide}.md is missing"
        page = DOCS / "guides" / f"{guide}.md"
        assert any(r is None for _, _, r in code_blocks(page)), (
            f"{page.relative_to(ROOT)} has no python block that runs")
    for top in ("getting_started.md", "migration.md", "stock_differences.md"):
        assert top in names, f"docs/{top} is missing"


def test_not_run_marker_only_before_a_block() -> None:
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("% not run"):
                assert _NOT_RUN.match(line), (
                    f"{page.relative_to(ROOT)}:{i + 1}: write '% not run: <reason>'")
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                assert nxt.startswith("```python"), (
                    f"{page.relative_to(ROOT)}:{i + 1}: '% not run' must be right "
                    "above a ```python block")


@pytest.mark.parametrize(
    "page", [p for p in PAGES if code_blocks(p)], ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for line, source, reason in code_blocks(page):
        if reason is not None:
            continue
        where = f"{page.relative_to(ROOT)}:{line}"
        try:
            exec(compile(source, where, "exec"), namespace)  # noqa: S102 - the page's own example
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in OPTIONAL:
                pytest.skip(f"{where} needs the optional package {exc.name!r}")
            raise
        ran += 1
    assert ran, f"{page.relative_to(ROOT)}: every python block is marked 'not run'"


# -- the link check ----------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif name in ("href", "src"):
                self.refs.append(value)


def broken_links(site: Path) -> list[str]:
    """Every internal ``href`` / ``src`` of the HTML under ``site`` whose file or
    ``#anchor`` does not exist, as ``"page -> link (why)"``."""
    parsed: dict[Path, _Links] = {}

    def parse(path: Path) -> _Links:
        if path not in parsed:
            links = _Links()
            links.feed(path.read_text(encoding="utf-8"))
            parsed[path] = links
        return parsed[path]

    broken = []
    for page in sorted(site.rglob("*.html")):
        for ref in parse(page).refs:
            url = urlsplit(ref)
            if url.scheme or url.netloc or ref.startswith(("mailto:", "javascript:")):
                continue  # external: not this site's business
            target = page if not url.path else (page.parent / unquote(url.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            name = f"{page.relative_to(site)} -> {ref}"
            if not target.is_file():
                broken.append(f"{name} (no file {target})")
            elif url.fragment and target.suffix == ".html" and \
                    unquote(url.fragment) not in parse(target).ids:
                broken.append(f"{name} (no anchor #{url.fragment} in {target.name})")
    return broken


def test_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#here">ok</a> <a href="#top" id="top">self</a>'
        '<a href="https://example.org/x">external</a> <img src="logo.png">'
        '<a href="sub/page.html#gone">bad anchor</a> <a href="nope.html">bad file</a>')
    (tmp_path / "logo.png").write_bytes(b"")
    (tmp_path / "sub" / "page.html").write_text('<h1 id="here">x</h1><a href="../">up</a>')
    assert broken_links(tmp_path) == [
        "index.html -> sub/page.html#gone (no anchor #gone in page.html)",
        f"index.html -> nope.html (no file {tmp_path / 'nope.html'})",
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("sphinx", "myst_parser", "furo"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the docs extra is not installed ({module} missing): "
                        "pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    # the same command as `make docs`: warnings (nitpicky references included) are errors
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
         str(DOCS), str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, f"docs build failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.mark.slow
def test_site_builds_without_warnings_and_has_no_broken_internal_link(site: Path) -> None:
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for page in PAGES:
        built = page.relative_to(DOCS).with_suffix(".html").as_posix()
        assert built in pages, f"{page.relative_to(ROOT)} was not built (not in a toctree?)"
    assert broken_links(site) == []


@pytest.mark.slow
def test_api_reference_documents_every_public_name(site: Path) -> None:
    import dataforge

    ids: set[str] = set()
    for page in (site / "api").glob("*.html"):
        links = _Links()
        links.feed(page.read_text(encoding="utf-8"))
        ids |= links.ids
    documented = {i.rsplit(".", 1)[-1] for i in ids if i.startswith("dataforge.")}
    missing = [n for n in dataforge.__all__ if not n.startswith("__") and n not in documented]
    assert missing == [], f"public names without an API entry: {missing}"


def _conf() -> object:
    spec = importlib.util.spec_from_file_location("docs_conf", DOCS / "conf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstring_markup_rewrites_are_narrow() -> None:
    fix = _conf()._fix_docstring_markup  # type: ignore[attr-defined]
    lines = [
        "``cores`` = CPUs (``os.sched_getaffinity``), ``collate_fn``s, ``x``.",
        "per ``(seed, epoch,",
        "index)``, whatever. An ``fn`` runs",
        "    a, b, **kwargs: as in f; **bold** stays",
        "    c, **kwargs: passed on",
        "``run(*, out, **kw)``",
        "NOTE [rules]:",
        "- one",
        "====  ====",
        "a     b",
        "====  ====",
        "x     y",
        "====  ====",
        "after",
    ]
    fix(None, "module", "m", None, None, lines)
    assert lines == [
        "``cores`` = CPUs (``os.sched_getaffinity``), ``collate_fn``\\ s, ``x``.",
        "per ``(seed, epoch,",  # a literal over two lines is not taken apart
        "index)``, whatever. An ``fn`` runs",
        "    a, b, \\*\\*kwargs: as in f; **bold** stays",  # the bold pair is kept
        "    c, \\*\\*kwargs: passed on",
        "``run(*, out, **kw)``",  # literal text is left alone
        "NOTE [rules]:", "", "- one",
        "", "::", "",
        "    ====  ====", "    a     b", "    ====  ====", "    x     y", "    ====  ====", "",
        "after",
    ]
