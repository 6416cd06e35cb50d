"""The exercises of the book (issue 13): at least five per chapter, of the three kinds, each with a solution that CI
runs; book/exercises.md lists them all; and the checks of the code exercises reject plausible wrong answers."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("list_exercises", ROOT / "scripts" / "list_exercises.py")
list_exercises = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = list_exercises  # dataclasses look their module up here
spec.loader.exec_module(list_exercises)

EXERCISES = list_exercises.all_exercises()


def test_every_chapter_is_listed():
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(EXERCISES) == chapters and len(chapters) >= 9


@pytest.mark.parametrize("chapter", sorted(EXERCISES))
def test_five_exercises_of_three_kinds_each_with_a_solution(chapter):
    items = EXERCISES[chapter]
    kinds = [ex.kind for ex in items]
    assert len(items) >= 5, f"{chapter}: {len(items)} exercises"
    assert kinds.count("Derivation") >= 2 and kinds.count("Code") >= 2 and kinds.count("Experiment") >= 1, kinds
    for ex in items:
        assert ex.has_solution, f"{chapter}: {ex.label} has no solution"
        assert ex.solution_code, f"{chapter}: the solution of {ex.label} has no code cell for CI to run"
        assert ex.solution_tags_ok, f"{chapter}: a code cell of the solution of {ex.label} lacks the tag 'solution'"
        code = "\n".join(ex.solution_code)
        if ex.kind == "Derivation":  # the answer is checked, symbolically or numerically
            assert re.search(r"\bassert\b", code), f"{chapter}: {ex.label}'s solution asserts nothing"
        if ex.kind == "Code":  # the reader's function goes through a check that can reject it
            assert re.search(r"\bcheck_\w+\(", code), f"{chapter}: {ex.label}'s solution calls no check_ function"


def test_labels_are_unique_across_the_book():
    labels = [ex.label for items in EXERCISES.values() for ex in items]
    assert len(labels) == len(set(labels))


def test_exercise_page_is_up_to_date():
    page = ROOT / "book" / "exercises.md"
    assert page.read_text(encoding="utf-8") == list_exercises.render(EXERCISES), \
        "book/exercises.md is out of date: run python scripts/list_exercises.py"
