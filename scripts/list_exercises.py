"""List the exercises of every chapter and write book/exercises.md (run after editing a chapter's exercises).

An exercise is a markdown cell of a chapter notebook that opens with the sphinx-exercise directive

    ```{exercise} Title
    :label: ex-NN-name

    **Derivation** · ★★ · the statement ...
    ```

(kind: Derivation, Code or Experiment; difficulty: one to three stars), followed by the reader's cells and by its
solution between ```{solution-start} ex-NN-name``` (with ``:class: dropdown``) and ```{solution-end}```, whose
code cells carry the tag ``solution`` (nbval runs them, so CI proves every solution). tests/test_exercises.py checks
these rules and that book/exercises.md is what this script writes.

Run: ``python scripts/list_exercises.py`` (``--check``: exit 1 if book/exercises.md is out of date).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "exercises.md"
KINDS = ("Derivation", "Code", "Experiment")
EXERCISE = re.compile(r"^```\{exercise\}\s*(?P<title>.*?)\s*\n:label:\s*(?P<label>ex-[\w-]+)\s*\n(?P<body>.*)```\s*$",
                      re.S)
KIND = re.compile(r"\*\*(?P<kind>" + "|".join(KINDS) + r")\*\*\s*·\s*(?P<stars>★{1,3})")
SOLUTION_START = re.compile(r"^````?\{solution-start\}\s*(?P<label>ex-[\w-]+)")
SOLUTION_END = re.compile(r"^````?\{solution-end\}")


@dataclass
class Exercise:
    chapter: str
    label: str
    title: str
    kind: str
    stars: int
    solution_code: list = field(default_factory=list)  # sources of the solution's code cells
    solution_tags_ok: bool = True
    has_solution: bool = False


def chapter_exercises(path: Path) -> list:
    """The exercises of one notebook, with the code of their solutions; ValueError on a malformed one."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    found, by_label, open_label = [], {}, None
    for cell in cells:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            if src.strip().startswith("```{exercise}") and "`" in src.strip().splitlines()[0][len("```{exercise}"):]:
                raise ValueError(f"{path.name}: an exercise title cannot contain backticks (the directive would "
                                 f"silently become a code block): {src.strip().splitlines()[0]}")
            m = EXERCISE.match(src.strip())
            if m:
                k = KIND.search(m["body"])
                if not k:
                    raise ValueError(f"{path.name}: exercise {m['label']} does not state its kind and difficulty "
                                     f"as '**Derivation|Code|Experiment** · ★..'")
                ex = Exercise(path.stem, m["label"], m["title"], k["kind"], len(k["stars"]))
                if ex.label in by_label:
                    raise ValueError(f"{path.name}: exercise label {ex.label} used twice")
                found.append(ex)
                by_label[ex.label] = ex
            start = SOLUTION_START.match(src.strip())
            if start:
                if start["label"] not in by_label:
                    raise ValueError(f"{path.name}: solution of {start['label']} before (or without) its exercise")
                if ":class: dropdown" not in src:
                    raise ValueError(f"{path.name}: the solution of {start['label']} must be collapsed "
                                     "(:class: dropdown)")
                open_label = start["label"]
                by_label[open_label].has_solution = True
            elif SOLUTION_END.match(src.strip()):
                open_label = None
        elif cell["cell_type"] == "code" and open_label is not None:
            ex = by_label[open_label]
            ex.solution_code.append(src)
            ex.solution_tags_ok &= "solution" in cell.get("metadata", {}).get("tags", [])
    if open_label is not None:
        raise ValueError(f"{path.name}: the solution of {open_label} has no solution-end")
    return found


def all_exercises() -> dict:
    """{chapter notebook stem: [Exercise, ...]} for every chapter in notebooks/."""
    return {p.stem: chapter_exercises(p) for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))}


def render(exercises: dict) -> str:
    lines = ["(exercises)=", "# Exercises", "",
             "Every chapter ends its sections with exercises of three kinds: **derivations** (the answer is an "
             "expression, and its solution checks it with SymPy or numerically), **code** (write or change a "
             "function; a check accepts the reference solution and rejects the wrong answers a student would "
             "plausibly give) and **experiments** (run something and explain what you see; the solution gives "
             "the measured answer). Difficulty: ★ a few minutes, ★★ an hour, ★★★ an afternoon.", "",
             "Solutions are collapsed under each exercise; click to open one. In the notebooks they are ordinary "
             "cells after the exercise, and continuous integration runs every one of them, so every solution on "
             "this list is proven to run and to pass its check.", ""]
    for chapter, items in exercises.items():
        number = int(chapter[:2])
        lines += [f"## Chapter {number}", "", "| exercise | kind | difficulty |", "|---|---|---|"]
        lines += [f"| {{ref}}`{ex.label}` | {ex.kind.lower()} | {'★' * ex.stars} |" for ex in items]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that book/exercises.md is up to date")
    args = parser.parse_args(argv)
    text = render(all_exercises())
    if args.check:
        ok = PAGE.exists() and PAGE.read_text(encoding="utf-8") == text
        print("book/exercises.md is up to date" if ok else "book/exercises.md is out of date: run this script")
        return 0 if ok else 1
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
