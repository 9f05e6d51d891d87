"""Time is the student's problem, never a grading failure (docs/threat_model.md, *Time and interruption*).

A cell over its limit, a cell that ignores Ctrl-C (SIGINT), cells that add up past the limit per
submission, and graders that run out of time on a slow submission: each ends with the checks that
were graded keeping their result, the others failing with a message that names the limit, and the
notebook re-run stopped where it had to be, its kernel killed. Cheap stand-ins: a few tiny cells,
and a grader file of four checks instead of a lab's graders.
"""

import json
import os
import textwrap
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import course_config
from coursekit import grading
from coursekit.kernel_sandbox import SandboxedExecute

IGNORES_SIGINT = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(600)"


def re_run(cells, tmp_path, **settings):
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    executor = SandboxedExecute(**settings)
    start = time.monotonic()
    executor.preprocess(notebook, {"metadata": {"path": str(tmp_path)}})
    return notebook, executor, time.monotonic() - start


def errors(cell):
    return " ".join(output.get("evalue", "") for output in cell.outputs if output.output_type == "error")


def texts(cell):
    return "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")


def test_a_slow_cell_is_interrupted_with_the_limit_named_and_the_next_cells_run(tmp_path):
    notebook, executor, seconds = re_run(["import time\ntime.sleep(600)", "print('after')"], tmp_path, timeout=3)
    assert f"at most {course_config.NOTEBOOK_CELL_TIMEOUT_S} s" in errors(notebook.cells[0])
    assert "NBGRADER_EXECUTION" in errors(notebook.cells[0])
    assert texts(notebook.cells[1]) == "after\n" and not executor.stopped
    assert seconds < 60


def test_a_cell_that_ignores_sigint_stops_the_re_run_and_its_kernel_is_killed(tmp_path):
    cells = ["import os\nprint(os.getpid())", IGNORES_SIGINT, "print('after')"]
    notebook, executor, seconds = re_run(cells, tmp_path, timeout=3)
    message = errors(notebook.cells[1])
    assert "did not stop when it was interrupted" in message and "(3 s)" in message
    assert "hidden graders" in message and "kit" not in message  # the student's code, not the grading machine
    assert executor.stopped == message and notebook.cells[2].outputs == []  # not run: the kernel was busy
    assert seconds < 60  # not 600: the kernel was killed, not waited for
    assert executor.km is None or not executor.km.has_kernel


def test_honest_cells_within_the_limits_run_to_the_end(tmp_path):
    notebook, executor, _ = re_run(["import time\ntime.sleep(1)", "print('done')"], tmp_path, timeout=30)
    assert texts(notebook.cells[1]) == "done\n" and not executor.stopped
    assert not any(errors(cell) for cell in notebook.cells)


def test_cells_past_the_deadline_are_not_started(tmp_path):
    notebook, executor, _ = re_run(
        ["x = 1", "print('late')"],
        tmp_path,
        timeout=30,
        deadline=time.monotonic() - 1,
        deadline_note="over the limit per submission",
    )
    assert errors(notebook.cells[0]) == "over the limit per submission" and notebook.cells[1].outputs == []


# The hidden graders' own limit --------------------------------------------------------------------------

GRADERS = """
import time
import pytest

@pytest.mark.grade_id("quick_pass")
def test_quick_pass():
    pass

@pytest.mark.grade_id("quick_fail")
def test_quick_fail():
    pytest.fail("wrong values", pytrace=False)

@pytest.mark.grade_id("slow")
def test_slow_first_part():
    pass

@pytest.mark.grade_id("slow")
def test_slow_second_part():
    time.sleep(SLEEP)

@pytest.mark.grade_id("later")
def test_later():
    pass
"""


@pytest.fixture
def stand_in_graders(tmp_path, monkeypatch):
    """``write(sleep)``: a grader file of four checks, the third of which sleeps ``sleep`` seconds."""
    folder = tmp_path / "graders"
    folder.mkdir()
    (folder / "conftest.py").write_text("from coursekit.pytest_plugin import *\n")
    monkeypatch.setattr(course_config, "GRADER_TESTS_DIR", folder)
    notebook = tmp_path / "submission" / "lab.ipynb"
    notebook.parent.mkdir()
    nbformat.write(new_notebook(), notebook)

    def write(sleep):
        (folder / "test_stand_in.py").write_text(textwrap.dedent(GRADERS).replace("SLEEP", str(sleep)))
        return notebook

    return write


def test_graders_over_their_limit_keep_the_checks_they_finished(stand_in_graders):
    start = time.monotonic()
    report = grading.grade_notebook(stand_in_graders(600), "stand_in", timeout=25)
    assert time.monotonic() - start < 60
    assert report.result_for("quick_pass").passed
    assert not report.result_for("quick_fail").passed and "wrong values" in report.result_for("quick_fail").message
    for grade_id in ("slow", "later"):  # "slow" had passed one of its two tests: not enough
        result = report.result_for(grade_id)
        assert not result.passed and "time limit of 25 s" in result.message
        assert "Tell your instructor" not in result.message
    assert report.problem == ""


def test_graders_within_their_limit_grade_every_check(stand_in_graders):
    report = grading.grade_notebook(stand_in_graders(0), "stand_in", timeout=60)
    assert not report.unfinished and not report.problem
    assert {grade_id: result.passed for grade_id, result in report.checks.items()} == {
        "quick_pass": True,
        "quick_fail": False,
        "slow": True,
        "later": True,
    }


def test_a_report_written_midway_marks_unfinished_checks(tmp_path):
    """The plugin's report after each test: a check counts as passed only once all its tests ran."""
    report = tmp_path / "report.json"
    folder = tmp_path / "graders"
    folder.mkdir()
    (folder / "conftest.py").write_text("from coursekit.pytest_plugin import *\n")
    (folder / "test_x.py").write_text(
        textwrap.dedent(GRADERS).replace("SLEEP", "0")
        + textwrap.dedent("""
        @pytest.mark.grade_id("later")
        def test_later_reads_the_report():
            import json
            data = json.loads(open(REPORT).read())
            assert data["finished"] is False
            assert data["checks"]["slow"]["passed"] and data["checks"]["slow"]["complete"]
            assert data["checks"]["later"]["complete"] is False and not data["checks"]["later"]["passed"]
        """).replace("REPORT", repr(str(report)))
    )
    import subprocess
    import sys

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(folder),
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(folder),
            "-o",
            "addopts=",
            "--notebook",
            os.devnull,
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    data = json.loads(report.read_text())
    assert data["finished"] is True and data["checks"]["later"]["passed"], run.stdout[-2000:]
