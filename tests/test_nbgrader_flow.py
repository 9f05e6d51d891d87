"""The whole nbgrader flow on a temporary course: generate, submit, autograde, feedback, export.

The course is the class of tests/lab1_class.py, shared with tests/test_untrusted.py: the two demo
students here are autograded one at a time, and timed.
"""

import csv

import pytest

import course_config
from coursekit.demo import lost_points

import lab1_class

LAB = course_config.LAB1
STUDENTS = lab1_class.DEMO_STUDENTS


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    return lab1_class.autograded_class(tmp_path_factory, STUDENTS)


def test_reference_gets_every_autograded_point(graded_course):
    scores = graded_course.rows()["demo_reference"]["scores"]
    assert scores and all(score == maximum for score, maximum in scores.values())


def test_flawed_submission_loses_exactly_its_check_with_a_message(graded_course):
    row = graded_course.rows()["demo_syntax_error"]
    assert lost_points(row) == {"test_softmax"}
    assert "SyntaxError" in row["reasons"]["test_softmax"]


def test_feedback_shows_messages_but_no_hidden_tests_or_mark_schemes(graded_course):
    html = graded_course.feedback("demo_syntax_error")
    assert "SyntaxError" in html
    for marker in ("BEGIN HIDDEN TESTS", "Hidden check", "BEGIN MARK SCHEME", "grader_tests/test_"):
        assert marker not in html


def test_grades_are_exported_where_asked(graded_course):
    with open(graded_course.grades_csv) as handle:  # not nbgrader's default grades.csv
        exported = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert set(STUDENTS) <= set(exported)
    assert float(exported["demo_reference"]["raw_score"]) > float(exported["demo_syntax_error"]["raw_score"])


def test_re_execution_does_not_overwrite_the_submitted_model(graded_course):
    root = graded_course.root
    submitted = root / "submitted" / "demo_reference" / LAB.assignment / LAB.model_file
    autograded = root / "autograded" / "demo_reference" / LAB.assignment / LAB.model_file
    assert autograded.read_bytes() == submitted.read_bytes()


def test_one_submission_grades_within_two_minutes(graded_course):
    assert set(graded_course.seconds) == set(STUDENTS)
    assert max(graded_course.seconds.values()) < 120, graded_course.seconds
