"""A re-run kernel that dies is a message in the notebook, never a grade.

docs/threat_model.md, *Time and interruption*.

The kernel nbgrader re-runs a notebook in decides no grade; when the student's code kills it (``os._exit``,
a crash, memory), the re-run stops at that cell with a message, and the grade is the hidden graders'
report, in ``nbgrader autograde`` (SandboxedExecute) and in class grading alike. What the re-run printed is
stored and sent back bounded (``NOTEBOOK_OUTPUT_MAX_CHARS``), as in autograded/ and feedback/. Cheap: tiny
notebooks, and the Lab 1 notebook whose first cell kills the kernel, with a stand-in for the graders.
"""

import json
import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell

import course_config
from coursekit import class_worker
from coursekit.class_worker import GradingJob, grade_submission
from coursekit.class_results import SubmissionResult
from coursekit.classgrading import grade_class
from coursekit.demo import lost_points
from coursekit.grading import CheckResult, GradingReport

from test_class_grading import LAB, passing_grader, rows, stub_course, stub_course_template  # noqa: F401
from test_time_limits import errors, re_run, texts

KILLS_THE_KERNEL = {
    "os._exit": "import os\nos._exit(3)",
    "segfault": "import ctypes\nctypes.string_at(0)",
}
SURVIVES = "try:\n    bytearray(2 * 2**20 * {mb})\nexcept MemoryError:\n    print('too big')".format(
    mb=course_config.NOTEBOOK_KERNEL_MEMORY_MB
)  # past the kernel's memory limit, and caught


@pytest.mark.parametrize("cell", KILLS_THE_KERNEL.values(), ids=KILLS_THE_KERNEL.keys())
def test_a_kernel_that_dies_stops_the_re_run_with_a_message(tmp_path, cell):
    notebook, executor, _ = re_run(["print('before')", cell, "print('after')"], tmp_path, timeout=30)
    message = errors(notebook.cells[1])
    assert "kernel died while this cell ran" in message and f"{course_config.NOTEBOOK_KERNEL_MEMORY_MB} MB" in message
    assert "hidden graders" in message and "kit" not in message  # the student's code, not the grading machine
    assert texts(notebook.cells[0]) == "before\n" and notebook.cells[2].outputs == []
    assert executor.stopped == message


def test_a_kernel_that_survives_its_memory_limit_runs_to_the_end(tmp_path):
    notebook, executor, _ = re_run([SURVIVES, "print('after')"], tmp_path, timeout=30)
    assert texts(notebook.cells[0]) == "too big\n" and texts(notebook.cells[1]) == "after\n"
    assert not executor.stopped


def all_passed(notebook, assignment, timeout=None, course=None):
    """Stand-in for the hidden graders: every check of Lab 1 passes."""
    grade_ids = [
        cell.metadata["nbgrader"]["grade_id"]
        for cell in nbformat.read(notebook, as_version=4).cells
        if cell.metadata.get("nbgrader", {}).get("grade") and not cell.metadata["nbgrader"].get("solution")
    ]
    return GradingReport({grade_id: CheckResult(grade_id, True, "") for grade_id in grade_ids})


def stored_result_grader(job):
    """Stand-in worker: the result the test computed with the real worker code (COURSEKIT_TEST_RESULT)."""
    with open(os.environ["COURSEKIT_TEST_RESULT"], encoding="utf-8") as file:
        result = SubmissionResult.from_dict(json.load(file))
    return result if job.student == result.student else passing_grader(job)


def test_class_grading_keeps_the_graders_grade_when_the_kernel_dies(stub_course, tmp_path, monkeypatch):  # noqa: F811
    student = "demo_reference"
    path = stub_course / "submitted" / student / LAB.assignment / LAB.notebook
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, new_code_cell(KILLS_THE_KERNEL["os._exit"]))
    nbformat.write(notebook, path)
    monkeypatch.setattr(class_worker, "grade_notebook", all_passed)
    job = GradingJob(LAB.assignment, student, LAB.notebook, {LAB.notebook: path.read_bytes()})
    result = grade_submission(job)  # the real worker: the graders (stand-in) and the re-run, side by side
    assert result.problem == "" and all(check.passed for check in result.report.checks.values())
    assert "kernel died" in json.dumps(result.executed_notebook["cells"][0]["outputs"])

    (tmp_path / "result.json").write_text(json.dumps(result.to_dict()), encoding="utf-8")
    monkeypatch.setenv("COURSEKIT_TEST_RESULT", str(tmp_path / "result.json"))
    summary = grade_class(stub_course, workers=1, grade=stored_result_grader, progress=False)
    assert not summary.failures and not summary.problems and (LAB.assignment, student) in summary.recorded
    assert not lost_points(rows(stub_course)[student])  # not 0 on every check: the graders' report stands
    page = (stub_course / "feedback" / student / LAB.assignment / f"{LAB.notebook_id}.html").read_text()
    assert "kernel died while this cell ran" in page


def test_the_worker_stores_the_re_run_with_its_outputs_bounded(monkeypatch):
    """A notebook that prints far more than NOTEBOOK_OUTPUT_MAX_CHARS is stored (and sent back) cut, with a note."""
    notebook = nbformat.v4.new_notebook(cells=[new_code_cell("print('x' * 1_000_000)"), new_code_cell("print('ok')")])
    monkeypatch.setattr(class_worker, "grade_notebook", lambda *args, **kwargs: GradingReport({}))
    job = GradingJob(LAB.assignment, "s", LAB.notebook, {LAB.notebook: nbformat.writes(notebook).encode()})
    result = grade_submission(job)
    long_output, short_output = (cell["outputs"][0]["text"] for cell in result.executed_notebook["cells"])
    assert len(long_output) < course_config.NOTEBOOK_OUTPUT_MAX_CHARS + 500
    assert "output cut by the grader" in long_output
    assert short_output == "ok\n" and len(json.dumps(result.to_dict())) < 2 * course_config.NOTEBOOK_OUTPUT_MAX_CHARS


def merge_code_cells(notebook):
    """All code but the released test cells in one cell, as a student who tidied the notebook would have it."""
    tests = [
        cell
        for cell in notebook.cells
        if cell.metadata.get("nbgrader", {}).get("grade") and not cell.metadata["nbgrader"].get("solution")
    ]
    code = [cell for cell in notebook.cells if cell.cell_type == "code" and cell not in tests]
    merged = new_code_cell("\n\n".join(cell.source for cell in code))
    notebook.cells = [merged] + [cell for cell in notebook.cells if cell.cell_type != "code" or cell in tests]


@pytest.mark.parametrize("cell_limit", [1, 3])
def test_merged_cells_on_a_slow_machine_are_recorded_with_the_graders_grade(
    stub_course,
    cell_limit,
    tmp_path,  # noqa: F811
    monkeypatch,
):
    """The one big cell of a merged notebook passes the cell limit when the machine is slow (here: the limit is
    cut to seconds): it is interrupted with the limit named, the test cells after it still run, and the grade
    recorded is the graders' report, whatever the machine's load did to the re-run."""
    student = "demo_reference"
    path = stub_course / "submitted" / student / LAB.assignment / LAB.notebook
    notebook = nbformat.read(path, as_version=4)
    merge_code_cells(notebook)
    nbformat.write(notebook, path)
    monkeypatch.setattr(class_worker, "grade_notebook", all_passed)
    monkeypatch.setattr(course_config, "NOTEBOOK_CELL_TIMEOUT_S", cell_limit)
    job = GradingJob(LAB.assignment, student, LAB.notebook, {LAB.notebook: path.read_bytes()})
    result = grade_submission(job)
    assert result.problem == "" and all(check.passed for check in result.report.checks.values())
    stopped = json.dumps(result.executed_notebook["cells"][0]["outputs"])  # interrupted, or stopped if in an import
    assert "CellTimeoutError" in stopped or "did not stop when it was interrupted" in stopped

    (tmp_path / "result.json").write_text(json.dumps(result.to_dict()), encoding="utf-8")
    monkeypatch.setenv("COURSEKIT_TEST_RESULT", str(tmp_path / "result.json"))
    summary = grade_class(stub_course, workers=1, grade=stored_result_grader, progress=False)
    assert not summary.failures and not summary.problems and (LAB.assignment, student) in summary.recorded
    assert not lost_points(rows(stub_course)[student])
