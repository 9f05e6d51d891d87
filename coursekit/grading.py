"""Grade one submitted notebook with the hidden graders.

The graders (``grader_tests/test_<assignment>.py``) run in their own pytest
process (forked from a warm one that has imported Keras, :mod:`coursekit.warm_graders`), never in
the student's kernel; they in turn run the student's functions in a sandbox. The result is one
:class:`CheckResult` per nbgrader grade id.
"""

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import course_config
from coursekit.isolation import KERNEL_PREFIXES, close_course, find_course_roots, isolation
from coursekit.warm_graders import run_pytest


@dataclass
class CheckResult:
    """Outcome of one hidden check (one nbgrader grade id)."""

    grade_id: str
    passed: bool
    message: str = ""


@dataclass
class GradingReport:
    """All checks of one notebook; ``problem`` says why grading itself failed, if it did.

    ``flags`` are notes for the instructor's review (suggestive evidence, points kept).
    ``unfinished`` is the student's message for the checks the graders' time limit left
    ungraded (the checks in ``checks`` were graded before it and keep their result).
    ``measurements`` are the numbers the graders computed (e.g. ``saved_model_test_accuracy``).
    ``timings`` say where the graders' seconds went (:func:`grader_timings`); they decide nothing.
    """

    checks: dict
    problem: str = ""
    flags: list = field(default_factory=list)
    unfinished: str = ""
    measurements: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def result_for(self, grade_id):
        """The result for ``grade_id``; a failed one with an explanation if there is none."""
        if grade_id in self.checks:
            return self.checks[grade_id]
        if self.unfinished:
            return CheckResult(grade_id, False, self.unfinished)
        why = self.problem or f"no hidden check is registered for grade id '{grade_id}'"
        return CheckResult(grade_id, False, f"This check could not be graded: {why}. Tell your instructor.")


def grader_file(assignment):
    """The hidden grader module of an assignment."""
    return course_config.GRADER_TESTS_DIR / f"test_{assignment}.py"


def _shorten(text):
    limit = course_config.FEEDBACK_MESSAGE_CHARS
    return text if len(text) <= limit else text[: limit - 1] + "…"


def graders_environment(env=None):
    """The graders' environment: ``env`` (default ``os.environ``) without what Jupyter and nbgrader set for a
    kernel (:data:`coursekit.isolation.KERNEL_PREFIXES`).

    The graders read none of those, and in a class-grading worker the quick-mode re-run sets
    ``NBGRADER_EXECUTION`` while the graders start beside it: with it, their environment would depend on
    which of the two came first, and each change starts a new warm process (:mod:`coursekit.warm_graders`).
    """
    env = os.environ if env is None else env
    kept = {key: value for key, value in env.copy().items() if not key.startswith(KERNEL_PREFIXES)}
    return {**kept, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}


def grade_notebook(notebook, assignment, timeout=None, course=None):
    """Run the hidden graders of ``assignment`` on ``notebook``.

    The saved model and other files are looked up next to the notebook.

    Parameters
    ----------
    course : path, optional
        The course folder being graded (nbgrader's ``CourseDirectory.root``). Its private
        folders, those of any course folder the notebook or the working folder lies in (one
        with an ``nbgrader_config.py``) and the kit's own are closed to the sandbox's user
        before the graders start (:func:`coursekit.isolation.close_course`).

    Returns
    -------
    GradingReport
    """
    timeout = timeout or course_config.time_limits(assignment)[0]
    try:
        isolation()  # decided here too, so a missing protection is logged where the instructor sees it
    except RuntimeError as error:  # course_config.SANDBOX_REQUIRE_ISOLATION and a protection is missing
        return GradingReport({}, str(error))
    close_course(*dict.fromkeys([*([Path(course).resolve()] if course else []), *find_course_roots(notebook)]))
    tests = grader_file(assignment)
    if not tests.is_file():
        return GradingReport({}, f"there are no hidden graders for '{assignment}' ({tests} is missing)")
    with tempfile.TemporaryDirectory(prefix="coursekit-grade-") as scratch:
        report_path = Path(scratch) / "report.json"
        argv = [
            str(tests),
            "--notebook",
            str(Path(notebook).resolve()),
            "--report",
            str(report_path),
            "--exit-when-done",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(course_config.GRADER_TESTS_DIR),
            "-o",
            "addopts=",
        ]
        env = graders_environment()
        started = time.time()
        timed_out, output = run_pytest(argv, scratch, env, timeout, Path(scratch) / "graders.log")
        if timed_out:  # the checks finished before the limit keep their result; the others fail, saying why
            data = _read_report(report_path)
            checks = {
                grade_id: entry
                for grade_id, entry in data.get("checks", {}).items()
                if entry.get("complete") or "failed" in entry.get("tests", {}).values()
            }  # a failure is final
            return GradingReport(
                _check_results(checks),
                flags=_flags(data),
                unfinished=time_limit_message(timeout),
                measurements=_measurements(data),
                timings=grader_timings(data, started, time.time()),
            )
        if not report_path.exists():
            tail = output.decode("utf-8", "replace").strip().splitlines()[-3:]
            return GradingReport({}, "the hidden graders stopped without a report: " + " | ".join(tail))
        data = _read_report(report_path)
    return GradingReport(
        _check_results(data.get("checks", {})),
        flags=_flags(data),
        measurements=_measurements(data),
        timings=grader_timings(data, started, time.time()),
    )


def time_limit_message(seconds):
    """What a check left ungraded by the graders' time limit says to the student."""
    return (
        f"Not graded: the hidden graders reached their time limit of {seconds:.0f} s for your whole submission "
        "before this check, and the checks graded before it keep their result. Your graded functions or your "
        "model are too slow: each call of a graded function may take at most "
        f"{course_config.SANDBOX_CALL_TIMEOUT_S} s "
        "and should take well under a second; keep the model within the lab's size, and submit again."
    )


def _read_report(path):
    """The graders' report file; {} when it is missing or unreadable (a run stopped before its first check)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _check_results(checks):
    return {
        grade_id: CheckResult(grade_id, bool(entry["passed"]), _shorten(" ".join(entry["messages"])))
        for grade_id, entry in checks.items()
    }


def _flags(data):
    return [_shorten(str(flag)) for flag in data.get("flags", []) if isinstance(flag, str)]


def grader_timings(data, started, ended):
    """Where the graders' wall time went, in seconds: ``wall_s``; ``startup_s`` (Python, pytest, the grader module
    and its imports, until the checks were collected); ``checks_s`` per grade id (each includes the session
    fixtures it was the first to need); ``session_fixtures_s`` (data, the saved model's evaluation, ...);
    ``finish_s`` (after the last report, until the process ended). {} when the report holds none."""
    times = data.get("timings")
    if not isinstance(times, dict):
        return {}

    def seconds_by_name(key):
        return {str(name): float(value) for name, value in times.get(key, {}).items()}

    try:
        collected, written = float(times["collected"]), float(times["written"])
        return {
            "wall_s": round(ended - started, 2),
            "startup_s": round(collected - started, 2),
            "checks_s": seconds_by_name("checks_s"),
            "session_fixtures_s": seconds_by_name("session_fixtures_s"),
            "finish_s": round(ended - written, 2),
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}


def _measurements(data):
    return {
        str(name): float(value)
        for name, value in (data.get("measurements") or {}).items()
        if isinstance(value, (int, float))
    }
