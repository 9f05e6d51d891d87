"""Grade a whole class: ``python -m coursekit grade-class [ASSIGNMENT ...] --workers N``.

For every submission in ``submitted/STUDENT/ASSIGNMENT/`` whose result is missing or
out of date (:mod:`coursekit.class_results`):

1. a worker grades it (:func:`coursekit.class_worker.grade_submission`: the hidden
   graders, then nbgrader's quick-mode re-execution), in N local processes or on a
   Dask cluster (``--scheduler tcp://HOST:8786``);
2. this process stores the result as soon as it arrives, then records it with
   nbgrader (:class:`coursekit.gradebook_writer.GradebookWriter`: gradebook,
   autograded notebook, feedback). Only this process writes the gradebook.

When every submission is done, ``nbgrader export`` writes the grades CSV. A crash, a
timeout or Ctrl-C keeps every stored result; the next run grades only what is
missing or changed, and records what was stored but not yet recorded.
"""

import json
import multiprocessing
import warnings
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import course_config
from coursekit.class_results import (
    ResultStore,
    code_digest,
    find_submissions,
    identical_model_file_note,
    identical_model_files,
)
from coursekit.class_worker import GradingJob, grade_submission
from coursekit.gradebook_writer import GradebookError, GradebookWriter
from coursekit.class_report import write_class_report
from coursekit.isolation import close_course, close_to_others


class ClassGradingError(RuntimeError):
    """Class grading cannot start (unknown assignment, no scheduler, ...); the message says how to fix it."""


@dataclass
class ClassGradingSummary:
    """What one run of :func:`grade_class` did. Keys of the dicts are ``(assignment, student)``."""

    graded: list = field(default_factory=list)  # graded by a worker in this run
    recorded: list = field(default_factory=list)  # written into nbgrader's gradebook in this run
    unchanged: int = 0  # already graded and recorded, with the same content
    problems: dict = field(default_factory=dict)  # graded, but the submission had a problem (scores 0)
    failures: dict = field(default_factory=dict)  # not graded or not recorded: tried again next run
    flags: dict = field(default_factory=dict)  # notes for the instructor's review (points kept)
    left_out: dict = field(default_factory=dict)  # submitted files not graded or copied (over a limit, links)
    reports: list = field(default_factory=list)  # reports/<assignment>.html written in this run
    exports: list = field(default_factory=list)  # grades in a platform's import layout (--export)
    interrupted: bool = False
    grades_csv: Path = None

    def lines(self):
        """A short report for the instructor."""
        lines = [
            f"{len(self.graded)} graded, {len(self.recorded)} recorded in the gradebook, {self.unchanged} unchanged."
        ]
        lines += [f"  problem  {a}/{s}: {why}" for (a, s), why in sorted(self.problems.items())]
        lines += [f"  FAILED   {a}/{s}: {why}" for (a, s), why in sorted(self.failures.items())]
        lines += [f"  review   {a}/{s}: {note}" for (a, s), notes in sorted(self.flags.items()) for note in notes]
        lines += [f"  left out {a}/{s}: {note}" for (a, s), notes in sorted(self.left_out.items()) for note in notes]
        if self.interrupted:
            lines.append("Interrupted: every finished result is saved; run the same command again to grade the rest.")
        elif self.failures:
            lines.append("Run the same command again to retry what failed.")
        if self.grades_csv:
            lines.append(f"Grades: {self.grades_csv}")
        lines += [f"Export: {path}" for path in self.exports]
        lines += [f"Class report: {path}" for path in self.reports]
        return lines


def grade_class(
    root=None,
    assignments=None,
    workers=None,
    scheduler=None,
    force=False,
    grade=grade_submission,
    progress=True,
    exports=(),
    students=None,
):
    """Grade every new or changed submission of ``assignments`` in the course folder ``root``.

    Parameters
    ----------
    root : path, default course_config.ROOT
        The course folder (``nbgrader_config.py``, ``source/``, ``submitted/``, ``gradebook.db``).
        Its private folders (:func:`coursekit.isolation.close_course`, ``.class_grading/``
        included) are closed to the sandbox's user before any submission is graded, and
        again at the end.
    assignments : list of str, default every lab in course_config.LABS
    workers : int, default course_config.CLASS_GRADING_WORKERS
        Local worker processes; ignored when ``scheduler`` is given.
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:8786``): grade on its workers instead.
    force : bool
        Regrade every submission, even unchanged ones.
    grade : callable
        ``grade(GradingJob) -> SubmissionResult``; :func:`coursekit.class_worker.grade_submission`
        (the tests give a cheap stand-in). Must be importable by the workers.
    progress : bool
        Show a progress bar on stderr.
    exports : sequence of {"canvas", "moodle"}
        Also export the grades in these platforms' import layouts (``grades_canvas.csv``, ...).
    students : collection of str, optional
        Grade only these students' submissions (default: everyone's); the others stay as they are.

    Returns
    -------
    ClassGradingSummary
    """
    root = Path(root or course_config.ROOT).resolve()
    close_course(root)  # before any worker starts: student code must not read this course's private folders
    store = ResultStore.for_course(root)
    writer = GradebookWriter(root, store)
    summary = ClassGradingSummary()
    todo = deque()
    for assignment in _assignments(writer, root, assignments):
        in_gradebook = writer.students_with_submissions(assignment)
        for submission in find_submissions(root, assignment):
            if students is not None and submission.student not in students:
                continue
            stored = store.load(assignment, submission.student)
            if force or stored is None or stored.fingerprint != submission.fingerprint():
                todo.append(submission)
            elif store.is_recorded(stored) and submission.student in in_gradebook:
                summary.unchanged += 1
            else:  # graded, but not yet in the gradebook (an interruption), or the gradebook was replaced
                _record(writer, stored, summary)
    try:
        if todo:
            _grade_all(
                todo, grade, workers or course_config.CLASS_GRADING_WORKERS, scheduler, store, writer, summary, progress
            )
        for assignment in _assignments(writer, root, assignments):
            _collect_flags(store, assignment, summary)
        if not summary.interrupted:
            summary.grades_csv = writer.export_grades()
            summary.exports = [_export(root, platform) for platform in exports]
            summary.reports = [
                write_class_report(root, assignment) for assignment in _assignments(writer, root, assignments)
            ]
    finally:
        close_course(root)  # whatever nbgrader made during the run
    return summary


def _export(root, platform):
    from coursekit.course import export_grades

    path = Path(root) / f"grades_{platform}.csv"
    path.touch(mode=0o640)
    close_to_others([path])
    export_grades(root, path, platform)
    return path


def _collect_flags(store, assignment, summary):
    """The graders' notes for review, and identical model files, over every stored result."""
    results = store.results(assignment)
    for student, result in results.items():
        notes = list(result.report.flags)
        if notes:
            summary.flags[(assignment, student)] = notes
    for student, others in identical_model_files(results).items():
        summary.flags.setdefault((assignment, student), []).append(identical_model_file_note(others))


def _assignments(writer, root, requested):
    known = writer.known_assignments()
    if requested:
        for assignment in requested:
            course_config.lab_settings(assignment)  # a KeyError that lists the labs
            if assignment not in known:
                raise ClassGradingError(
                    f"Assignment {assignment!r} is not in the gradebook of {root}: release "
                    f"it first (`make release` or `nbgrader generate_assignment {assignment}`)."
                )
        return list(requested)
    released = [lab.assignment for lab in course_config.LABS if lab.assignment in known]
    if not released:
        raise ClassGradingError(
            f"No lab is released in the gradebook of {root}: run `make release` (nbgrader "
            "generate_assignment) and collect submissions into submitted/ first."
        )
    return released


def _job(submission):
    """(fingerprint, GradingJob) from one reading of the submitted files."""
    files = submission.files()
    source = json.loads(submission.source_notebook.read_text(encoding="utf-8"))
    kernel = source.get("metadata", {}).get("kernelspec", {}).get("name", "python3")
    job = GradingJob(
        submission.assignment,
        submission.student,
        submission.source_notebook.name,
        files,
        kernel_name=kernel,
        code_digest=code_digest(submission.assignment),
    )
    return submission.fingerprint(files), job


def _grade_all(todo, grade, workers, scheduler, store, writer, summary, progress):
    """Grade ``todo`` on the executor, storing and recording each result as it arrives."""
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="submission", desc="grading", disable=not progress)
    with _executor(workers, scheduler) as (executor, slots):
        in_flight = {}
        try:
            while todo or in_flight:
                while todo and len(in_flight) < 2 * slots:  # read files only shortly before they are needed
                    submission = todo.popleft()
                    fingerprint, job = _job(submission)
                    in_flight[executor.submit(grade, job)] = (submission, fingerprint)
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    submission, fingerprint = in_flight.pop(future)
                    _finish(future, submission, fingerprint, store, writer, summary, bar)
                    bar.update()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            for future in in_flight:
                future.cancel()
            bar.close()


@contextmanager
def _executor(workers, scheduler):
    """(a concurrent.futures executor, how many submissions it grades at once)."""
    if scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="20s")
        except OSError as error:
            raise ClassGradingError(
                f"Could not reach the Dask scheduler at {scheduler} ({error}). Start one with `dask scheduler`, "
                f"and workers with `dask worker {scheduler} --nthreads 1` on machines that have this kit and "
                "its .venv (README.md, Grading a whole class)."
            ) from error
        # Each job carries its submission's files (a model file is a few MB); Dask warns about large tasks.
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        executor = client.get_executor(pure=False)
        try:
            yield executor, max(1, sum(client.nthreads().values()))
        finally:
            executor.shutdown(wait=False)
            client.close()
    else:
        # spawn: workers start clean, whatever threads this process runs (the progress bar's, nbgrader's).
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield executor, workers
        finally:
            executor.shutdown(wait=False, cancel_futures=True)


def _finish(future, submission, fingerprint, store, writer, summary, bar):
    """Store and record the result of one finished future."""
    key = (submission.assignment, submission.student)
    try:
        result = future.result()
    except KeyboardInterrupt:
        raise
    except Exception as error:  # the worker failed, not the submission: nothing stored, retried next run
        summary.failures[key] = f"{type(error).__name__}: {error}"
        bar.write(f"FAILED {submission.student}/{submission.assignment}: {summary.failures[key]}")
        return
    result.fingerprint = fingerprint
    result.left_out = submission.left_out()  # also at the top of the feedback (NoteLeftOutFiles)
    if result.left_out:
        summary.left_out[key] = result.left_out
    store.save(result)
    summary.graded.append(key)
    problem = result.any_problem()
    if problem:
        summary.problems[key] = problem
        bar.write(f"problem {submission.student}/{submission.assignment}: {problem}")
    _record(writer, result, summary)


def _record(writer, result, summary):
    key = (result.assignment, result.student)
    try:
        writer.record(result)
    except GradebookError as error:
        summary.failures[key] = str(error)
    else:
        summary.recorded.append(key)
