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


@dataclass(frozen=True)
class CourseLayout:
    """The paths of the course folder ``root``."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def source(self):
        return self.root / course_config.SOURCE_FOLDER

    @property
    def release(self):
        return self.root / course_config.RELEASE_FOLDER

    @property
    def submitted(self):
        return self.root / course_config.SUBMITTED_FOLDER

    @property
    def autograded(self):
        return self.root / course_config.AUTOGRADED_FOLDER

    @property
    def feedback(self):
        return self.root / course_config.FEEDBACK_FOLDER

    @property
    def gradebook(self):
        return self.root / course_config.GRADEBOOK_FILE

    @property
    def db_url(self):
        """nbgrader's ``CourseDirectory.db_url`` for this course."""
        return f"sqlite:///{self.gradebook}"

    @property
    def grades_csv(self):
        return self.root / course_config.GRADES_CSV_FILE

    @property
    def reports(self):
        return self.root / course_config.REPORTS_FOLDER

    @property
    def class_grading_results(self):
        return self.root / course_config.CLASS_GRADING_RESULTS

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
