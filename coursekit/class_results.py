"""Class grading's memory: one result file per submission, keyed by a fingerprint.

A submission's result is written (atomically) as soon as it is graded, so a crash,
a timeout or Ctrl-C loses nothing that finished. A later run compares fingerprints
and grades only what is missing or changed. The fingerprint covers everything the
grade depends on: the submitted files, the assignment's source notebook and the
grading code (:data:`GRADING_CODE`, by what it does: :func:`code_digest`).

Layout, in the course folder::

    .class_grading/ASSIGNMENT/STUDENT.json       the result (SubmissionResult.to_dict)
    .class_grading/ASSIGNMENT/STUDENT.recorded   its fingerprint, once it is in nbgrader's gradebook

The results hold every student's executed notebook and verdicts: the folder is made closed
to others (the sandbox's user among them) before the first file is written into it, even
in a course folder that is open to all.
"""

import ast
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import course_config
from coursekit.atomic_files import write_text_atomically
from coursekit.course_layout import CourseLayout
from coursekit.grading import CheckResult, GradingReport, grader_file
from coursekit.isolation import close_to_others
from coursekit.submission_files import select_files

# The kit's files that decide a result, relative to course_config.ROOT: the numbers, the hidden graders,
# and the modules a worker runs to grade a submission and the recording runs to turn it into points. A
# change to what any of them does (not to a docstring or a comment: :func:`code_digest`) makes every
# submission be regraded on the next run. The demo, the reports, the exports, the benchmark and the
# reference runs are left out: editing them regrades nothing.
GRADING_CODE = (
    "course_config.py",
    "grader_tests/*.py",
    *(
        f"coursekit/{name}.py"
        for name in (
            "_model_child",
            "_sandbox_child",
            "atomic_files",
            "checks",
            "class_results",
            "class_worker",
            "course_layout",
            "data",
            "gradebook_writer",
            "grading",
            "isolation",
            "kernel_sandbox",
            "model_files",
            "nbgrader_preprocessors",
            "notebooks",
            "pytest_plugin",
            "sandbox",
            "saved_model",
            "submission_files",
            "vgg16",
        )
    ),
)


def _digest(parts):
    digest = hashlib.sha256()
    for name, content in parts:
        for part in (name.encode("utf-8"), content):
            digest.update(len(part).to_bytes(8, "big"))  # lengths first: no two inputs hash alike
            digest.update(part)
    return digest.hexdigest()


def code_digest(assignment, root=None):
    """sha256 of the grading code of ``assignment`` (:data:`GRADING_CODE` under ``root``, default the kit's folder).

    The same on every worker with the same kit. A Python file counts by what it does: its syntax tree
    without docstrings (:func:`code_of`), so rewording a docstring or a comment changes nothing.
    """
    root = Path(root or course_config.ROOT)
    files = {path for pattern in GRADING_CODE for path in root.glob(pattern)}
    if root == course_config.ROOT:
        files.add(grader_file(assignment))
    return _digest((path.relative_to(root).as_posix(), code_of(path)) for path in sorted(files))


def code_of(path):
    """What decides what the file at ``path`` does: for Python, the dump of its syntax tree without
    docstrings (comments are not in it); for any other file, its bytes. Parsed once per version of the file."""
    info = os.stat(path)
    key = (str(path), info.st_mtime_ns, info.st_size)
    if key not in _CODE_OF:
        _CODE_OF[key] = _code_of(Path(path).read_bytes(), path)
    return _CODE_OF[key]


_CODE_OF = {}


def _code_of(content, path):
    if Path(path).suffix != ".py":
        return content
    tree = ast.parse(content, filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree).encode("utf-8")


@dataclass(frozen=True)
class Submission:
    """One student's submission of one assignment, in ``ROOT/submitted/STUDENT/ASSIGNMENT/``."""

    root: Path
    assignment: str
    student: str

    @property
    def folder(self):
        return CourseLayout(self.root).submission(self.student, self.assignment)

    @property
    def source_notebook(self):
        """The instructor's notebook of the assignment, in the course's source/ folder."""
        lab = course_config.lab_settings(self.assignment)
        return CourseLayout(self.root).source_notebook(self.assignment, lab.notebook)

    def selection(self):
        """Which submitted files are graded and sent (:func:`coursekit.submission_files.select_files`)."""
        return select_files(self.folder, self.assignment)

    def files(self):
        """The submitted files that are graded: ``{relative path: bytes}``, sorted by path.

        Only what :meth:`selection` keeps is read: never a link, extra files within the limits
        of course_config.py; :meth:`left_out` says what was not.
        """
        return {name: (self.folder / name).read_bytes() for name in self.selection().kept}

    def left_out(self):
        """Notes for the student on the files that were not graded or copied (empty when none)."""
        return self.selection().notes()

    def fingerprint(self, files=None):
        """sha256 of the submitted files (those graded, and the notes on the others), the source notebook and
        the grading code."""
        files = self.files() if files is None else files
        extra = [
            ("source notebook", self.source_notebook.read_bytes()),
            ("grading code", code_digest(self.assignment).encode()),
            ("left out", "\n".join(self.left_out()).encode()),
        ]
        return _digest([("submitted/" + name, content) for name, content in files.items()] + extra)


def find_submissions(root, assignment):
    """The submissions of ``assignment`` in ``root/submitted/``, sorted by student id."""
    submitted = CourseLayout(root).submitted
    if not submitted.is_dir():
        return []
    return [
        Submission(Path(root), assignment, folder.name)
        for folder in sorted(submitted.iterdir())
        if (folder / assignment).is_dir()
    ]


def report_to_dict(report):
    """A :class:`~coursekit.grading.GradingReport` as JSON-able data."""
    return {
        "problem": report.problem,
        "flags": list(report.flags),
        "unfinished": report.unfinished,
        "measurements": dict(report.measurements),
        "timings": dict(report.timings),
        "checks": {
            grade_id: {"passed": result.passed, "message": result.message} for grade_id, result in report.checks.items()
        },
    }


def report_from_dict(data):
    """The :class:`~coursekit.grading.GradingReport` that :func:`report_to_dict` wrote."""
    checks = {
        grade_id: CheckResult(grade_id, bool(entry["passed"]), entry["message"])
        for grade_id, entry in data.get("checks", {}).items()
    }
    return GradingReport(
        checks,
        data.get("problem", ""),
        list(data.get("flags", [])),
        data.get("unfinished", ""),
        dict(data.get("measurements", {})),
        dict(data.get("timings") or {}),
    )


@dataclass
class SubmissionResult:
    """What grading one submission found, from the worker to the gradebook.

    A worker builds it (:func:`coursekit.class_worker.grade_submission`), :func:`coursekit.classgrading.grade_class`
    adds the fingerprint and the notes on files left out and stores it (:class:`ResultStore`, as the JSON of
    :meth:`to_dict`), and the recording (:mod:`coursekit.gradebook_writer`), the class report and the summary
    read it. No grade comes from anything but :attr:`report`, the hidden graders' verdicts.

    Parameters
    ----------
    assignment, student : str
        nbgrader's ids.
    problem : str
        Why the notebook could not be read ("" when it could): every check that needs it scores 0.
    report : GradingReport
        The hidden graders' report (their own ``problem``, ``unfinished``, ``flags``, ``measurements``).
    executed_notebook : dict or None
        The quick-mode re-run as notebook JSON, every output bounded; None when the notebook could not be read.
    files : list of str
        The submitted files the worker received (those graded), by relative path.
    model_sha256 : str
        sha256 of the submitted model file ("" when there is none): identical files are flagged.
    seconds : float
        How long the worker took.
    timings : dict
        Where those seconds went (:func:`coursekit.class_worker.quick_mode_timings`, the graders' in the report).
    host : str
        The worker's machine.
    fingerprint : str
        :meth:`Submission.fingerprint` of what was graded, set when the result is stored.
    left_out : list of str
        Notes for the student on the submitted files that were not graded, set when the result is stored.
    """

    assignment: str
    student: str
    problem: str = ""
    report: GradingReport = field(default_factory=lambda: GradingReport({}))
    executed_notebook: dict = None
    files: list = field(default_factory=list)
    model_sha256: str = ""
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    host: str = ""
    fingerprint: str = ""
    left_out: list = field(default_factory=list)

    def scored_report(self):
        """The report the grades come from.

        When the notebook could not be read (:attr:`problem`) the graders still graded what needs no notebook
        (the saved model) and failed the rest with the notebook's problem; a result without their verdicts
        fails every check with the problem.
        """
        if self.problem and not self.report.checks:
            return GradingReport({}, self.problem)
        return self.report

    def any_problem(self):
        """The first of: the notebook's problem, the graders' problem, their time limit's message ("" if none)."""
        return self.problem or self.report.problem or self.report.unfinished

    def to_dict(self):
        """The result as JSON-able data (what :class:`ResultStore` writes)."""
        data = {name.name: getattr(self, name.name) for name in fields(self)}
        data["report"] = report_to_dict(self.report)
        data["files"], data["left_out"] = list(self.files), list(self.left_out)
        return data

    @classmethod
    def from_dict(cls, data):
        """The result that :meth:`to_dict` wrote (a key it lacks takes its default; unknown keys are ignored).

        Raises
        ------
        ValueError
            ``data`` is not a stored result (not a mapping, no assignment or student, a report of the wrong shape).
        """
        try:
            known = {name.name for name in fields(cls)}
            values = {key: value for key, value in data.items() if key in known}
            values["report"] = report_from_dict(values.get("report") or {})
            result = cls(**values)
        except (AttributeError, KeyError, TypeError) as error:
            raise ValueError(f"not a stored class-grading result ({type(error).__name__}: {error})") from error
        if not isinstance(result.assignment, str) or not isinstance(result.student, str):
            raise ValueError("not a stored class-grading result (no assignment or student)")
        return result


class ResultStore:
    """The result files of class grading in one folder (see the module's docstring)."""

    def __init__(self, folder):
        self.folder = Path(folder)

    @classmethod
    def for_course(cls, root):
        return cls(CourseLayout(root).class_grading_results)

    def path(self, assignment, student, suffix=".json"):
        return self.folder / assignment / f"{student}{suffix}"

    def load(self, assignment, student):
        """The stored :class:`SubmissionResult`, or None if there is none (or only an unreadable one: it is
        graded again)."""
        try:
            return SubmissionResult.from_dict(json.loads(self.path(assignment, student).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None

    def save(self, result):
        """Write ``result`` atomically (a temporary file, then a rename): never half a file."""
        self._write(self.path(result.assignment, result.student), json.dumps(result.to_dict()))

    def results(self, assignment):
        """Every stored result of ``assignment``, by student."""
        found = {}
        for path in sorted((self.folder / assignment).glob("*.json")):
            result = self.load(assignment, path.stem)
            if result is not None:
                found[path.stem] = result
        return found

    def is_recorded(self, result):
        """Whether ``result`` (this fingerprint) is already in nbgrader's gradebook."""
        marker = self.path(result.assignment, result.student, ".recorded")
        return marker.is_file() and marker.read_text(encoding="utf-8") == result.fingerprint

    def mark_recorded(self, result):
        self._write(self.path(result.assignment, result.student, ".recorded"), result.fingerprint)

    def _write(self, path, text):
        self._make_folder()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, text)

    def _make_folder(self):
        """The results folder, closed to others before anything is written into it."""
        self.folder.mkdir(mode=0o750, parents=True, exist_ok=True)
        close_to_others([self.folder])  # also one made open by an earlier version of the kit


def identical_model_files(results):
    """``{student: [other students]}`` for submissions whose model files are byte for byte the same."""
    return {
        student: [other for other in group if other != student]
        for group in model_file_groups(results)
        for student in group
    }


def model_file_groups(results):
    """Groups (sorted lists of students, largest group first) that submitted byte-for-byte the same model file."""
    by_digest = {}
    for student, result in results.items():
        digest = result.model_sha256
        if digest:
            by_digest.setdefault(digest, []).append(student)
    groups = [sorted(group) for group in by_digest.values() if len(group) > 1]
    return sorted(groups, key=lambda group: (-len(group), group))


NAMED_IN_A_NOTE = 5  # the other students a note names; a larger group is listed in full once, in the class report


def identical_model_file_note(others, whole_group="the class report lists the whole group"):
    """The note for review of a student whose model file is also that of ``others``; ``whole_group`` says where a
    group too large for the note is listed."""
    others = sorted(others)
    named = ", ".join(others[:NAMED_IN_A_NOTE])
    if len(others) > NAMED_IN_A_NOTE:
        named += f" and {len(others) - NAMED_IN_A_NOTE} more ({whole_group})"
    return f"its model file is byte for byte the same as that of {named}"
