"""One layout of a course folder (coursekit.course_layout): nbgrader's defaults and course_config's paths."""

from nbgrader.coursedir import CourseDirectory

import course_config
from coursekit.course_layout import CourseLayout


def test_the_layout_is_nbgraders_default_layout(tmp_path):
    nbgrader = CourseDirectory(root=str(tmp_path))
    layout = CourseLayout(tmp_path)
    for step, folder in (
        ("source", layout.source),
        ("release", layout.release),
        ("submitted", layout.submitted),
        ("autograded", layout.autograded),
        ("feedback", layout.feedback),
    ):
        assert getattr(nbgrader, f"{step}_directory") == folder.name
    assert nbgrader.db_url == layout.db_url
    assert str(layout.submission("alice", "lab1_dense")) == nbgrader.format_path(
        nbgrader.submitted_directory, "alice", "lab1_dense"
    )


def test_the_kits_own_folder_has_the_same_layout():
    kit = CourseLayout(course_config.ROOT)
    assert (kit.source, kit.release, kit.submitted, kit.autograded, kit.feedback, kit.gradebook, kit.grades_csv) == (
        course_config.SOURCE_DIR,
        course_config.RELEASE_DIR,
        course_config.SUBMITTED_DIR,
        course_config.AUTOGRADED_DIR,
        course_config.FEEDBACK_DIR,
        course_config.GRADEBOOK,
        course_config.GRADES_CSV,
    )
    assert CourseLayout("/elsewhere").submitted != kit.submitted
