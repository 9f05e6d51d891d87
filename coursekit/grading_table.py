"""The grading table at the top of each notebook, made from the notebook's own nbgrader metadata.

Every graded cell (``nbgrader.grade`` true: an autograder test cell, or a hand-graded task cell)
becomes one row: its section, grade id, kind, points and what it is about. Autograded cells are
called *Exercise*, hand-graded ones *Question*, in the table and in the notebooks' text.

    python -m coursekit.grading_table          # rewrite the table cell of every source notebook
    python -m coursekit release                # then regenerate release/ from source/

``tests/test_notebook_text.py`` checks the released tables against the released cells' metadata,
so the points a table states cannot drift from the points nbgrader gives.
"""

import re
import sys

import nbformat

import course_config

MARKER = "<!-- grading table: made by `python -m coursekit.grading_table` from the cells' nbgrader metadata -->"
HEADING = "## How this lab is graded"
EXERCISE = "Exercise"  # autograded: a hidden check gives the points
QUESTION = "Question"  # graded by hand against a mark scheme
KIND_TEXT = {EXERCISE: "Exercise (autograded)", QUESTION: "Question (graded by hand)"}
AUTOGRADED_COMMENT = re.compile(r"^# Autograded \((\d+) points?\): (.+)$")
QUESTION_LABEL = re.compile(r"^\*\*Question(?: (\d+))?\.\*\*\s*")


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


def is_table_cell(cell):
    return cell.cell_type == "markdown" and MARKER in cell.source


def update(notebook):
    """Put the table into the notebook: replace its table cell, or insert one after the first cell."""
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
        notebook = nbformat.read(path, as_version=4)
        before = nbformat.writes(notebook)
        update(notebook)
        if nbformat.writes(notebook) != before:
            nbformat.write(notebook, path)
            print(f"{path}: grading table updated")
        else:
            print(f"{path}: grading table up to date")


if __name__ == "__main__":
    main(sys.argv[1:])
