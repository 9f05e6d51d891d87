"""Record class-grading results with nbgrader: gradebook, autograded notebook, feedback.

nbgrader's SQLite gradebook allows one writer, so only the process that runs
:func:`coursekit.classgrading.grade_class` uses this module, one submission at a
time. Each result goes through nbgrader's own ``autograde`` (sanitizing, late
penalties, ``SaveAutoGrades``) with the course's ``nbgrader_config.py``, in which
the two slow steps are swapped for stand-ins that read the stored result
(:class:`StoredExecution` for ``Execute`` or ``SandboxedExecute``, :class:`StoredVerdicts`
for ``HiddenGraders``, both defined here); then
``generate_feedback`` writes the student's page. Recording a result takes a second
or two, not the minute that grading took.

A notebook that cannot be read cannot go through nbgrader: its grades are set to 0
as nbgrader does for a missing notebook, and the feedback page says why.
"""

import html
import json
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from nbgrader.plugins import CsvExportPlugin
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from sqlalchemy.exc import SAWarning
from traitlets import Unicode
from traitlets.config.loader import PyFileConfigLoader

import course_config
from coursekit.class_results import ResultStore
from coursekit.course import scripts_on_path
from coursekit.course_layout import CourseLayout
from coursekit.isolation import close_course, close_to_others
from coursekit.nbgrader_preprocessors import HiddenGraders, VerdictsPreprocessor


class GradebookError(RuntimeError):
    """nbgrader could not record a result; the message holds the end of its log."""


# The stand-ins for nbgrader's slow autograde steps ---------------------------------------------------


class StoredResult(NbGraderPreprocessor):
    """Base of the stand-ins that read class grading's stored result of this submission."""

    results_directory = Unicode(
        "", help="Folder of class grading's result files (coursekit.class_results.ResultStore)."
    ).tag(config=True)

    def stored_result(self, resources):
        info = resources["nbgrader"]
        result = ResultStore(self.results_directory).load(info["assignment"], info["student"])
        if result is None:
            raise RuntimeError(
                f"No class-grading result for {info['student']}/{info['assignment']} in "
                f"{self.results_directory!r}: run `python -m coursekit grade-class "
                f"{info['assignment']}` instead of this step alone."
            )
        return result


class StoredExecution(StoredResult):
    """In place of nbgrader's ``Execute``: the outputs of the quick-mode run a worker did.

    Cells are matched by cell id (by position when the ids differ but the cell count does
    not); sources and metadata stay those of nbgrader's sanitized notebook.
    """

    def preprocess(self, nb, resources):
        stored = self.stored_result(resources).executed_notebook
        executed = nbformat.reads(json.dumps(stored), as_version=4) if stored else nbformat.v4.new_notebook()
        by_id = {cell.get("id"): cell for cell in executed.cells}
        same_length = len(executed.cells) == len(nb.cells)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            done = by_id.get(cell.get("id")) or (executed.cells[index] if same_length else None)
            if done is None or done.cell_type != "code":
                cell.outputs, cell.execution_count = [], None
            else:
                cell.outputs, cell.execution_count = done.outputs, done.get("execution_count")
        return nb, resources


class StoredVerdicts(StoredResult, VerdictsPreprocessor):
    """In place of ``HiddenGraders``: the hidden graders' report that a worker stored."""

    def report(self, nb, resources):
        return self.stored_result(resources).scored_report()


# Recording -------------------------------------------------------------------------------------------


def class_grading_config(root, results_directory):
    """The course's nbgrader configuration, with the slow autograde steps reading stored results."""
    config_file = Path(root) / "nbgrader_config.py"
    if not config_file.is_file():
        raise GradebookError(
            f"{config_file} is missing: class grading runs in a course folder with this kit's nbgrader_config.py."
        )
    config = PyFileConfigLoader(config_file.name, path=str(root)).load_config()
    steps = list(config.Autograde.autograde_preprocessors)
    executes = [step for step in steps if isinstance(step, type) and issubclass(step, Execute)]
    if not executes or HiddenGraders not in steps:
        raise GradebookError(
            f"{config_file} must list nbgrader's Execute (or coursekit's SandboxedExecute) and "
            "coursekit's HiddenGraders in Autograde.autograde_preprocessors; class grading "
            "replaces exactly those two."
        )
    swap = {executes[0]: StoredExecution, HiddenGraders: StoredVerdicts}
    config.Autograde.autograde_preprocessors = [swap.get(step, step) for step in steps]
    config.StoredResult.results_directory = str(results_directory)
    config.CourseDirectory.root = str(root)
    return config


class GradebookWriter:
    """Writes results into nbgrader's gradebook, autograded/ and feedback/ of the course ``root``."""

    def __init__(self, root, store=None):
        self.root = Path(root)
        self.store = store or ResultStore.for_course(root)
        config = class_grading_config(self.root, self.store.folder)
        self.api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)

    @contextmanager
    def _gradebook(self):
        """nbgrader's gradebook of the course (made, with this environment's ``alembic``, if there is none)."""
        with scripts_on_path(), Gradebook(self.api.coursedir.db_url, self.api.coursedir.course_id) as gradebook:
            yield gradebook

    def known_assignments(self):
        """Assignment ids in the gradebook (made by ``nbgrader generate_assignment``)."""
        with self._gradebook() as gradebook:
            return {assignment.name for assignment in gradebook.assignments}

    def students_with_submissions(self, assignment):
        """Student ids with a submission of ``assignment`` in the gradebook."""
        with self._gradebook() as gradebook:
            return {submission.student.id for submission in gradebook.find_assignment(assignment).submissions}

    def record(self, result):
        """Put one :class:`~coursekit.class_results.SubmissionResult` into the gradebook and write the student's
        feedback; then mark it recorded."""
        assignment, student = result.assignment, result.student
        with warnings.catch_warnings(), scripts_on_path():  # nbgrader's own SQLAlchemy warnings: harmless
            warnings.simplefilter("ignore", SAWarning)
            if result.executed_notebook is None:
                self._record_unreadable(result)
            else:
                self._check(self.api.autograde(assignment, student, force=True, create=True), "autograde", result)
                self._check(self.api.generate_feedback(assignment, student, force=True), "generate_feedback", result)
        close_course(self.root)  # autograded/ and feedback/ (made closed already), the gradebook, nbgrader's log
        self.store.mark_recorded(result)

    def export_grades(self):
        """nbgrader's CSV export (as ``nbgrader export``) into the course's grades CSV; returns its path.
        The file is closed to others before the grades are written into it."""
        path = CourseLayout(self.root).grades_csv
        path.touch(mode=0o640)
        close_to_others([path])  # nbgrader's export keeps the mode of the file it overwrites
        with warnings.catch_warnings(), self._gradebook() as gradebook:
            warnings.simplefilter("ignore", SAWarning)
            CsvExportPlugin(to=str(path), parent=self.api).export(gradebook)
        return path

    @staticmethod
    def _check(outcome, step, result):
        if not outcome["success"]:  # nbgrader's log holds the traceback; its last line says what went wrong
            log = (outcome.get("log", "") + "\n" + outcome.get("error", "")).splitlines()
            errors = [
                line.strip()
                for line in log
                if re.match(r"\s*[\w.]+(Error|Exception): ", line) and "NbGraderException" not in line
            ]
            raise GradebookError(
                f"nbgrader {step} failed for {result.student}/{result.assignment}: "
                f"{errors[-1] if errors else log[-1] if log else 'no log'}"
            )

    def _folder(self, template, result):
        coursedir = self.api.coursedir
        return Path(coursedir.format_path(template, result.student, result.assignment))

    def _record_unreadable(self, result):
        """A notebook nbgrader cannot read: the checks the graders passed without it (the saved model) get their
        points, every other grade 0 (nbgrader's rule for a missing notebook), and a feedback page says why."""
        assignment, student = result.assignment, result.student
        report = result.scored_report()
        passed = {grade_id for grade_id, check in report.checks.items() if check.passed}
        kept = []
        with self._gradebook() as gradebook:
            gradebook.update_or_create_student(student)
            submission = gradebook.update_or_create_submission(assignment, student)
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    grade.auto_score = grade.max_score if grade.name in passed else 0
                    grade.needs_manual_grade = False
                    if grade.name in passed:
                        kept.append(f"{grade.name} ({grade.max_score:g} points)")
            gradebook.db.commit()
        notebook_id = course_config.lab_settings(assignment).notebook_id
        for template in (self.api.coursedir.autograded_directory, self.api.coursedir.feedback_directory):
            shutil.rmtree(self._folder(template, result), ignore_errors=True)  # an earlier submission's
        page = self._folder(self.api.coursedir.feedback_directory, result) / f"{notebook_id}.html"
        page.parent.mkdir(parents=True)
        graded = (
            f"<p>Graded without the notebook, from your other files: {html.escape(', '.join(kept))}.</p>\n"
            if kept
            else ""
        )
        page.write_text(
            f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{notebook_id}</title></head><body>\n"
            f"<h1>{html.escape(assignment)}: {html.escape(notebook_id)}</h1>\n"
            f"<p>Your notebook could not be read, so every check that needs it scores 0.</p>\n"
            f"<p>{html.escape(result.problem)}</p>\n{graded}</body></html>\n",
            encoding="utf-8",
        )
