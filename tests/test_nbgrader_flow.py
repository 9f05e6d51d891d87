"""The whole nbgrader flow on a temporary course: generate, submit, autograde, feedback, export."""

import csv
import time

import pytest

import course_config
from coursekit import course
from coursekit.demo import lost_points, submit_demo_students
from coursekit.submissions import LAB1_SUBMISSIONS

from conftest import released_course

LAB = course_config.LAB1
STUDENTS = ("demo_reference", "demo_syntax_error")


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    root = released_course(tmp_path_factory.mktemp("course"))
    submit_demo_students(root, [s for s in LAB1_SUBMISSIONS if s.student in STUDENTS], LAB)
    seconds = {}
    for student in STUDENTS:
        start = time.perf_counter()
        course.autograde(root, LAB.assignment, student)
        seconds[student] = time.perf_counter() - start
    course.generate_feedback(root, LAB.assignment)
    course.export_grades(root, root / "grades.csv")
    return root, seconds


def rows(root):
    return {row["student"]: row for row in course.check_table(root, LAB.assignment, LAB.notebook_id)}


def test_reference_gets_every_autograded_point(graded_course):
    root, _ = graded_course
    scores = rows(root)["demo_reference"]["scores"]
    assert scores and all(score == maximum for score, maximum in scores.values())


def test_flawed_submission_loses_exactly_its_check_with_a_message(graded_course):
    root, _ = graded_course
    row = rows(root)["demo_syntax_error"]
    assert lost_points(row) == {"test_softmax"}
    assert "SyntaxError" in row["reasons"]["test_softmax"]


def test_feedback_shows_messages_but_no_hidden_tests_or_mark_schemes(graded_course):
    root, _ = graded_course
    html = (root / "feedback" / "demo_syntax_error" / LAB.assignment / f"{LAB.notebook_id}.html").read_text()
    assert "SyntaxError" in html
    for marker in ("BEGIN HIDDEN TESTS", "Hidden check", "BEGIN MARK SCHEME", "grader_tests/test_"):
        assert marker not in html


def test_grades_are_exported(graded_course):
    root, _ = graded_course
    with open(root / "grades.csv") as handle:
        exported = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert set(STUDENTS) <= set(exported)
    assert float(exported["demo_reference"]["raw_score"]) > float(exported["demo_syntax_error"]["raw_score"])


def test_re_execution_does_not_overwrite_the_submitted_model(graded_course):
    root, _ = graded_course
    submitted = root / "submitted" / "demo_reference" / LAB.assignment / LAB.model_file
    autograded = root / "autograded" / "demo_reference" / LAB.assignment / LAB.model_file
    assert autograded.read_bytes() == submitted.read_bytes()


def test_one_submission_grades_within_two_minutes(graded_course):
    _, seconds = graded_course
    assert max(seconds.values()) < 120, seconds
