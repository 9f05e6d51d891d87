"""pytest support for the hidden graders.

Each hidden test is marked with the nbgrader grade id it scores::

    @pytest.mark.grade_id("test_softmax")
    def test_softmax_is_stable(student): ...

and receives the notebook under test via ``--notebook PATH``. With ``--report
FILE`` the run writes one result per grade id: passed when every test with that
id passed, with the students' messages of those that failed. This is what
:mod:`coursekit.grading` and the nbgrader plugin read.

``grader_tests/conftest.py`` pulls this module in with ``from
coursekit.pytest_plugin import *``.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from coursekit.atomic_files import write_text_atomically
from coursekit.checks import GRADER_MEASUREMENTS, INSTRUCTOR_FLAGS, CheckFailed

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_collection_finish",
    "pytest_runtest_makereport",
    "pytest_fixture_setup",
    "pytest_sessionfinish",
    "pytest_unconfigure",
    "notebook_path",
    "submission_dir",
    "fashion_mnist",
]

_OUTCOMES = pytest.StashKey[dict]()
_COLLECTED = pytest.StashKey[dict]()  # grade id -> node ids of its tests
_TIMES = pytest.StashKey[dict]()  # where the graders' seconds went (GradingReport.timings)
_EXIT_STATUS = pytest.StashKey[int]()
_IMPORTED = time.time()  # the graders' process has started Python and pytest by now


def pytest_addoption(parser):
    group = parser.getgroup("coursekit", "hidden graders")
    group.addoption("--notebook", help="the submitted notebook to grade (.ipynb)")
    group.addoption("--report", help="write the per-grade-id results to this JSON file")
    group.addoption(
        "--exit-when-done",
        action="store_true",
        help="end the process as soon as pytest is done, without the interpreter's teardown",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "grade_id(name): the nbgrader grade id this test scores")
    config.stash[_OUTCOMES] = {}
    config.stash[_COLLECTED] = {}
    config.stash[_TIMES] = {"plugin_imported": _IMPORTED, "checks_s": {}, "session_fixtures_s": {}}


def pytest_collection_finish(session):
    session.config.stash[_TIMES]["collected"] = time.time()  # the grader module and its imports are loaded
    for item in session.items:
        marker = item.get_closest_marker("grade_id")
        if marker is not None:
            session.config.stash[_COLLECTED].setdefault(marker.args[0], set()).add(item.nodeid)


@pytest.fixture(scope="session")
def notebook_path(request):
    """The submitted notebook given with ``--notebook``."""
    value = request.config.getoption("--notebook")
    if not value:
        pytest.fail("Give the notebook to grade: pytest grader_tests --notebook PATH", pytrace=False)
    path = Path(value).resolve()
    if not path.is_file():
        pytest.fail(f"No notebook at {path}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def submission_dir(notebook_path):
    """The folder of the submitted notebook, where the saved model must be."""
    return notebook_path.parent


@pytest.fixture(scope="session")
def fashion_mnist():
    """Fashion-MNIST as the grader loads it itself: ((x_train, y_train), (x_test, y_test))."""
    from coursekit.data import load_fashion_mnist

    return load_fashion_mnist()


def student_message(excinfo):
    """What a student may read about a failure: the check's own message, or a grader problem."""
    error = excinfo.value
    if isinstance(error, CheckFailed):
        return str(error)
    if isinstance(error, pytest.fail.Exception):
        return str(error)
    return f"The grader could not complete this check ({type(error).__name__}: {str(error)[:300]})."


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Time each session fixture (data, the saved model's evaluation, cached features): shared by checks."""
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        if fixturedef.scope == "session":
            fixtures = request.config.stash[_TIMES]["session_fixtures_s"]
            fixtures[fixturedef.argname] = round(time.perf_counter() - started, 2)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _record_outcome(item, call, report)
    if report.when == "teardown":  # the report so far: a run stopped at its time limit keeps the checks it finished
        _write_report(item.config, finished=False)
    return report


def _record_outcome(item, call, report):
    marker = item.get_closest_marker("grade_id")
    if marker is None:
        return
    grade_id = marker.args[0]
    spent = item.config.stash[_TIMES]["checks_s"]
    spent[grade_id] = round(spent.get(grade_id, 0.0) + report.duration, 2)  # setup, call and teardown
    outcomes = item.config.stash[_OUTCOMES].setdefault(grade_id, {"tests": {}, "messages": []})
    if report.failed:
        outcomes["tests"][item.nodeid] = "failed"
        message = student_message(call.excinfo)
        if message not in outcomes["messages"]:  # several tests of one check may fail for one reason
            outcomes["messages"].append(message)
    elif report.skipped and call.excinfo is not None:
        outcomes["tests"][item.nodeid] = "failed"
        outcomes["messages"].append(f"Not checked: {call.excinfo.value}")
    elif report.when == "call":
        outcomes["tests"].setdefault(item.nodeid, "passed")


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)
    _write_report(session.config, finished=True)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """``--exit-when-done``: the report is written and pytest has printed its summary; Python's teardown of
    TensorFlow and Keras would add seconds to every grading (the profile in README.md), and the graders'
    process owns nothing that needs it (the sandbox's children and folders are gone by now)."""
    if config.getoption("--exit-when-done", default=False):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 0))


def _write_report(config, finished):
    """``--report``: per grade id, passed only when every one of its tests ran and passed. ``complete`` says
    whether all of a check's tests have run; ``finished`` whether the whole run ended (not stopped midway)."""
    path = config.getoption("--report", default=None)
    if not path:
        return
    checks = {}
    collected = config.stash[_COLLECTED]
    for grade_id, outcome in config.stash[_OUTCOMES].items():
        complete = set(outcome["tests"]) >= collected.get(grade_id, set())
        passed = bool(outcome["tests"]) and all(v == "passed" for v in outcome["tests"].values())
        checks[grade_id] = {
            "passed": passed and complete,
            "complete": complete,
            "messages": outcome["messages"],
            "tests": outcome["tests"],
        }
    notebook = config.getoption("--notebook", default=None)
    report = {
        "notebook": notebook,
        "finished": finished,
        "checks": checks,
        "flags": list(INSTRUCTOR_FLAGS),
        "measurements": dict(GRADER_MEASUREMENTS),
        "timings": {**config.stash[_TIMES], "written": time.time()},
    }
    write_text_atomically(path, json.dumps(report, indent=1))  # a run killed while writing leaves the last report whole
