"""Grading a whole class: parallel workers or Dask, resume after an interruption, one gradebook writer.

One submission is graded for real, on a Dask ``LocalCluster`` (about 100 CPU-seconds): the
resume logic and the local worker pool are tested with cheap stand-ins for the worker's
grading function, which still go through the worker processes and nbgrader.
"""

import csv
import json
import shutil
from types import SimpleNamespace

import pytest

import course_config
from coursekit import course
from coursekit.class_results import ResultStore, SubmissionResult, find_submissions
from coursekit.class_worker import GradingJob, grade_submission
from coursekit.classgrading import grade_class
from coursekit.demo import lost_points, submit_demo_students
from coursekit.grading import CheckResult, GradingReport
from coursekit.submissions import LAB1_SUBMISSIONS

from conftest import released_course

LAB = course_config.LAB1
REAL_STUDENT = "demo_syntax_error"  # loses exactly test_softmax, with a SyntaxError message
BROKEN = "demo_broken_json"


# Cheap stand-ins for coursekit.class_worker.grade_submission (module level: the worker processes import them).


def passing_grader(job):
    """Every check passes; the "executed" notebook is the submitted one."""
    notebook = json.loads(job.files[job.notebook])
    grade_ids = [
        cell["metadata"]["nbgrader"]["grade_id"]
        for cell in notebook["cells"]
        if cell["metadata"].get("nbgrader", {}).get("grade") and not cell["metadata"]["nbgrader"].get("solution")
    ]
    return SubmissionResult(
        job.assignment,
        job.student,
        executed_notebook=notebook,
        files=sorted(job.files),
        report=GradingReport({gid: CheckResult(gid, True, "") for gid in grade_ids}),
        host="stub",
    )


def flagging_grader(job):
    """Passes every check, reports the model file's digest as the worker does, and one note for review."""
    from coursekit.class_worker import model_file_digest

    result = passing_grader(job)
    result.model_sha256 = model_file_digest(job)
    result.report.flags = ["a note from the graders"] if job.student == "demo_missing_function" else []
    return result


def varied_grader(job):
    """demo_syntax_error loses test_softmax; every model is measured; one student is flagged."""
    result = flagging_grader(job)
    accuracy = {"demo_reference": 0.911, "demo_syntax_error": 0.897}.get(job.student, 0.93)
    result.report.measurements = {"saved_model_test_accuracy": accuracy}
    if job.student == "demo_syntax_error":
        result.report.checks["test_softmax"] = CheckResult("test_softmax", False, "SyntaxError <b>in</b> softmax")
    return result


def interrupted_grader(job):
    """Ctrl-C arrives while demo_reference is being graded."""
    if job.student == "demo_reference":
        raise KeyboardInterrupt
    return passing_grader(job)


def failing_worker(job):
    """The worker (not the submission) fails on demo_reference."""
    if job.student == "demo_reference":
        raise RuntimeError("worker lost")
    return passing_grader(job)


def rows(root):
    return {row["student"]: row for row in course.check_table(root, LAB.assignment, LAB.notebook_id)}


def submit_broken_notebook(root, student=BROKEN):
    folder = root / "submitted" / student / LAB.assignment
    folder.mkdir(parents=True)
    (folder / LAB.notebook).write_text('{"cells": [ this is not JSON', encoding="utf-8")


@pytest.fixture(scope="module")
def stub_course_template(tmp_path_factory):
    root = released_course(tmp_path_factory.mktemp("template"))
    students = ("demo_missing_function", "demo_reference", "demo_syntax_error")
    submit_demo_students(root, [s for s in LAB1_SUBMISSIONS if s.student in students], LAB)
    return root


@pytest.fixture
def stub_course(stub_course_template, tmp_path):
    """A fresh copy of a released course with three demo submissions, never graded."""
    return shutil.copytree(stub_course_template, tmp_path / "course")


# Resume logic, with stand-ins --------------------------------------------------------------------


def test_rerun_grades_nothing_and_a_changed_submission_is_regraded_alone(stub_course):
    first = grade_class(stub_course, workers=2, grade=passing_grader, progress=False)
    assert len(first.graded) == 3 and len(first.recorded) == 3 and not first.failures
    assert all(not lost_points(row) for row in rows(stub_course).values())

    again = grade_class(stub_course, workers=2, grade=passing_grader, progress=False)
    assert again.graded == [] and again.recorded == [] and again.unchanged == 3

    timestamp = stub_course / "submitted" / "demo_syntax_error" / LAB.assignment / "timestamp.txt"
    timestamp.write_text("2026-11-24 09:00:00.000000 UTC\n")  # a resubmission
    store = ResultStore.for_course(stub_course)
    store.path(LAB.assignment, "demo_reference", ".recorded").unlink()  # stopped between storing and recording
    changed = grade_class(stub_course, workers=2, grade=passing_grader, progress=False)
    assert changed.graded == [(LAB.assignment, "demo_syntax_error")] and changed.unchanged == 1
    assert set(changed.recorded) == {(LAB.assignment, "demo_syntax_error"), (LAB.assignment, "demo_reference")}


def test_only_the_named_students_are_graded_and_the_others_stay_as_they_are(stub_course):
    some = grade_class(stub_course, workers=1, grade=passing_grader, progress=False, students={"demo_reference"})
    assert some.graded == [(LAB.assignment, "demo_reference")] and set(rows(stub_course)) == {"demo_reference"}
    rest = grade_class(stub_course, workers=1, grade=passing_grader, progress=False)
    assert set(rest.graded) == {(LAB.assignment, "demo_missing_function"), (LAB.assignment, "demo_syntax_error")}
    assert rest.unchanged == 1


def test_an_interrupted_run_keeps_finished_results_and_the_rerun_grades_the_rest(stub_course):
    everyone = {(LAB.assignment, s.student) for s in find_submissions(stub_course, LAB.assignment)}
    stopped = grade_class(stub_course, workers=1, grade=interrupted_grader, progress=False)
    assert stopped.interrupted and stopped.grades_csv is None
    assert (LAB.assignment, "demo_missing_function") in stopped.graded  # graded before the interruption
    assert (LAB.assignment, "demo_reference") not in stopped.graded
    assert set(stopped.recorded) == set(stopped.graded) and set(rows(stub_course)) == {s for _, s in stopped.graded}

    resumed = grade_class(stub_course, workers=1, grade=passing_grader, progress=False)
    assert set(resumed.graded) == everyone - set(stopped.graded)
    assert not resumed.interrupted and set(rows(stub_course)) == {s for _, s in everyone}


def test_a_worker_failure_is_reported_and_retried_on_the_next_run(stub_course):
    failed = grade_class(stub_course, workers=2, grade=failing_worker, progress=False)
    assert set(failed.failures) == {(LAB.assignment, "demo_reference")}
    assert "worker lost" in failed.failures[LAB.assignment, "demo_reference"]
    assert len(failed.graded) == 2  # the others were graded all the same

    retried = grade_class(stub_course, workers=2, grade=passing_grader, progress=False)
    assert retried.graded == [(LAB.assignment, "demo_reference")] and not retried.failures


def test_identical_model_files_are_flagged(stub_course):
    """The three demo students submitted the same reference model file: each is flagged, points kept."""
    first = grade_class(stub_course, workers=1, grade=flagging_grader, progress=False)
    students = {s for _, s in first.graded}
    for student in students:
        notes = first.flags[LAB.assignment, student]
        assert any(
            "byte for byte the same" in note and all(other in note for other in students - {student}) for note in notes
        )
    assert "a note from the graders" in first.flags[LAB.assignment, "demo_missing_function"]
    assert any("review   lab1_dense/demo_reference" in line for line in first.lines())
    assert all(not lost_points(row) for row in rows(stub_course).values())

    model = stub_course / "submitted" / "demo_reference" / LAB.assignment / LAB.model_file
    model.write_bytes(model.read_bytes() + b"\0")  # now a file of its own
    again = grade_class(stub_course, workers=1, grade=flagging_grader, progress=False)
    assert (LAB.assignment, "demo_reference") not in again.flags
    assert any("byte for byte" in note for note in again.flags[LAB.assignment, "demo_syntax_error"])


def test_the_fingerprint_changes_with_the_submission_and_the_source_notebook(stub_course):
    submission = find_submissions(stub_course, LAB.assignment)[0]
    before = submission.fingerprint()
    assert submission.fingerprint() == before
    model = submission.folder / LAB.model_file
    model.write_bytes(model.read_bytes() + b"\0")
    assert submission.fingerprint() != before
    changed_submission = submission.fingerprint()
    submission.source_notebook.write_text(submission.source_notebook.read_text() + "\n")
    assert submission.fingerprint() != changed_submission


def test_the_grading_code_digest_follows_what_the_grading_code_does(tmp_path):
    """Rewording a docstring or a comment, or editing the demo, regrades nothing; editing a grader or a bar does."""
    from coursekit.class_results import code_digest

    root = tmp_path / "kit"
    for part in ("coursekit", "grader_tests"):
        shutil.copytree(course_config.ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(course_config.ROOT / "course_config.py", root)
    before = code_digest(LAB.assignment, root)

    def edit(name, old, new):
        path = root / name
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        return code_digest(LAB.assignment, root)

    assert edit("coursekit/checks.py", '"""', '"""Reworded: ') == before  # the module's docstring
    assert edit("coursekit/sandbox.py", "\ndef ", "\n# a new comment\ndef ") == before
    assert edit("coursekit/demo.py", "def ", "DEMO_ONLY = 1\n\n\ndef ") == before  # decides no grade
    changed_grader = edit("grader_tests/test_lab1_dense.py", "\ndef ", "\nEXTRA_CASE = 1\n\n\ndef ")
    assert changed_grader != before
    assert (
        edit("course_config.py", "saved_model_min_accuracy: float = 0.905", "saved_model_min_accuracy: float = 0.9")
        != changed_grader
    )


# The worker's own problems, without a full grading ------------------------------------------------


def job_for(files, timeout=0):
    return GradingJob(LAB.assignment, "someone", LAB.notebook, files, timeout=timeout)


def test_a_stored_result_reads_back_as_it_was_written_and_a_broken_one_is_graded_again(tmp_path):
    report = GradingReport(
        {"test_softmax": CheckResult("test_softmax", False, "wrong")},
        flags=["look"],
        unfinished="",
        measurements={"saved_model_test_accuracy": 0.9},
    )
    result = SubmissionResult(
        LAB.assignment,
        "s",
        report=report,
        executed_notebook={"cells": []},
        files=[LAB.notebook],
        model_sha256="ab",
        seconds=1.5,
        host="h",
        fingerprint="f",
        left_out=["`big.bin` (1.0 GiB)"],
    )
    store = ResultStore(tmp_path)
    store.save(result)
    assert store.load(LAB.assignment, "s") == result
    assert SubmissionResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    older = {
        "assignment": LAB.assignment,
        "student": "old",
        "problem": "",
        "host": "h",
        "seconds": 2.0,
        "report": {"problem": "", "checks": {"test_softmax": {"passed": True, "message": ""}}, "flags": []},
        "executed_notebook": None,
        "model_sha256": "",
        "fingerprint": "f0",
        "left_out": [],
        "other": 1,
    }
    assert SubmissionResult.from_dict(older).scored_report().checks["test_softmax"].passed  # no "files": still read
    store.path(LAB.assignment, "broken").write_text('{"assignment": "x", "report": []}')
    assert store.load(LAB.assignment, "broken") is None  # not a result: graded again, never a crash
    unreadable = SubmissionResult(LAB.assignment, "u", problem="not UTF-8")
    assert unreadable.scored_report().result_for("test_softmax").message.endswith("not UTF-8. Tell your instructor.")


def test_a_notebook_that_is_not_json_is_a_problem_not_a_crash():
    result = grade_submission(job_for({LAB.notebook: b'{"cells": [ oops'}))
    assert "is not valid JSON" in result.problem and "submit" in result.problem
    assert result.executed_notebook is None

    missing = grade_submission(job_for({LAB.model_file: b"model"}))
    assert "missing from the submission" in missing.problem


def test_a_submission_over_the_time_limit_is_stopped_and_the_limit_named():
    """Time is the student's problem: no worker failure; unfinished checks fail naming the limit."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    # A graded function that hangs keeps the hidden graders busy past 5 s on any machine, however fast.
    slow_function = "import time\n\ndef scale_images(images):\n    time.sleep(60)\n    return images"
    notebook = new_notebook(
        cells=[new_code_cell(slow_function), new_code_cell("time.sleep(60)"), new_code_cell("print('after')")]
    )
    result = grade_submission(job_for({LAB.notebook: nbformat.writes(notebook).encode()}, timeout=5))
    assert result.seconds < 60  # the 60-second cell was cut short, not waited for (however loaded the machine)
    assert result.problem == ""  # not a broken submission: the graders' verdicts (here: none in time) decide
    assert "time limit of 5 s" in result.report.unfinished  # the hidden graders were stopped too
    # Whatever the graders finished in those 5 s (how much depends on the machine) fails: the notebook
    # defines no other graded function; the rest is named as left by the limit.
    assert all(not check.passed for check in result.report.checks.values())
    executed = result.executed_notebook
    assert "time limit" in json.dumps(executed.cells[1].outputs)


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "fresh"])
def test_ctrl_c_while_the_graders_run_leaves_no_grader_process(monkeypatch, tmp_path, warm):
    """grade_notebook kills the graders' process group whatever stops it, Ctrl-C included, in both ways of
    starting the graders (forked from the warm process, or a fresh ``python -m pytest``)."""
    import os
    import subprocess

    from coursekit import warm_graders
    from coursekit.grading import grade_notebook
    from coursekit.isolation import isolation

    if warm and not warm_graders._warm_graders_possible():
        pytest.skip("no fork (Linux only)")
    isolation()  # decided before anything is replaced (it starts processes of its own)
    monkeypatch.setattr(course_config, "WARM_GRADERS", warm)
    started = []
    if warm:
        receive = warm_graders._WarmProcess._receive

        def interrupted(self, timeout):
            if started and len(started) == 1:
                started.append("interrupted")
                raise KeyboardInterrupt  # once, while the grading runs
            message = receive(self, timeout)
            if "pid" in message:
                started.append(message["pid"])
            return message

        monkeypatch.setattr(warm_graders._WarmProcess, "_receive", interrupted)
    else:
        wait = subprocess.Popen.wait

        def interrupted(process, timeout=None):
            if timeout is None:
                return wait(process)
            started.append(process.pid)
            raise KeyboardInterrupt

        monkeypatch.setattr(subprocess.Popen, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        grade_notebook(tmp_path / LAB.notebook, LAB.assignment)
    assert started
    with pytest.raises(ProcessLookupError):
        os.killpg(started[0], 0)  # no process of the graders' group is left


# One real grading, on a Dask cluster ------------------------------------------------------------------
# The local worker pool runs the same grade_submission; its plumbing is tested above with stand-ins, and
# grade_submission itself above and here. One real grading of a submission (about 100 CPU-seconds) is enough.


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """A submission and a broken notebook graded for real on a LocalCluster of two worker processes."""
    from distributed import LocalCluster

    root = released_course(tmp_path_factory.mktemp("class"))
    submit_demo_students(root, [s for s in LAB1_SUBMISSIONS if s.student == REAL_STUDENT], LAB)
    submit_broken_notebook(root)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        summary = grade_class(root, scheduler=cluster.scheduler_address, progress=False)
    return root, summary


def test_every_submission_is_graded_on_the_dask_cluster(graded_class):
    root, summary = graded_class
    assert not summary.failures and not summary.interrupted and len(summary.graded) == 2
    graded = rows(root)
    assert set(graded) == {REAL_STUDENT, BROKEN}
    assert lost_points(graded[REAL_STUDENT]) == {"test_softmax"}  # every other check passed
    assert "SyntaxError" in graded[REAL_STUDENT]["reasons"]["test_softmax"]
    stored = ResultStore.for_course(root).load(LAB.assignment, REAL_STUDENT)
    assert stored.executed_notebook and stored.seconds > 0  # the quick-mode re-run happened on a worker


def test_a_broken_notebook_scores_zero_with_a_clear_problem(graded_class):
    root, summary = graded_class
    assert "is not valid JSON" in summary.problems[LAB.assignment, BROKEN]
    assert (LAB.assignment, REAL_STUDENT) not in summary.problems
    scores = rows(root)[BROKEN]["scores"]
    assert scores and all(score == 0 for score, _ in scores.values())
    page = (root / "feedback" / BROKEN / LAB.assignment / f"{LAB.notebook_id}.html").read_text()
    assert "is not valid JSON" in page


def test_grades_csv_and_feedback_are_written(graded_class):
    root, summary = graded_class
    with open(summary.grades_csv) as handle:
        exported = {row["student_id"]: float(row["raw_score"]) for row in csv.DictReader(handle)}
    assert exported[BROKEN] == 0 < exported[REAL_STUDENT]
    html = (root / "feedback" / REAL_STUDENT / LAB.assignment / f"{LAB.notebook_id}.html").read_text()
    assert "SyntaxError" in html and "BEGIN HIDDEN TESTS" not in html
    assert (root / "autograded" / REAL_STUDENT / LAB.assignment / LAB.notebook).is_file()


def test_class_report_and_platform_exports_agree_with_the_gradebook(stub_course):
    import csv
    import re

    from coursekit.class_report import class_rows, summary

    done = grade_class(stub_course, workers=1, grade=varied_grader, progress=False, exports=("canvas", "moodle"))
    report = stub_course / "reports" / f"{LAB.assignment}.html"
    assert report in done.reports and report.is_file()
    page = report.read_text(encoding="utf-8")
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", page)) == 3  # scores, checks, accuracies
    assert "<b>in</b>" not in page and "SyntaxError &lt;b&gt;in&lt;/b&gt; softmax" in page  # escaped
    assert "<script" not in page

    numbers = summary(class_rows(stub_course, LAB.assignment))
    with open(done.grades_csv, newline="") as handle:
        csv_scores = {
            row["student_id"]: float(row["raw_score"])
            for row in csv.DictReader(handle)
            if row["assignment"] == LAB.assignment
        }
    assert numbers["totals"] == pytest.approx(csv_scores)
    softmax_points = [gid for gid in numbers["pass_rates"] if gid == "test_softmax"]
    assert softmax_points and numbers["pass_rates"]["test_softmax"] == pytest.approx(2 / 3)
    assert numbers["frequent_failures"][0][1] == 1
    assert numbers["saved_model_accuracies"]["demo_syntax_error"] == pytest.approx(0.897)
    assert "byte for byte" in " ".join(numbers["flagged"]["demo_reference"])
    assert numbers["identical_model_files"] == [sorted(numbers["totals"])]  # the stand-ins share one model file
    assert "3 submissions: demo_missing_function, demo_reference, demo_syntax_error" in page
    assert "1 of 3" in page and "below the bar" in page  # 0.897 < 0.905

    canvas, moodle = (stub_course / f"grades_{name}.csv" for name in ("canvas", "moodle"))
    assert {canvas, moodle} == set(done.exports)
    rows = list(csv.reader(canvas.open(newline="")))
    assert rows[0][:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    assert rows[1][0] == "Points Possible"
    column = next(i for i, title in enumerate(rows[0]) if title.startswith(LAB.assignment))
    assert {row[2]: float(row[column]) for row in rows[2:]} == pytest.approx(csv_scores)
    with moodle.open(newline="") as handle:
        assert {row["ID number"]: float(row[LAB.assignment]) for row in csv.DictReader(handle)} == pytest.approx(
            csv_scores
        )


def test_a_large_group_of_identical_model_files_is_listed_once_and_named_briefly_in_each_note():
    from coursekit.class_results import NAMED_IN_A_NOTE, identical_model_file_note, model_file_groups

    results = {
        f"s{i:02d}": SimpleNamespace(model_sha256="a" if i < 12 else ("b" if i < 14 else f"own{i}")) for i in range(20)
    }
    groups = model_file_groups(results)
    assert groups == [
        [f"s{i:02d}" for i in range(12)],
        ["s12", "s13"],
    ]  # largest first; files of their own are no group
    note = identical_model_file_note(groups[0][1:])
    assert note.count(", ") == NAMED_IN_A_NOTE - 1 and f"and {11 - NAMED_IN_A_NOTE} more" in note
    assert "and" not in identical_model_file_note(["s13"]).split("that of")[1]


@pytest.mark.parametrize(
    "values, bar",
    [([0.9111] * 7 + [0.6106], 0.905), ([0.93, 0.9312, 0.9401], 0.93), ([0.1, 0.95], 0.91), ([0.915], 0.91)],
)
def test_the_accuracy_histogram_has_the_bar_as_an_edge(values, bar):
    from coursekit.class_report import accuracy_bins

    edges = accuracy_bins(values, bar)
    assert bar in edges and edges[0] <= min(values) and edges[-1] >= max(values)
    assert edges == sorted(edges) and len(edges) - 1 <= 40
    assert all(not (low < bar < high) for low, high in zip(edges, edges[1:]))  # no bin straddles the bar


def test_the_score_histogram_has_one_bar_per_point_for_a_lab():
    from coursekit.class_report import score_bins

    edges = score_bins(21)
    assert edges[0] == -0.5 and edges[-1] == 21.5 and len(edges) == 23  # 0, 1, ..., 21 points: a bar each
    assert len(score_bins(120)) == 21
