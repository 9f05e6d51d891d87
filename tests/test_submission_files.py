"""Extra files in a submission folder are bounded (docs/threat_model.md, *Extra files in a submission*).

A 1 GiB (sparse) file, hundreds of small files in a folder tree, links to files and folders outside the
submission, several files that fit alone but not together: each is left out of what is graded, copied
into autograded/ and feedback/ and sent to a worker, with a note in the student's terms, and the grade is
recorded as the checks decide. Cheap: the selection on its own, and class grading with a stand-in grader
(nbgrader's own autograde and generate_feedback copy the folder, with the course's nbgrader_config.py).
"""

import json
import os
import subprocess

import course_config
from coursekit.class_results import ResultStore
from coursekit.classgrading import grade_class
from coursekit.demo import lost_points
from coursekit.submission_files import bound_nbgrader_copies, select_files

from test_class_grading import LAB, passing_grader, rows, stub_course, stub_course_template  # noqa: F401

MB = 1024 * 1024
SECRET = "the grading machine's secret"


def listing_grader(job):
    """Every check passes; the result says which files the worker received (as the real worker's does)."""
    return passing_grader(job)


def sparse(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", str(size), str(path)], check=True)  # no disk used
    return path


def awkward_folder(folder, outside):
    """Every kind of extra file; returns the names that must be left out."""
    secret = outside / "secret.txt"
    secret.write_text(SECRET)
    sparse(folder / "big.bin", 1024 * MB)  # one huge file
    for index in range(120):  # many small files, in a folder tree
        path = folder / "runs" / f"run{index // 40}" / f"log{index:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"epoch {index}\n")
    (folder / "link.txt").symlink_to(secret)  # a link to a file elsewhere
    (folder / "etc").symlink_to("/etc")  # a link to a folder elsewhere
    return {"big.bin", "link.txt", "etc"}


def honest_folder(folder):
    folder.mkdir(parents=True)
    (folder / LAB.notebook).write_text("{}")
    (folder / LAB.model_file).write_bytes(b"model")
    (folder / "timestamp.txt").write_text("2026-11-23 12:00:00.000000 UTC\n")
    return folder


def test_an_honest_folder_is_kept_whole(tmp_path):
    folder = honest_folder(tmp_path / "submission")
    (folder / "notes").mkdir()
    (folder / "notes" / "answers.md").write_text("my notes")
    selection = select_files(folder, LAB.assignment)
    assert selection.kept == ("lab1_dense.ipynb", "lab1_dense_model.keras", "notes/answers.md", "timestamp.txt")
    assert selection.left_out == () and selection.notes() == []


def test_huge_many_and_linked_files_are_left_out_with_notes(tmp_path):
    folder = honest_folder(tmp_path / "submission")
    left_out = awkward_folder(folder, tmp_path)
    selection = select_files(folder, LAB.assignment)
    assert {"lab1_dense.ipynb", "lab1_dense_model.keras", "timestamp.txt"} <= set(selection.kept)
    assert not left_out & set(selection.kept)
    extras = [name for name in selection.kept if name not in (LAB.notebook, LAB.model_file)]
    assert len(extras) == course_config.SUBMISSION_EXTRA_MAX_FILES
    notes = " ".join(selection.notes())
    assert "`big.bin` (1.0 GiB) was not graded or copied" in notes
    assert f"at most {course_config.SUBMISSION_EXTRA_FILE_MAX_MB} MB each" in notes
    assert "`link.txt` was not graded or copied: it is a link" in notes and "`etc`" in notes
    assert "and 68 more files were not graded" in notes  # 120 logs + timestamp.txt: 50 kept, 3 of 71 named
    assert "hand in only the notebook and the model file" in notes


def test_a_notebook_or_model_file_over_its_limit_is_left_out_with_the_limit_named(tmp_path):
    folder = honest_folder(tmp_path / "submission")
    sparse(folder / LAB.model_file, (course_config.SUBMITTED_MODEL_MAX_MB + 1) * MB)
    selection = select_files(folder, LAB.assignment)
    assert LAB.model_file not in selection.kept and LAB.notebook in selection.kept
    assert f"the model file may be at most {course_config.SUBMITTED_MODEL_MAX_MB} MB" in " ".join(selection.notes())
    sparse(folder / LAB.notebook, (course_config.SUBMISSION_MAX_MB + 1) * MB)
    sparse(folder / LAB.model_file, course_config.SUBMITTED_MODEL_MAX_MB * MB)  # at the limit: kept
    selection = select_files(folder, LAB.assignment)
    assert LAB.notebook not in selection.kept and LAB.model_file in selection.kept
    assert f"the notebook may be at most {course_config.SUBMISSION_MAX_MB} MB" in " ".join(selection.notes())


def test_files_that_fit_alone_but_not_together_are_cut_at_the_total(tmp_path):
    folder = honest_folder(tmp_path / "submission")
    each = (course_config.SUBMISSION_EXTRA_FILE_MAX_MB - 1) * MB
    for name in ("a.npy", "b.npy", "c.npy"):
        sparse(folder / name, each)
    selection = select_files(folder, LAB.assignment)
    kept = [name for name in selection.kept if name.endswith(".npy")]
    assert len(kept) * each <= course_config.SUBMISSION_EXTRA_TOTAL_MAX_MB * MB < (len(kept) + 1) * each
    assert f"at most {course_config.SUBMISSION_EXTRA_TOTAL_MAX_MB} MB together" in " ".join(selection.notes())


def test_nbgrader_lists_only_the_selected_files_of_a_submission_and_all_of_an_instructors_folder(tmp_path):
    import nbgrader.converters.base as base

    bound_nbgrader_copies()
    bound_nbgrader_copies()  # once per process, however often the configuration is loaded
    submission = honest_folder(tmp_path / "submitted" / "student" / LAB.assignment)
    awkward_folder(submission, tmp_path)
    listed = {os.path.relpath(path, submission) for path in base.find_all_files(str(submission), ["*.ipynb"])}
    assert LAB.notebook not in listed and LAB.model_file in listed and "big.bin" not in listed
    assert len(listed) == 1 + course_config.SUBMISSION_EXTRA_MAX_FILES
    source = tmp_path / "source" / "." / LAB.assignment  # generate_assignment's input is not a submission
    sparse(source / "data.bin", 30 * MB)
    assert {os.path.basename(path) for path in base.find_all_files(str(source), ["*.ipynb"])} == {"data.bin"}


def test_nbgrader_still_copies_through_the_function_that_is_bounded():
    """bound_nbgrader_copies replaces nbgrader.converters.base.find_all_files: pin where nbgrader calls it."""
    import inspect

    import nbgrader.converters.base as base

    assert "find_all_files(source, self.coursedir.ignore" in inspect.getsource(base.BaseConverter.init_assignment)


def folder_size(folder):
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def test_grade_class_records_the_grade_and_copies_only_bounded_files(stub_course, tmp_path):  # noqa: F811
    student = "demo_reference"
    folder = stub_course / "submitted" / student / LAB.assignment
    left_out = awkward_folder(folder, tmp_path)
    summary = grade_class(stub_course, workers=1, grade=listing_grader, progress=False)
    assert not summary.failures and (LAB.assignment, student) in summary.recorded
    assert not lost_points(rows(stub_course)[student])  # the grade is what the checks decided
    notes = " ".join(summary.left_out[LAB.assignment, student])
    assert "`big.bin` (1.0 GiB)" in notes and "`link.txt`" in notes
    stored = ResultStore.for_course(stub_course).load(LAB.assignment, student)
    assert not left_out & set(stored.files) and LAB.model_file in stored.files
    limit = course_config.SUBMISSION_EXTRA_TOTAL_MAX_MB * MB + course_config.SUBMITTED_MODEL_MAX_MB * MB
    for step in ("autograded", "feedback"):
        copy = stub_course / step / student / LAB.assignment
        names = {path.relative_to(copy).as_posix() for path in copy.rglob("*")}
        assert not left_out & names, step
        assert not any(path.is_symlink() for path in copy.rglob("*")), step
        assert folder_size(copy) < limit, step
        assert all(SECRET not in path.read_text(errors="replace") for path in copy.rglob("*") if path.is_file())
    page = (stub_course / "feedback" / student / LAB.assignment / f"{LAB.notebook_id}.html").read_text()
    assert "Files not graded" in page and "big.bin" in page and "1.0 GiB" in page
    honest = stub_course / "feedback" / "demo_syntax_error" / LAB.assignment / f"{LAB.notebook_id}.html"
    assert "Files not graded" not in honest.read_text()
    graded = json.loads((stub_course / "autograded" / student / LAB.assignment / LAB.notebook).read_text())
    assert "big.bin" in "".join(graded["cells"][0]["source"])


# `nbgrader autograde` itself, with the kit's configuration and stand-ins for the two slow steps -------------

STAND_IN_FRAME = '''
"""The kit's nbgrader_config.py, with the re-run and the hidden graders replaced by stand-ins (tests/)."""
from nbgrader.preprocessors import NbGraderPreprocessor

from coursekit.grading import CheckResult, GradingReport
from coursekit.kernel_sandbox import SandboxedExecute
from coursekit.nbgrader_preprocessors import HiddenGraders, VerdictsPreprocessor, autograder_tests

c = get_config()  # noqa: F821
exec(open(KIT_CONFIG, encoding="utf-8").read(), {"get_config": lambda: c})


class NoReRun(NbGraderPreprocessor):
    def preprocess(self, nb, resources):
        return nb, resources

STAND_IN_GRADERS

swap = {SandboxedExecute: NoReRun, HiddenGraders: StandInGraders}
c.Autograde.autograde_preprocessors = [swap.get(step, step) for step in c.Autograde.autograde_preprocessors]
'''

ALL_PASSED = """
class StandInGraders(VerdictsPreprocessor):
    def report(self, nb, resources):
        return GradingReport({grade_id: CheckResult(grade_id, True, "") for grade_id in autograder_tests(resources)})
"""


def write_stand_in_config(course, graders=ALL_PASSED):
    """Give ``course`` the kit's nbgrader_config.py with the re-run skipped and ``graders`` (the source of a class
    ``StandInGraders``) in place of the hidden graders: what is tested is nbgrader's own part of the flow."""
    kit_config = repr(str(course_config.ROOT / "nbgrader_config.py"))
    text = STAND_IN_FRAME.replace("KIT_CONFIG", kit_config).replace("STAND_IN_GRADERS", graders)
    (course / "nbgrader_config.py").write_text(text)


def test_nbgrader_autograde_copies_only_bounded_files_and_says_so(stub_course, tmp_path):  # noqa: F811
    from coursekit import course

    student = "demo_reference"
    write_stand_in_config(stub_course)
    left_out = awkward_folder(stub_course / "submitted" / student / LAB.assignment, tmp_path)
    course.autograde(stub_course, LAB.assignment, student)
    course.generate_feedback(stub_course, LAB.assignment)
    assert not lost_points(rows(stub_course)[student])  # recorded, every point: no grade depends on the extras
    for step in ("autograded", "feedback"):
        copy = stub_course / step / student / LAB.assignment
        names = {path.relative_to(copy).as_posix() for path in copy.rglob("*")}
        assert not left_out & names and not any(path.is_symlink() for path in copy.rglob("*")), step
        assert len([name for name in names if name.endswith(".txt")]) <= course_config.SUBMISSION_EXTRA_MAX_FILES
        assert folder_size(copy) < course_config.SUBMISSION_EXTRA_TOTAL_MAX_MB * MB + 20 * MB, step
    page = (stub_course / "feedback" / student / LAB.assignment / f"{LAB.notebook_id}.html").read_text()
    assert "Files not graded" in page and "`big.bin`" not in page and "big.bin" in page and "1.0 GiB" in page
