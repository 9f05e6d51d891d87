"""Shared fixtures: demo/test submissions written once per session, and graded once."""

import shutil

import pytest

import course_config
from coursekit import course
from coursekit.grading import grade_notebook
from coursekit.submissions import LAB1_SUBMISSIONS, make_weak_model, write_submission

SUBMISSIONS = {submission.student: submission for submission in LAB1_SUBMISSIONS}


def released_course(root):
    """An empty course folder with this kit's source/ and nbgrader_config.py, released with nbgrader."""
    shutil.copytree(course_config.SOURCE_DIR, root / "source")
    shutil.copy(course_config.ROOT / "nbgrader_config.py", root)
    course.generate_release(root, [course_config.LAB1.assignment])
    return root


@pytest.fixture(scope="session")
def weak_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("weak") / course_config.LAB1.model_file
    make_weak_model(path)
    return path


@pytest.fixture(scope="session")
def lab1_reports(tmp_path_factory, weak_model):
    """Grading report of every Lab 1 submission, computed on first use and kept for the session."""
    cache = {}

    def report_for(student):
        if student not in cache:
            folder = tmp_path_factory.mktemp(student)
            notebook = write_submission(SUBMISSIONS[student], folder, weak_model_path=weak_model)
            cache[student] = grade_notebook(notebook, course_config.LAB1.assignment)
        return cache[student]

    return report_for
