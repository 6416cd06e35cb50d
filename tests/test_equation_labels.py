"""Every equation label that a library docstring or a book page cites exists in a chapter, exactly once.

Docstrings cite equations as ``eq-name`` and pages as {eq}`eq-name`; the chapters define them with MyST's
``$$ ... $$ (eq-name)``. A renamed or dropped equation makes this test fail.
"""

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LABEL_DEF = re.compile(r"\$\$\s*\((eq-[A-Za-z0-9_-]+)\)")
CITE_DOC = re.compile(r"``(eq-[A-Za-z0-9_-]+)``")
CITE_MD = re.compile(r"\{eq\}`(eq-[A-Za-z0-9_-]+)`")


def _markdown_sources():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        yield nb.name, "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for page in sorted((ROOT / "book").glob("*.md")):
        yield page.name, page.read_text(encoding="utf-8")


def _defined_labels():
    defined = {}
    for name, text in _markdown_sources():
        for label in LABEL_DEF.findall(text):
            defined.setdefault(label, []).append(name)
    return defined


def test_labels_are_defined_once():
    defined = _defined_labels()
    assert defined, "no labelled equations found in the chapters"
    duplicated = {k: v for k, v in defined.items() if len(v) > 1}
    assert not duplicated, f"equation labels defined more than once: {duplicated}"


def _library_citations():
    for path in sorted((ROOT / "ddpm_lib").rglob("*.py")):
        for label in CITE_DOC.findall(path.read_text(encoding="utf-8")):
            yield path.relative_to(ROOT).as_posix(), label


@pytest.mark.parametrize("where,label", sorted(set(_library_citations())))
def test_library_docstring_citations_exist(where, label):
    assert label in _defined_labels(), f"{where} cites {label}, which no chapter defines"


def test_page_citations_exist():
    defined = _defined_labels()
    missing = [(name, label) for name, text in _markdown_sources() for label in CITE_MD.findall(text)
               if label not in defined]
    assert not missing, f"cross-references to undefined equations: {missing}"
