"""The grading table at the top of each notebook, made from the notebook's own nbgrader metadata.

Every graded cell (``nbgrader.grade`` true: an autograder test cell, or a hand-graded task cell)
becomes one row: its section, grade id, kind, points and what it is about. Autograded cells are
called *Exercise*, hand-graded ones *Question*, in the table and in the notebooks' text.

The same metadata labels the exercises and questions where the student works: each exercise's
text starts with "**Exercise N (P points, autograded).**" (the points of the self-check cell that
follows it) and each question with "**Question (P points, graded by hand).**", so the points a
student reads next to a task are the points nbgrader gives.

    python -m coursekit.grading_table          # rewrite the table cell of every source notebook
    python -m coursekit release                # then regenerate release/ from source/

``tests/test_notebook_text.py`` checks the released tables against the released cells' metadata,
so the points a table states cannot drift from the points nbgrader gives.
"""

import re
import sys

import nbformat

import course_config
from coursekit.notebooks import rewrite_notebook

MARKER = "<!-- grading table: made by `python -m coursekit.grading_table` from the cells' nbgrader metadata -->"
HEADING = "## How this lab is graded"
EXERCISE = "Exercise"  # autograded: a hidden check gives the points
QUESTION = "Question"  # graded by hand against a mark scheme
KIND_TEXT = {EXERCISE: "Exercise (autograded)", QUESTION: "Question (graded by hand)"}
AUTOGRADED_COMMENT = re.compile(r"^# Autograded \((\d+) points?\): (.+)$")
QUESTION_LABEL = re.compile(r"^\*\*Question(?: (\d+))?(?: \(([^)]*)\))?\.\*\*\s*")
EXERCISE_LABEL = re.compile(r"(?m)^\*\*Exercise(?: \d+)?(?: \(([^)]*)\))?\.\*\*")
# Parts of a label's parenthesis that update() writes; anything else there (e.g. "no code to write") is kept.
GENERATED_PART = re.compile(r"^(?:[\d.]+ points?, (?:autograded|graded by hand)|no points of its own.*)$")


def graded_cells(notebook):
    """(cell, nbgrader metadata) of every cell that carries points, in notebook order."""
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if is_graded(meta):
            yield cell, meta


def is_graded(meta):
    """Autograder test cells have ``grade``; hand-graded task cells have ``task`` (nbgrader's metadata)."""
    return bool(meta.get("grade") or meta.get("task"))


def kind(cell):
    return EXERCISE if cell.cell_type == "code" else QUESTION


def _section(heading_line):
    return heading_line.lstrip("#").strip()


def _about(cell):
    """A short description of what a graded cell is about, from its own text."""
    if cell.cell_type == "code":
        match = AUTOGRADED_COMMENT.match(cell.source.splitlines()[0])
        return match.group(2).strip() if match else ""
    text = " ".join(cell.source.split("=== BEGIN MARK SCHEME ===")[0].split())
    text = QUESTION_LABEL.sub("", text)
    return re.split(r"(?<=[?.])\s", text, maxsplit=1)[0]


def rows(notebook):
    """One dict per graded cell: section, grade_id, kind, points, about."""
    section = ""
    result = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if re.match(r"^## \d+\.", line):
                    section = _section(line)
        meta = cell.metadata.get("nbgrader", {})
        if is_graded(meta):
            result.append(
                {
                    "section": section,
                    "grade_id": meta["grade_id"],
                    "kind": kind(cell),
                    "points": meta.get("points", 0),
                    "about": _about(cell),
                }
            )
    return result


def _points(value):
    value = float(value)
    text = f"{value:g}"
    return f"{text} point" if value == 1 else f"{text} points"


def table_markdown(notebook):
    """The whole table cell's text."""
    table = rows(notebook)
    auto = sum(row["points"] for row in table if row["kind"] == EXERCISE)
    hand = sum(row["points"] for row in table if row["kind"] == QUESTION)
    lines = [
        HEADING,
        "",
        MARKER,
        "",
        f"**{EXERCISE}s** are autograded: your points come from hidden checks that run outside this "
        "notebook (they call your functions on new inputs, rebuild and briefly retrain your network, "
        "and evaluate the model file you hand in). The cell under each exercise holds quick self-checks "
        "for you; passing them does not yet mean full points. "
        f"**{QUESTION}s** are graded by hand against your own outputs: write your answer in the cell "
        "*Your answer* under the question, and quote the numbers your run printed.",
        "",
        "| Section | Grade id | Kind | Points | About |",
        "|---|---|---|---:|---|",
    ]
    for row in table:
        about = row["about"].replace("|", "\\|")
        lines.append(
            f"| {row['section']} | `{row['grade_id']}` | {KIND_TEXT[row['kind']]} | {row['points']:g} | {about} |"
        )
    lines += [
        "",
        f"**Totals:** exercises (autograded) {_points(auto)}, questions (graded by hand) {_points(hand)}, "
        f"**{_points(auto + hand)}** in all.",
    ]
    return "\n".join(lines)


NO_POINTS = "no points of its own: the graded exercises after it use it"


def _label(word, number, points, how, parenthesis):
    kept = [part.strip() for part in (parenthesis or "").split(";") if part.strip()]
    kept = [part for part in kept if not GENERATED_PART.match(part)]
    stated = f"{_points(points)}, {how}" if points is not None else NO_POINTS
    number = f" {number}" if number else ""
    return f"**{word}{number} ({'; '.join([stated, *kept])}).**"


def _relabel(cell, match, label):
    cell.source = cell.source[: match.start()] + label + cell.source[match.end() :]


def exercise_points(notebook):
    """{index of an exercise's markdown cell: points of the autograded cell it introduces, or None}.

    An exercise's text is the nearest "**Exercise" paragraph before an autograded cell; a text
    followed by another exercise's text before any autograded cell has no points of its own.
    """
    owners, open_exercise = {}, None
    for index, cell in enumerate(notebook.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown" and EXERCISE_LABEL.search(cell.source):
            open_exercise = index
            owners[index] = None
        elif cell.cell_type == "code" and meta.get("grade") and open_exercise is not None:
            owners[open_exercise] = meta.get("points", 0)
            open_exercise = None
    return owners


def label_tasks(notebook):
    """Write each exercise's number and points, and each question's points, into their texts."""
    for number, (index, points) in enumerate(exercise_points(notebook).items(), start=1):
        cell = notebook.cells[index]
        match = EXERCISE_LABEL.search(cell.source)
        _relabel(cell, match, _label("Exercise", number, points, "autograded", match.group(1)))
    for cell, meta in graded_cells(notebook):
        match = QUESTION_LABEL.match(cell.source) if cell.cell_type == "markdown" else None
        if match:
            label = _label("Question", match.group(1), meta.get("points", 0), "graded by hand", match.group(2))
            _relabel(cell, match, label + " ")
    return notebook


def is_table_cell(cell):
    return cell.cell_type == "markdown" and MARKER in cell.source


def update(notebook):
    """Label the tasks and put the table into the notebook: replace its table cell, or insert one after the first."""
    label_tasks(notebook)
    text = table_markdown(notebook)
    for cell in notebook.cells:
        if is_table_cell(cell):
            cell.source = text
            return notebook
    notebook.cells.insert(1, nbformat.v4.new_markdown_cell(text))
    return notebook


def main(argv=None):
    labs = [course_config.lab_settings(name) for name in (argv or [])] or list(course_config.LABS)
    for lab in labs:
        path = course_config.SOURCE_DIR / lab.assignment / lab.notebook
        changed = rewrite_notebook(path, update)
        print(f"{path}: grading table and task labels {'updated' if changed else 'up to date'}")


if __name__ == "__main__":
    main(sys.argv[1:])
