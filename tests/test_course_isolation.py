"""The private folders of the course being graded are closed to student code, wherever the course is.

Issue 12 ("Isolation gaps"): a course graded with ``grade-class --course DIR`` outside the kit's
folder was left open, ``.class_grading/`` always, and a re-executed notebook read other
students' files. Here every course lies outside the kit's folder, in a folder open to all, with
every file open to read, and student code probes it as the sandbox's user: from the sandbox
child (:func:`coursekit.sandbox.run_student_functions`) and from the re-run kernel
(:class:`coursekit.kernel_sandbox.SandboxedExecute`), after the explicit close step
(:func:`coursekit.isolation.close_course`) and after the real entry points (``grade_notebook``,
nbgrader's course in the kernel, ``grade_class`` with an honest submission graded for real).
"""

import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from traitlets.config import Config

import course_config
from coursekit import course, isolation
from coursekit.class_results import ResultStore, SubmissionResult
from coursekit.class_worker import _run_quick_mode, grade_submission
from coursekit.classgrading import grade_class
from coursekit.demo import lost_points, submit_demo_students
from coursekit.grading import CheckResult, GradingReport, grade_notebook
from coursekit.isolation import close_course, find_course_roots
from coursekit.sandbox import Call, run_student_functions
from coursekit.submissions import LAB1_SUBMISSIONS

from test_sandbox import notebook_with

LAB = course_config.LAB1
ISOLATION = isolation.isolation()
needs_other_user = pytest.mark.skipif(
    not ISOLATION.drops_privileges,
    reason="student code cannot run as another user here, so closing folders to "
    "others cannot be seen from it: " + "; ".join(ISOLATION.missing),
)

# An outside course's files, relative to its folder: every private kind the issue lists, another student's.
PRIVATE_FILES = {
    "gradebook.db": "the class's grades, manual scores included",
    "grades.csv": "student_id,raw_score\nother_student,97.0\n",
    "submitted/other_student/lab1_dense/lab1_dense.ipynb": '{"cells": ["another student\'s code"]}',
    "autograded/other_student/lab1_dense/lab1_dense.ipynb": '{"cells": ["executed"]}',
    "feedback/other_student/lab1_dense/lab1_dense.html": "<p>other_student: 97 points</p>",
    ".class_grading/lab1_dense/other_student.json": '{"report": {"checks": {}}}',
    "source/lab1_dense/lab1_dense.ipynb": '{"cells": ["the solution"]}',
    "grader_tests/test_lab1_dense.py": "def test_hidden(): pass",
    "reference_solution/lab1_dense/results.json": "{}",
    "reports/class_report.txt": "other_student: 97",
    ".nbgrader.log": "[AutogradeApp] other_student: test_softmax failed: ...",
}
PUBLIC_FILES = {"release/lab1_dense/lab1_dense.ipynb": "{}"}  # what students are given; and nbgrader_config.py


def open_course(parent):
    """A course folder in ``parent`` with :data:`PRIVATE_FILES` and :data:`PUBLIC_FILES`, all open to read."""
    root = parent / "course"
    root.mkdir()
    shutil.copy(course_config.ROOT / "nbgrader_config.py", root)
    for name, text in {**PRIVATE_FILES, **PUBLIC_FILES}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    open_to_all(root)
    return root


def open_to_all(root):
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)


@pytest.fixture
def outside_parent():
    """A folder outside the kit's folder that every user can enter (pytest's own tmp_path cannot be)."""
    parent = Path(tempfile.mkdtemp(prefix="coursekit-outside-course-"))
    parent.chmod(0o755)
    assert course_config.ROOT not in parent.parents
    yield parent
    shutil.rmtree(parent)


@pytest.fixture
def outside_course(outside_parent):
    return open_course(outside_parent)


def private_targets(root):
    """What must be closed: each private folder (listed), each file in it (read), and the kit's graders."""
    targets = []
    for name in PRIVATE_FILES:
        parts = Path(name).parts
        if len(parts) > 1:
            targets.append(f"{root / parts[0]}/")
        targets.append(str(root / name))
    kit = course_config
    targets += [
        f"{kit.GRADER_TESTS_DIR}/",
        str(kit.GRADER_TESTS_DIR / f"test_{LAB.assignment}.py"),
        f"{kit.REFERENCE_DIR}/",
        f"{kit.GRADER_CACHE_DIR}/",
    ]
    return targets


def public_targets(root):
    return [str(root / "nbgrader_config.py"), f"{root / 'release'}/", *(str(root / name) for name in PUBLIC_FILES)]


# 1 readable, 0 PermissionError, 2 any other error (missing, ...): a folder (a path ending in "/") is listed.
READABLE = """
import json, os

def readable(path):
    try:
        if path.endswith("/"):
            os.listdir(path)
        else:
            with open(path, "rb") as handle:
                handle.read(1)
        return 1
    except PermissionError:
        return 0
    except OSError:
        return 2
"""


def sandbox_probe(folder, targets):
    """``{target: 1/0/2}`` as seen by a graded function in the sandbox child."""
    path = notebook_with(
        Path(folder),
        READABLE
        + f"""
import numpy as np
def probe(x):
    return np.array([readable(path) for path in {targets!r}])
""",
    )
    run = run_student_functions(path, [Call("probe", (1,))])
    assert run["probe"].ok, run["probe"].error
    return dict(zip(targets, run["probe"].value.tolist()))


def kernel_notebook(targets):
    cell = READABLE + f'\nprint("PROBE" + json.dumps([readable(path) for path in {targets!r}]))\n'
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def kernel_probe_result(notebook, targets):
    """``{target: 1/0/2}`` that the probe cell printed in the re-run kernel (the outputs if it printed none)."""
    for output in notebook.cells[0].get("outputs", []):
        text = output.get("text", "")
        if "PROBE[" in text:
            return dict(zip(targets, json.loads(text[text.index("PROBE[") + 5 :].splitlines()[0])))
    return notebook.cells[0].get("outputs")


def open_ones(seen, targets):
    return {target: seen[target] for target in targets if seen[target] != 0}


def open_to_others(root):
    """Private paths of the course ``root`` that still give others any permission."""
    return [str(path) for path in isolation.private_course_paths(root) if path.exists() and path.stat().st_mode & 0o007]


# The explicit close step, seen from the sandbox child ---------------------------------------------------


@needs_other_user
def test_close_course_shuts_the_sandbox_child_out_of_an_outside_course(outside_course, tmp_path):
    private, public = private_targets(outside_course), public_targets(outside_course)
    course_only = [target for target in private if target.startswith(str(outside_course))]
    before = sandbox_probe(tmp_path, private + public)
    assert all(before[target] == 1 for target in course_only + public), before  # the probe sees an open course

    close_course(outside_course)
    after = sandbox_probe(tmp_path, private + public)
    assert open_ones(after, private) == {}, "readable by student code after close_course"
    assert all(after[target] == 1 for target in public), after  # release/ and nbgrader_config.py stay open
    assert open_to_others(outside_course) == []
    assert (outside_course.stat().st_mode & 0o777) == 0o755  # the course folder itself is left as it was


def test_grading_a_notebook_closes_the_course_it_lies_in(outside_course, outside_parent):
    """``coursekit grade`` and nbgrader's HiddenGraders: the course the notebook lies in, or the one named."""
    notebook = outside_course / "submitted" / "other_student" / LAB.assignment / LAB.notebook
    report = grade_notebook(notebook, "no_such_assignment")  # stops before the graders: none for it
    assert "no hidden graders" in report.problem
    assert open_to_others(outside_course) == []

    (outside_parent / "configured-elsewhere").mkdir()
    elsewhere = open_course(outside_parent / "configured-elsewhere")  # no nbgrader_config.py in it
    (elsewhere / "nbgrader_config.py").unlink()
    grade_notebook(outside_parent / "nowhere.ipynb", "no_such_assignment", course=elsewhere)
    assert open_to_others(elsewhere) == []


def test_course_folders_are_found_but_not_in_folders_others_can_write(outside_course, outside_parent):
    notebook = outside_course / "autograded" / "s" / LAB.assignment / LAB.notebook
    assert outside_course in find_course_roots(notebook)
    planted = Path(tempfile.mkdtemp(prefix="coursekit-planted-"))
    try:
        planted.chmod(0o1777)  # like /tmp: anyone could have put an nbgrader_config.py there
        (planted / "nbgrader_config.py").write_text("")
        assert planted not in find_course_roots(planted / "x.ipynb")
        planted.chmod(0o755)
        (planted / "nbgrader_config.py").chmod(0o666)
        assert planted not in find_course_roots(planted / "x.ipynb")
    finally:
        shutil.rmtree(planted)


def test_folders_made_after_the_close_are_made_closed(outside_parent):
    """autograded/ and feedback/ (written later by nbgrader) and class grading's results never exist open."""
    root = outside_parent / "course"
    (root / "submitted" / "someone").mkdir(parents=True)
    open_to_all(root)
    close_course(root)
    for name in ("autograded", "feedback"):
        assert (root / name).is_dir() and not (root / name).stat().st_mode & 0o007, name
    store = ResultStore.for_course(root)
    store.save(SubmissionResult(LAB.assignment, "someone", fingerprint="f"))
    assert not store.folder.stat().st_mode & 0o007
    assert store.load(LAB.assignment, "someone").fingerprint == "f"


# The re-run kernel ---------------------------------------------------------------------------------------


@needs_other_user
def test_re_run_kernel_cannot_read_the_course_nbgrader_grades(outside_course, outside_parent):
    """nbgrader's course (its CourseDirectory.root), closed by the kernel itself before it starts: here a
    course configured elsewhere (no nbgrader_config.py in it), with the notebook re-run outside it."""
    from coursekit.kernel_sandbox import SandboxedExecute

    (outside_course / "nbgrader_config.py").unlink()
    run_folder = outside_parent / "run"
    run_folder.mkdir()
    private, public = private_targets(outside_course), public_targets(outside_course)[1:]
    notebook = kernel_notebook(private + public)
    config = Config()
    config.CourseDirectory.root = str(outside_course)
    resources = {
        "metadata": {"path": str(run_folder)},
        "nbgrader": {"student": "t_probe", "assignment": LAB.assignment, "notebook": LAB.notebook_id},
    }
    SandboxedExecute(timeout=120, config=config).preprocess(notebook, resources)
    seen = kernel_probe_result(notebook, private + public)
    assert isinstance(seen, dict), seen
    assert open_ones(seen, private) == {}, "readable by the re-executed notebook"
    assert all(seen[target] == 1 for target in public), seen


# grade_class on a course outside the kit, folders created while it runs --------------------------------

PROBE_STUDENT = "z_probe"  # graded after demo_reference (students are graded in order)


def grade_or_probe(job):
    """Worker function for :func:`grade_class` (module level: the worker processes import it).

    demo_reference is graded for real. For PROBE_STUDENT, once demo_reference's result is stored and
    recorded (its feedback written), the worker probes the course from a sandbox child and from the
    quick-mode re-run's kernel, as a submission's code would, writes what it read into the file that
    ``findings.txt`` names (outside the course), and returns a passing result.
    """
    if job.student != PROBE_STUDENT:
        return grade_submission(job)
    targets = json.loads(job.files["targets.json"])
    marker = Path(job.files["wait_for.txt"].decode())
    deadline = time.monotonic() + course_config.CLASS_GRADING_SUBMISSION_TIMEOUT_S
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    notebook = json.loads(job.files[job.notebook])
    grade_ids = [
        cell["metadata"]["nbgrader"]["grade_id"]
        for cell in notebook["cells"]
        if cell["metadata"].get("nbgrader", {}).get("grade") and not cell["metadata"]["nbgrader"].get("solution")
    ]
    with tempfile.TemporaryDirectory(prefix="coursekit-probe-") as scratch:
        child = sandbox_probe(scratch, targets)
        executed = kernel_notebook(targets)
        _run_quick_mode(executed, Path(scratch), time.monotonic() + 300, "python3", "probe-worker", 300)
    findings = {
        "marker_seen": marker.exists(),
        "probe_child": child,
        "probe_kernel": kernel_probe_result(executed, targets),
    }
    Path(job.files["findings.txt"].decode()).write_text(json.dumps(findings), encoding="utf-8")
    return SubmissionResult(
        job.assignment,
        job.student,
        executed_notebook=notebook,
        host="probe-worker",
        report=GradingReport({gid: CheckResult(gid, True, "") for gid in grade_ids}),
    )


@needs_other_user
def test_grade_class_keeps_an_outside_course_closed_while_it_creates_its_folders(outside_parent):
    from conftest import released_course, require_reference  # here: the worker processes import this module

    require_reference(LAB)
    root = outside_parent / "course"
    root.mkdir()
    released_course(root)
    submit_demo_students(root, [s for s in LAB1_SUBMISSIONS if s.student == "demo_reference"], LAB)
    (root / "reports").mkdir()
    (root / "reports" / "class_report.txt").write_text("demo_reference: every point")
    results = root / course_config.CLASS_GRADING_RESULTS
    made_during_the_run = [  # none of these exists when grading starts
        f"{results}/",
        str(results / LAB.assignment / "demo_reference.json"),
        str(root / "autograded" / "demo_reference" / LAB.assignment / LAB.notebook),
        str(root / "feedback" / "demo_reference" / LAB.assignment / f"{LAB.notebook_id}.html"),
    ]
    existing = [
        str(root / "gradebook.db"),
        f"{root / 'submitted'}/",
        str(root / "submitted" / "demo_reference" / LAB.assignment / LAB.notebook),
        str(root / "source" / LAB.assignment / LAB.notebook),
        f"{root / 'reports'}/",
        str(root / "reports" / "class_report.txt"),
    ]
    private = existing + made_during_the_run
    public = [str(root / "nbgrader_config.py"), str(root / "release" / LAB.assignment / LAB.notebook)]
    probe = root / "submitted" / PROBE_STUDENT / LAB.assignment
    probe.mkdir(parents=True)
    shutil.copy(root / "release" / LAB.assignment / LAB.notebook, probe)
    (probe / "targets.json").write_text(json.dumps(private + public))
    recorded = ResultStore.for_course(root).path(LAB.assignment, "demo_reference", ".recorded")
    (probe / "wait_for.txt").write_text(str(recorded))
    findings = outside_parent / "probe_findings.json"
    (probe / "findings.txt").write_text(str(findings))
    open_to_all(root)
    assert not results.exists()

    summary = grade_class(root, workers=1, grade=grade_or_probe, progress=False)

    assert not summary.failures and set(summary.graded) == {
        (LAB.assignment, "demo_reference"),
        (LAB.assignment, PROBE_STUDENT),
    }, summary.lines()
    rows = {row["student"]: row for row in course.check_table(root, LAB.assignment, LAB.notebook_id)}
    assert lost_points(rows["demo_reference"]) == set(), rows["demo_reference"]  # the honest one got every point
    assert all(Path(target.rstrip("/")).exists() for target in made_during_the_run)
    stored = ResultStore.for_course(root).load(LAB.assignment, PROBE_STUDENT)
    probed = json.loads(findings.read_text(encoding="utf-8"))
    assert probed["marker_seen"] and not stored.problem, (probed, stored)
    for where in ("probe_child", "probe_kernel"):
        seen = probed[where]
        assert isinstance(seen, dict), (where, seen)
        assert open_ones(seen, private) == {}, f"readable from the {where.split('_')[1]}"
        assert all(seen[target] == 1 for target in public), (where, seen)
    assert open_to_others(root) == [] and not summary.grades_csv.stat().st_mode & stat.S_IRWXO
