"""A notebook that cannot be read: recorded, with what the graders decided and the reason, in every path.

``coursekit grade`` grades a submission whose notebook is not UTF-8 (or not JSON, or too large): every check
that needs the notebook fails with the reason. Class grading used to give 0 on every check whatever the graders
decided, and ``nbgrader autograde`` recorded nothing at all. Now the worker runs the graders whenever there is a
model file, nbgrader grades a stand-in notebook, and both recordings give the checks the graders passed their
points (docs/threat_model.md, *Malformed notebooks*). The real graders pass none of them (the saved model must be
a network the notebook's build function builds; tests/test_untrusted.py grades one such submission for real), so
the stand-in graders here pass ``test_saved_model`` to show that a passed check keeps its points. Cheap: stand-ins
for the graders (and the re-run), the real worker, recording and nbgrader.
"""

import json

from nbgrader.api import Gradebook

import course_config
from coursekit import class_worker, course
from coursekit.class_worker import GradingJob, grade_submission
from coursekit.classgrading import grade_class
from coursekit.grading import CheckResult, GradingReport
from coursekit.notebooks import NotebookProblem, read_submission

from test_class_grading import LAB, rows, stub_course, stub_course_template  # noqa: F401
from test_dead_kernel import stored_result_grader
from test_submission_files import write_stand_in_config

GRADE_IDS = ("test_scale_images", "test_softmax", "test_saved_model")
CALLED = []


def graders_without_the_notebook(notebook, assignment, timeout=None, course=None):
    """Stand-in graders that pass a check without the notebook (test_saved_model) and fail the rest."""
    CALLED.append(notebook)
    try:
        read_submission(notebook)
        problem = ""
    except NotebookProblem as error:
        problem = str(error)
    return GradingReport(
        {grade_id: CheckResult(grade_id, grade_id == "test_saved_model", problem) for grade_id in GRADE_IDS}
    )


NOT_UTF8 = b'{"cells": [], "metadata": {"title": "Fashi\xf3n"}, "nbformat": 4, "nbformat_minor": 5}'


def test_the_worker_grades_the_model_of_an_unreadable_notebook(monkeypatch):
    monkeypatch.setattr(class_worker, "grade_notebook", graders_without_the_notebook)
    CALLED.clear()
    with_model = grade_submission(
        GradingJob(LAB.assignment, "s", LAB.notebook, {LAB.notebook: NOT_UTF8, LAB.model_file: b"model"})
    )
    assert "is not UTF-8" in with_model.problem and with_model.executed_notebook is None
    assert with_model.report.checks["test_saved_model"].passed and len(CALLED) == 1
    without_model = grade_submission(GradingJob(LAB.assignment, "s", LAB.notebook, {LAB.notebook: NOT_UTF8}))
    assert "is not UTF-8" in without_model.problem and len(CALLED) == 1  # nothing to grade without either


def test_grade_class_records_the_saved_model_points_of_an_unreadable_notebook(stub_course, tmp_path, monkeypatch):  # noqa: F811
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


# `nbgrader autograde` itself: nbgrader cannot read these files, and still records a grade -------------------

GRADERS_WITHOUT_THE_NOTEBOOK = '''
class StandInGraders(HiddenGraders):
    """Graders that pass one check without the notebook (test_saved_model) and fail the rest with the reason."""
    def report(self, nb, resources):
        from coursekit.notebooks import NotebookProblem, read_submission
        try:
            read_submission(self.submitted_notebook(resources))
            problem = ""
        except NotebookProblem as error:
            problem = str(error)
        return GradingReport({grade_id: CheckResult(grade_id, grade_id == "test_saved_model", problem)
                              for grade_id in GRADE_IDS})
'''

UNREADABLE = {  # student: (how the file is made, what the feedback says)
    "t_not_utf8": (lambda path: path.write_bytes(NOT_UTF8), "is not UTF-8"),
    "t_cut_short": (lambda path: path.write_bytes(b'{"cells": [{"cell_type": "code", "sou'), "is not valid JSON"),
    "t_not_a_notebook": (lambda path: path.write_text("[1, 2, 3]"), "is JSON but not a Jupyter notebook"),
    "t_too_large": (lambda path: sparse_file(path, (course_config.SUBMISSION_MAX_MB + 1) * 2**20), "MB; the grader"),
    "t_link": (lambda path: path.symlink_to(SECRET_FILE), "is a link to another file"),
}
SECRET_FILE = course_config.ROOT / "source" / LAB.assignment / LAB.notebook  # the instructor's solution


def sparse_file(path, size):
    with open(path, "wb") as handle:
        handle.truncate(size)


def test_nbgrader_autograde_records_the_saved_model_points_of_notebooks_it_cannot_read(stub_course):  # noqa: F811

    write_stand_in_config(
        stub_course, GRADERS_WITHOUT_THE_NOTEBOOK.replace("GRADE_IDS", repr(released_test_ids(stub_course)))
    )
    honest = stub_course / "submitted" / "demo_reference" / LAB.assignment
    for student, (make, _) in UNREADABLE.items():
        folder = stub_course / "submitted" / student / LAB.assignment
        folder.mkdir(parents=True)
        (folder / LAB.model_file).write_bytes((honest / LAB.model_file).read_bytes())
        make(folder / LAB.notebook)
        course.autograde(stub_course, LAB.assignment, student)
    course.generate_feedback(stub_course, LAB.assignment)

    table = rows(stub_course)
    with Gradebook(f"sqlite:///{stub_course / 'gradebook.db'}") as gradebook:
        for student, (_, message) in UNREADABLE.items():
            scores = table[student]["scores"]  # recorded: the student has a row
            assert scores["test_saved_model"][0] == scores["test_saved_model"][1] > 0, student
            assert all(score == 0 for grade_id, (score, _) in scores.items() if grade_id != "test_saved_model")
            submission = gradebook.find_submission(LAB.assignment, student)
            answers = [
                grade for notebook in submission.notebooks for grade in notebook.grades if grade.cell.type != "TaskCell"
            ]
            assert answers and all(grade.score == 0 or grade.name == "test_saved_model" for grade in answers)
            assert not any(grade.needs_manual_grade for grade in answers), student  # answers as released: 0
            assert submission.score == scores["test_saved_model"][0], student
            page = (stub_course / "feedback" / student / LAB.assignment / f"{LAB.notebook_id}.html").read_text()
            assert "could not be read" in page and message in page, student
            assert (stub_course / "autograded" / student / LAB.assignment / LAB.model_file).exists(), student


def released_test_ids(root):
    notebook = json.loads((root / "release" / LAB.assignment / LAB.notebook).read_text())
    return [
        cell["metadata"]["nbgrader"]["grade_id"]
        for cell in notebook["cells"]
        if cell["metadata"].get("nbgrader", {}).get("grade")
        and not cell["metadata"]["nbgrader"].get("solution")
        and cell["cell_type"] == "code"
    ]
