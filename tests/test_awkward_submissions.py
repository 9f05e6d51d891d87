"""Awkward nbgrader metadata: the same grade through `coursekit grade`, `nbgrader autograde` and `grade-class`.

One Lab 1 submission carries every kind of junk an editor (or a student) can leave in nbgrader's way
(docs/threat_model.md, *Malformed nbgrader metadata*): ``metadata.nbgrader`` a string, a list and a
number, an unmatched ``### BEGIN HIDDEN TESTS`` in the student's code and an ``END`` marker in
another cell, a duplicated grade id, a source given as a list of lines. Its softmax is the naive
one, so it must lose exactly ``test_softmax``. The honest counterpart is ``demo_reference``'s
notebook, graded in the other tests (tests/test_nbgrader_flow.py, tests/test_class_grading.py).

Stand-ins keep it cheap: the cleaning step alone on a notebook, and class grading's recording with
a stand-in worker; the three real gradings of the one awkward submission cost about 300 CPU-seconds.
"""

import copy
import json
import shutil

import nbformat
import pytest

import course_config
from coursekit import course
from coursekit.classgrading import grade_class
from coursekit.demo import lost_points
from coursekit.grading import grade_notebook
from coursekit.nbgrader_preprocessors import CleanSubmission
from coursekit.submissions import DemoSubmission, replace_function, write_submission

from conftest import released_course
from lab1_class import NAIVE_SOFTMAX, cell_of

LAB = course_config.LAB1
STUDENT = "t_awkward"


def awkward_edit(notebook):
    replace_function(notebook, "softmax", NAIVE_SOFTMAX)
    cells = notebook["cells"]
    solutions = [
        cell for cell in cells if cell["metadata"].get("nbgrader", {}).get("solution") and cell["cell_type"] == "code"
    ]
    markdown = next(cell for cell in cells if cell["cell_type"] == "markdown")
    scale_test, activations_test = cell_of(notebook, "test_scale_images"), cell_of(notebook, "test_activations")
    solutions[0]["metadata"]["nbgrader"] = "solution"  # a string
    solutions[1]["source"] += "\n# ### END HIDDEN TESTS"  # an END marker in student code
    markdown["metadata"]["nbgrader"] = ["grade", 5]  # a list
    scale_test["metadata"]["nbgrader"] = 3  # a number, on a released test cell
    copied = copy.deepcopy(activations_test)  # a duplicated grade id
    copied.update(source="pass", outputs=[], id="copied-activations")
    cells.append(copied)
    cells.append(nbformat.v4.new_code_cell("# ### BEGIN HIDDEN TESTS (no END)\nx = 1"))
    cells.append({**nbformat.v4.new_code_cell(""), "source": ["y = 2\n", "z = 3\n"]})  # a list of lines


def test_the_cleaning_step_leaves_nothing_for_nbgrader_to_trip_on(tmp_path):
    path = write_submission(DemoSubmission(STUDENT, "", edit=awkward_edit), tmp_path, LAB)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("a = 1"))
    notebook.cells[-1]["source"] = 42  # not text at all
    notebook.cells[-2]["metadata"]["nbgrader"] = {"grade_id": ["not", "a", "string"], "grade": True}
    cleaned, _ = CleanSubmission().preprocess(notebook, {})
    for cell in cleaned.cells:
        assert isinstance(cell.source, str) and "HIDDEN TESTS" not in cell.source
        assert isinstance(cell.metadata.get("nbgrader", {}), dict)
        assert isinstance(cell.metadata.get("nbgrader", {}).get("grade_id", ""), str)
    assert cleaned.cells[-1].source == ""
    honest = nbformat.read(write_submission(DemoSubmission("honest", ""), tmp_path / "honest", LAB), as_version=4)
    before = copy.deepcopy(honest)
    CleanSubmission().preprocess(honest, {})
    changed = [b.source for a, b in zip(honest.cells, before.cells) if a != b]
    assert all("HIDDEN TESTS" in source for source in changed)  # only the released test cells' markers


# The three ways of grading -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_gradings(tmp_path_factory):
    """(coursekit grade's report, nbgrader autograde's rows, grade-class's rows and summary)."""
    root = released_course(tmp_path_factory.mktemp("awkward"))
    folder = root / "submitted" / STUDENT / LAB.assignment
    notebook = write_submission(DemoSubmission(STUDENT, "", edit=awkward_edit), folder, LAB)
    (folder / "timestamp.txt").write_text("2026-11-23 12:00:00.000000 UTC\n")
    class_root = shutil.copytree(root, tmp_path_factory.mktemp("awkward-class") / "course")

    report = grade_notebook(notebook, LAB.assignment)
    course.nbgrader(root, "autograde", LAB.assignment)
    course.generate_feedback(root, LAB.assignment)
    summary = grade_class(class_root, workers=1, progress=False)
    rows = {
        name: {row["student"]: row for row in course.check_table(path, LAB.assignment, LAB.notebook_id)}
        for name, path in (("nbgrader", root), ("class", class_root))
    }
    return report, rows, summary, (root, class_root)


def test_the_three_ways_give_the_hidden_graders_grade(three_gradings):
    report, rows, summary, _ = three_gradings
    assert not report.problem and {g for g, r in report.checks.items() if not r.passed} == {"test_softmax"}
    assert "gave inf or nan" in report.checks["test_softmax"].message
    assert not summary.failures and not summary.problems
    for name in ("nbgrader", "class"):
        row = rows[name][STUDENT]
        assert lost_points(row) == {"test_softmax"}, name
        assert "gave inf or nan" in row["reasons"]["test_softmax"], name


def test_feedback_is_written_and_shows_no_hidden_tests(three_gradings):
    *_, roots = three_gradings
    for root in roots:
        page = (root / "feedback" / STUDENT / LAB.assignment / f"{LAB.notebook_id}.html").read_text()
        assert "softmax" in page and "BEGIN HIDDEN TESTS" not in page
        graded = json.loads((root / "autograded" / STUDENT / LAB.assignment / LAB.notebook).read_text())
        assert all(isinstance(c["metadata"].get("nbgrader", {}), dict) for c in graded["cells"])
