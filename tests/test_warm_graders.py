"""The graders' process is forked from a warm one (coursekit.warm_graders): one Keras import per worker, and still
a fresh process, with its own hidden inputs, for every grading."""

import os
import signal
import textwrap

import nbformat
import pytest
from nbformat.v4 import new_notebook

import course_config
from coursekit import grading, warm_graders

GRADERS = """
import os

import pytest

from coursekit.checks import grading_seed, record_measurement


@pytest.mark.grade_id("passes")
def test_passes():
    record_measurement("pid", os.getpid())
    record_measurement("parent", os.getppid())
    record_measurement("seed", grading_seed() % 1_000_003)
    record_measurement("marker", float(os.environ.get("COURSEKIT_TEST_MARKER", "0")))


@pytest.mark.grade_id("fails")
def test_fails():
    pytest.fail("wrong values", pytrace=False)
"""

needs_fork = pytest.mark.skipif(not warm_graders._warm_graders_possible(), reason="no fork (Linux only)")


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A notebook and a grader file of two checks, one passing (it records its process and seed), one failing."""
    folder = tmp_path / "graders"
    folder.mkdir()
    (folder / "conftest.py").write_text("from coursekit.pytest_plugin import *\n")
    (folder / "test_stand_in.py").write_text(textwrap.dedent(GRADERS))
    monkeypatch.setattr(course_config, "GRADER_TESTS_DIR", folder)
    notebook = tmp_path / "submission" / "lab.ipynb"
    notebook.parent.mkdir()
    nbformat.write(new_notebook(), notebook)
    return notebook


def grade(notebook):
    report = grading.grade_notebook(notebook, "stand_in", timeout=120)
    assert not report.problem, report.problem
    return report


@needs_fork
def test_each_grading_is_a_fresh_process_forked_from_one_warm_process(stand_in):
    first, second = grade(stand_in), grade(stand_in)
    warm = warm_graders._WARM.pid()
    assert warm is not None
    assert first.measurements["parent"] == second.measurements["parent"] == warm
    assert first.measurements["pid"] != second.measurements["pid"]
    assert first.measurements["seed"] != second.measurements["seed"]  # hidden inputs drawn afresh each time


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "fresh"])
def test_warm_and_fresh_graders_grade_alike(stand_in, monkeypatch, warm):
    if warm and not warm_graders._warm_graders_possible():
        pytest.skip("no fork (Linux only)")
    monkeypatch.setattr(course_config, "WARM_GRADERS", warm)
    report = grade(stand_in)
    assert {grade_id: result.passed for grade_id, result in report.checks.items()} == {"passes": True, "fails": False}
    assert "wrong values" in report.result_for("fails").message
    assert (report.measurements["parent"] == warm_graders._WARM.pid()) is warm


@needs_fork
def test_a_changed_environment_starts_a_new_warm_process(stand_in, monkeypatch):
    before = grade(stand_in).measurements
    monkeypatch.setenv("COURSEKIT_TEST_MARKER", "7")
    after = grade(stand_in).measurements
    assert after["marker"] == 7 and before["marker"] == 0
    assert after["parent"] != before["parent"]  # Keras read its settings when it was imported


@needs_fork
def test_the_quick_mode_rerun_beside_the_graders_keeps_their_warm_process(stand_in, monkeypatch):
    before = grade(stand_in).measurements
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # what the re-run sets in the same worker meanwhile
    monkeypatch.setenv("JPY_PARENT_PID", "1")
    after = grade(stand_in).measurements
    assert after["parent"] == before["parent"]
    assert not any(key.startswith(("NBGRADER_", "JPY_")) for key in grading.graders_environment())


@needs_fork
def test_a_warm_process_that_died_is_replaced(stand_in):
    grade(stand_in)
    os.kill(warm_graders._WARM.pid(), signal.SIGKILL)
    report = grade(stand_in)
    assert report.result_for("passes").passed and not report.result_for("fails").passed
