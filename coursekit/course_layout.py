"""Where things are in a course folder, for every command: one layout, from the names in course_config.py.

A course folder holds nbgrader's folders under their default names (nbgrader's ``CourseDirectory``:
``{step}/{student}/{assignment}`` with the steps ``source``, ``release``, ``submitted``,
``autograded``, ``feedback``; ``gradebook.db``) and the kit's own files beside them (``grades.csv``,
``reports/``, ``.class_grading/``). ``grade-class --course DIR``, the demo, the class report and
the kit's own folder (course_config's ``*_DIR`` paths) all find them here; a test checks that
nbgrader's defaults are these names.
"""

from dataclasses import dataclass
from pathlib import Path

import course_config


def _in_root(name, doc):
    """A property: the path ``root / course_config.<name>``."""
    return property(lambda self: self.root / getattr(course_config, name), doc=doc)


@dataclass(frozen=True)
class CourseLayout:
    """The paths of the course folder ``root``."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    source = _in_root("SOURCE_FOLDER", "The instructor's notebooks: source/ASSIGNMENT/.")
    release = _in_root("RELEASE_FOLDER", "What students get: release/ASSIGNMENT/.")
    submitted = _in_root("SUBMITTED_FOLDER", "Collected submissions: submitted/STUDENT/ASSIGNMENT/.")
    autograded = _in_root("AUTOGRADED_FOLDER", "nbgrader's autograded copies.")
    feedback = _in_root("FEEDBACK_FOLDER", "The students' feedback pages.")
    gradebook = _in_root("GRADEBOOK_FILE", "nbgrader's gradebook (SQLite).")
    grades_csv = _in_root("GRADES_CSV_FILE", "nbgrader's CSV export of the grades.")
    reports = _in_root("REPORTS_FOLDER", "The class reports (coursekit.class_report).")
    class_grading_results = _in_root("CLASS_GRADING_RESULTS", "Class grading's stored results.")

    @property
    def db_url(self):
        """nbgrader's ``CourseDirectory.db_url`` for this course."""
        return f"sqlite:///{self.gradebook}"

    def submission(self, student, assignment):
        """``submitted/STUDENT/ASSIGNMENT/``."""
        return self.submitted / student / assignment

    def autograded_notebook(self, student, assignment, notebook_id):
        return self.autograded / student / assignment / f"{notebook_id}.ipynb"

    def feedback_page(self, student, assignment, notebook_id):
        return self.feedback / student / assignment / f"{notebook_id}.html"

    def source_notebook(self, assignment, notebook):
        return self.source / assignment / notebook

    def student_folders(self, student, assignment):
        """The folders nbgrader makes for one submission: submitted, autograded and feedback."""
        return tuple(folder / student / assignment for folder in (self.submitted, self.autograded, self.feedback))
