"""The task labels that `python -m coursekit.grading_table` writes from nbgrader's metadata."""

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from coursekit import grading_table


def graded(cell, grade_id, points, **flags):
    cell.metadata["nbgrader"] = {"grade_id": grade_id, "points": points, "locked": True, "schema_version": 3, **flags}
    return cell


def toy_notebook():
    return new_notebook(
        cells=[
            new_markdown_cell("# Toy lab"),
            new_markdown_cell("## 1. Start\n\nSome words. **Exercise.** inline, not a label."),
            new_markdown_cell("**Exercise.** Implement `f`."),
            graded(new_code_cell("# Autograded (2 points): f\nassert f"), "test_f", 2, grade=True),
            new_markdown_cell("**Exercise.** Implement `helper` (used by `g`)."),
            new_markdown_cell("**Exercise (no code to write).** The grader trains `g`."),
            graded(new_code_cell("# Autograded (1 point): g\nassert g"), "test_g", 1, grade=True),
            graded(new_markdown_cell("**Question 1.** Why?\n\n=== BEGIN MARK SCHEME ==="), "task_why", 3, task=True),
        ]
    )


def test_labels_state_the_metadata_points_and_are_stable():
    notebook = grading_table.update(toy_notebook())
    assert grading_table.is_table_cell(notebook.cells[1])  # the table goes after the title
    sources = [cell.source for cell in notebook.cells[:1] + notebook.cells[2:]]
    assert sources[2] == "**Exercise 1 (2 points, autograded).** Implement `f`."
    assert sources[4].startswith("**Exercise 2 (no points of its own")
    assert sources[5].startswith("**Exercise 3 (1 point, autograded; no code to write).**")
    assert sources[-1].startswith("**Question 1 (3 points, graded by hand).** Why?")
    assert "Some words. **Exercise.** inline" in sources[1]  # only a paragraph's start is a label
    once = nbformat.writes(notebook)
    assert nbformat.writes(grading_table.update(notebook)) == once  # running it again changes nothing


def test_changed_points_change_the_labels():
    notebook = grading_table.update(toy_notebook())
    notebook.cells[4].metadata["nbgrader"]["points"] = 4  # test_f, after the title and the table
    notebook.cells[-1].metadata["nbgrader"]["points"] = 1
    grading_table.update(notebook)
    assert notebook.cells[3].source.startswith("**Exercise 1 (4 points, autograded).**")
    assert notebook.cells[-1].source.startswith("**Question 1 (1 point, graded by hand).**")
