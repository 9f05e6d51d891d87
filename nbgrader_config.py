"""nbgrader configuration of the course.

Numbers come from course_config.py. The one change to nbgrader's standard flow:
autograder test cells are scored by the hidden graders in grader_tests/, which
run outside the student's kernel (coursekit.nbgrader_plugin.HiddenGraders).
"""

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties, CheckCellMetadata, ClearHiddenTests, ClearMarkScheme, ClearOutput, DeduplicateIds,
    Execute, GetGrades, IgnorePattern, LimitOutput, OverwriteCells, OverwriteKernelspec, SaveAutoGrades,
)

import course_config
from coursekit.nbgrader_plugin import HiddenGraders, RestoreGradedCells

c = get_config()  # noqa: F821  (provided by nbgrader)

c.CourseDirectory.course_id = course_config.COURSE_ID

# Re-execution at grading time: the notebooks skip full training when NBGRADER_EXECUTION is
# set, but a cell may still take longer than nbgrader's default of 30 s.
c.Execute.timeout = course_config.NOTEBOOK_CELL_TIMEOUT_S
c.Execute.allow_errors = True

# Sanitizing a submission: nbgrader's own steps, plus the released cells' roles restored from the
# gradebook, so a test cell turned into an answer cell (or a duplicated grade id) is still graded.
c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    DeduplicateIds,
    OverwriteKernelspec,
    RestoreGradedCells,
    OverwriteCells,
    CheckCellMetadata,
]

c.Autograde.autograde_preprocessors = [
    Execute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    HiddenGraders,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Feedback shows points and messages, never the hidden tests or the mark schemes.
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, ClearHiddenTests, ClearMarkScheme]
