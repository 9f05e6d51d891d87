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
from pathlib import Path

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

    def write(sleep, graders=GRADERS):
        (folder / "test_stand_in.py").write_text(textwrap.dedent(graders).replace("SLEEP", str(sleep)))
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


# Where the seconds go (the profile of `python -m coursekit.benchmark --profile`) ---------------------------

TIMED_GRADERS = """
import time
import pytest

@pytest.fixture(scope="session")
def data():
    time.sleep(SLEEP)
    return 1

@pytest.mark.grade_id("uses_data")
def test_uses_data(data):
    pass

@pytest.mark.grade_id("slow")
def test_slow(data):
    time.sleep(2 * SLEEP)
"""


def test_the_graders_report_where_their_seconds_went(stand_in_graders):
    from coursekit.class_results import report_from_dict, report_to_dict

    report = grading.grade_notebook(stand_in_graders(0.5, TIMED_GRADERS), "stand_in", timeout=60)
    timings = report.timings
    assert timings["session_fixtures_s"]["data"] >= 0.5
    assert timings["checks_s"]["uses_data"] >= 0.5  # the first check to need the fixture carries it
    assert 1.0 <= timings["checks_s"]["slow"] < timings["checks_s"]["uses_data"] + 1.5
    assert 0 < timings["startup_s"] and 0 <= timings["finish_s"]
    assert timings["wall_s"] >= timings["startup_s"] + sum(timings["checks_s"].values())
    assert report_from_dict(report_to_dict(report)).timings == timings  # stored with the result


def test_a_report_without_timings_gives_none_and_grades_the_same():
    assert grading.grader_timings({"checks": {}}, 0.0, 1.0) == {}
    assert grading.grader_timings({"timings": {"collected": "soon"}}, 0.0, 1.0) == {}


def test_the_quick_mode_re_run_reports_kernel_start_and_cells(tmp_path):
    from coursekit.class_worker import quick_mode_timings

    started = time.time()
    notebook, _, _ = re_run(["x = 1", "import time\ntime.sleep(1.0)", "y = 2"], tmp_path)
    ended = time.time()
    # A cell not re-run that still holds the times of the student's own run, weeks ago: not this re-run's.
    stale = {"iopub.status.busy": "2026-11-01T10:00:00.000000Z", "shell.execute_reply": "2026-11-01T10:05:00.000000Z"}
    notebook.cells.append(new_code_cell("z = 3", metadata={"execution": stale}))
    crafted = [{"execution": "not times"}, {"execution": {"iopub.status.busy": 3}}, []]  # what a file may hold
    notebook.cells += [nbformat.from_dict({"cell_type": "code", "source": "", "metadata": meta}) for meta in crafted]
    timings = quick_mode_timings(notebook, started, ended)
    assert timings["slowest_cells"][0][0] == 1 and timings["slowest_cells"][0][1] >= 1.0
    assert 3 not in [index for index, _ in timings["slowest_cells"]]
    assert 1.0 <= timings["cells_s"] < timings["wall_s"] and timings["kernel_start_s"] >= 0


def test_the_profile_table_lists_every_stage_biggest_first():
    from coursekit.benchmark import profile_rows, profile_table

    run = {
        "lab": "lab1_dense",
        "seconds": 40.0,
        "nbgrader_autograde_s": 55.0,
        "timings": {
            "graders": {
                "wall_s": 30.0,
                "startup_s": 6.0,
                "session_fixtures_s": {"fashion_mnist": 1.0, "saved": 9.0},
                "checks_s": {"test_softmax": 0.5, "test_saved_model": 10.0},
                "finish_s": 0.2,
            },
            "quick_mode": {"wall_s": 38.0, "kernel_start_s": 3.0, "cells_s": 34.0, "slowest_cells": [[40, 20.0]]},
        },
    }
    stages = dict(profile_rows(run))
    assert stages["  nbgrader's own steps (its wall less the class run's)"] == 15.0
    names = [stage for stage, _ in profile_rows(run)]
    assert names.index("  session fixture `saved` (inside the first check that needs it)") < names.index(
        "  session fixture `fashion_mnist` (inside the first check that needs it)"
    )
    assert names.index("  check `test_saved_model`") < names.index("  check `test_softmax`")
    assert "| lab1_dense |   cell 40 | 20.0 |" in profile_table([run])
    assert "| — |" in profile_table([{"lab": "lab2_cnn"}])  # a run that recorded nothing shows dashes, no error


def test_before_and_after_in_one_run_gives_each_tree_its_row_and_the_speed_up():
    from coursekit.benchmark import ratio_table, scored_as_expected, table
    from coursekit.submissions import SUBMISSIONS_BY_LAB

    reference, variant = SUBMISSIONS_BY_LAB["lab1_dense"][:2]
    right = {reference.student: sorted(reference.fails), variant.student: sorted(variant.fails)}

    def run(tree, seconds, checks_failed=right):
        return {
            "lab": "lab1_dense",
            "workers": 1,
            "tree": tree,
            "seconds_per_submission": {reference.student: seconds, variant.student: seconds + 10.0},
            "checks_failed": checks_failed,
            "load_before": [0.1],
            "load_after": [1.0],
            "wall_s": 3 * seconds,
            "submissions": 2,
            "machine_cpu_s": 4 * seconds,
            "throughput_per_min": 1.0,
        }

    runs = [run("baseline 72c155b", 50.0), run("this tree", 20.0)]
    assert "| lab1_dense | 1 | 2 | 55.0 | 25.0 | 2.20× | 150 s → 60 s |" in ratio_table(runs)
    rows = table(runs)
    assert "lab1_dense (baseline 72c155b), 1 worker" in rows and "lab1_dense (this tree), 1 worker" in rows
    assert rows.count("| yes |") == 2
    assert ratio_table([run("this tree", 20.0)]).count("\n") == 1  # no baseline measured: no ratio claimed

    # A baseline whose graders failed every submission quickly (say, it could not find the VGG16 weights):
    # fast, and wrong; no speed-up is claimed from it, and the table says so.
    broken = {reference.student: "not graded: no result", variant.student: ["test_saved_model"]}
    runs[0] = run("baseline 72c155b", 5.0, broken)
    assert scored_as_expected(runs[0]) is False and "**NO**" in table(runs)
    assert "none claimed: not scored as expected" in ratio_table(runs)
    runs[0] = run("baseline 72c155b", 5.0, None)  # a run that recorded no checks: unverified, no ratio
    assert scored_as_expected(runs[0]) is None and "none claimed" in ratio_table(runs)


def test_the_baseline_is_a_checkout_of_that_revision_and_goes_away_after(tmp_path):
    from coursekit.benchmark import checked_out, remove_checkout

    folder, commit = checked_out("HEAD", tmp_path)
    assert (folder / "course_config.py").is_file() and len(commit) == 40
    assert (folder.parent / "shared").resolve() == (course_config.ROOT.parent / "shared").resolve()
    remove_checkout(folder)
    assert not folder.exists()
    with pytest.raises(SystemExit, match="git history"):
        checked_out("no-such-revision", tmp_path)


def test_a_benchmark_class_shares_no_score_and_is_expected_to_pass(tmp_path):
    """--class-size: every copy has its own architecture and its own model file, so no grader score is reused."""
    import hashlib
    import zipfile

    from coursekit.benchmark import class_submissions, scored_as_expected
    from coursekit.model_files import read_model_file
    from coursekit.submissions import write_submission

    submissions = class_submissions(course_config.LAB1, 3)
    assert [submission.student for submission in submissions] == ["class_000", "class_001", "class_002"]
    builds, digests = [], set()
    for submission in submissions:
        notebook_path = write_submission(submission, tmp_path / submission.student, course_config.LAB1)
        notebook = nbformat.read(notebook_path, as_version=4)
        builds.append(next(cell.source for cell in notebook.cells if "def build_dense_model(" in cell.source))
        model_path = tmp_path / submission.student / course_config.LAB1.model_file
        read_model_file(model_path)  # the grader's reader accepts it
        digests.add(hashlib.sha256(model_path.read_bytes()).hexdigest())
        with zipfile.ZipFile(model_path) as archive:
            assert json.loads(archive.read("metadata.json"))["date_saved"] == f"class copy {submission.student[-1]}"
    assert [f"hidden_units=(1024, 512, {units})" in build for units, build in zip((128, 129, 130), builds)] == [
        True
    ] * 3
    assert len(digests) == 3

    run = {"lab": "lab1_dense", "checks_failed": {"class_000": [], "class_001": []}}
    assert scored_as_expected(run) is True
    run["checks_failed"]["class_001"] = ["test_retraining"]
    assert scored_as_expected(run) is False

    with pytest.raises(SystemExit, match="lab1_dense"):
        class_submissions(course_config.LAB2, 2)


def test_a_class_measured_against_a_baseline_is_the_same_class_in_both_trees(tmp_path, monkeypatch):
    from coursekit import benchmark

    commands = []

    def run_baseline(command, cwd, env, check):
        commands.append(command)
        Path(command[command.index("--out") + 1]).write_text(json.dumps({"runs": []}))

    monkeypatch.setattr(benchmark.subprocess, "run", run_baseline)
    benchmark.measure_checkout(tmp_path, "lab1_dense", 2, ["demo_reference"], False, tmp_path, class_size=20)
    benchmark.measure_checkout(tmp_path, "lab1_dense", 1, ["demo_reference"], False, tmp_path)
    with_class, without = commands
    assert with_class[with_class.index("--class-size") + 1] == "20" and "--students" not in with_class
    assert "--class-size" not in without and without[without.index("--students") + 1] == "demo_reference"
