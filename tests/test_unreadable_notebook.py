"""A notebook that cannot be read keeps the points of the checks that need no notebook, in class grading too.

``coursekit grade`` grades the saved model of a submission whose notebook is not UTF-8 (or not JSON, or too
large); class grading used to give it 0 on every check. Now the worker runs the graders whenever there is a
model file, and the recording gives the checks they passed their points (docs/threat_model.md, *Malformed
notebooks*). Cheap: a stand-in for the graders, the real worker and recording.
"""

import json

from coursekit import class_worker
from coursekit.class_worker import GradingJob, grade_submission
from coursekit.classgrading import grade_class
from coursekit.grading import CheckResult, GradingReport
from coursekit.notebooks import NotebookProblem, read_submission

from test_class_grading import LAB, rows, stub_course, stub_course_template  # noqa: F401
from test_dead_kernel import stored_result_grader

GRADE_IDS = ("test_scale_images", "test_softmax", "test_saved_model")
CALLED = []


def graders_without_the_notebook(notebook, assignment, timeout=None, course=None):
    """Stand-in for the hidden graders on an unreadable notebook: the saved model passes, the rest fail."""
    CALLED.append(notebook)
    try:
        read_submission(notebook)
        problem = ""
    except NotebookProblem as error:
        problem = str(error)
    return GradingReport({grade_id: CheckResult(grade_id, grade_id == "test_saved_model", problem)
                          for grade_id in GRADE_IDS})


NOT_UTF8 = b'{"cells": [], "metadata": {"title": "Fashi\xf3n"}, "nbformat": 4, "nbformat_minor": 5}'


def test_the_worker_grades_the_model_of_an_unreadable_notebook(monkeypatch):
    monkeypatch.setattr(class_worker, "grade_notebook", graders_without_the_notebook)
    CALLED.clear()
    with_model = grade_submission(GradingJob(LAB.assignment, "s", LAB.notebook,
                                             {LAB.notebook: NOT_UTF8, LAB.model_file: b"model"}))
    assert "is not UTF-8" in with_model.problem and with_model.executed_notebook is None
    assert with_model.report.checks["test_saved_model"].passed and len(CALLED) == 1
    without_model = grade_submission(GradingJob(LAB.assignment, "s", LAB.notebook, {LAB.notebook: NOT_UTF8}))
    assert "is not UTF-8" in without_model.problem and len(CALLED) == 1  # nothing to grade without either


def test_grade_class_records_the_saved_model_points_of_an_unreadable_notebook(stub_course, tmp_path,  # noqa: F811
                                                                             monkeypatch):
    student = "demo_reference"
    folder = stub_course / "submitted" / student / LAB.assignment
    (folder / LAB.notebook).write_bytes(NOT_UTF8)
    monkeypatch.setattr(class_worker, "grade_notebook", graders_without_the_notebook)
    files = {name: (folder / name).read_bytes() for name in (LAB.notebook, LAB.model_file)}
    result = grade_submission(GradingJob(LAB.assignment, student, LAB.notebook, files))
    (tmp_path / "result.json").write_text(json.dumps(result.to_dict()), encoding="utf-8")
    monkeypatch.setenv("COURSEKIT_TEST_RESULT", str(tmp_path / "result.json"))
    summary = grade_class(stub_course, workers=1, grade=stored_result_grader, progress=False)
    assert (LAB.assignment, student) in summary.recorded and "is not UTF-8" in summary.problems[LAB.assignment, student]
    scores = rows(stub_course)[student]["scores"]
    assert scores["test_saved_model"][0] == scores["test_saved_model"][1] > 0  # its points, not 0
    assert all(score == 0 for grade_id, (score, _) in scores.items() if grade_id != "test_saved_model")
    page = (stub_course / "feedback" / student / LAB.assignment / f"{LAB.notebook_id}.html").read_text()
    assert "is not UTF-8" in page and "test_saved_model" in page
    assert not rows(stub_course)["demo_syntax_error"]["scores"]["test_saved_model"][0] == 0  # the others as before
