"""nbgrader configuration of the course.

Numbers come from course_config.py. Changes to nbgrader's standard flow: autograder test
cells are scored by the hidden graders in grader_tests/, which run outside the student's
kernel (coursekit.nbgrader_preprocessors.HiddenGraders); the re-execution's kernel runs isolated
like the graders' sandbox (coursekit.kernel_sandbox.SandboxedExecute in place of Execute);
and sanitizing restores the released cells' roles (RestoreGradedCells).
"""

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    DeduplicateIds,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)

import course_config
from coursekit.kernel_sandbox import SandboxedExecute
from coursekit.nbgrader_preprocessors import (
    CleanSubmission,
    ClearOutputExceptNotRerun,
    HiddenGraders,
    NoteLeftOutFiles,
    RestoreGradedCells,
    SanitizeSubmission,
    grade_unreadable_notebooks_without_them,
)
from coursekit.submission_files import bound_nbgrader_copies

c = get_config()  # noqa: F821  (provided by nbgrader)

c.CourseDirectory.course_id = course_config.COURSE_ID

# nbgrader copies a submission's other files into autograded/ and feedback/: only the notebook, the model file and
# extra files within course_config's SUBMISSION_EXTRA_* limits, never a link (coursekit/submission_files.py); the
# files left out are named at the top of the feedback (NoteLeftOutFiles, below).
bound_nbgrader_copies()

# A submitted notebook nbgrader cannot read (not UTF-8, not JSON, too large) is graded without it, as in class
# grading: a note and the released cells stand in for it, the hidden graders grade the other files (the saved model).
grade_unreadable_notebooks_without_them()

# Re-execution at grading time: the notebooks skip full training when NBGRADER_EXECUTION is
# set, but a cell may still take longer than nbgrader's default of 30 s. (Settings of Execute apply to
# SandboxedExecute, below.)
c.Execute.timeout = course_config.NOTEBOOK_CELL_TIMEOUT_S
c.Execute.allow_errors = True

# Sanitizing a submission: junk metadata, non-text sources and hidden-test markers in student code
# cleaned first (CleanSubmission), nbgrader's own steps, plus the released cells' roles restored from the
# gradebook, so a test cell turned into an answer cell (or a duplicated grade id) is still graded. Outputs
# are cleared, except those of the optional experiments, which the re-run does not repeat
# (course_config.NOT_RERUN_TAG).
c.Autograde.sanitize_preprocessors = [
    CleanSubmission,
    ClearOutputExceptNotRerun,
    DeduplicateIds,
    OverwriteKernelspec,
    RestoreGradedCells,
    OverwriteCells,
    CheckCellMetadata,
]

# nbgrader's Execute, with the student's kernel in new network and PID namespaces, as the sandbox's
# user where the grader is root, with resource limits, in a scratch copy of the submission's folder
# (coursekit/kernel_sandbox.py, docs/threat_model.md). Execute ignores c.Execute.kernel_manager_class.
c.Autograde.autograde_preprocessors = [
    SandboxedExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    NoteLeftOutFiles,
    SanitizeSubmission,
    HiddenGraders,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Feedback shows points and messages, never the hidden tests or the mark schemes, and no active content
# from the submission (no script, event handler or javascript output: SanitizeSubmission, first).
c.GenerateFeedback.preprocessors = [
    SanitizeSubmission,
    GetGrades,
    CSSHTMLHeaderPreprocessor,
    ClearHiddenTests,
    ClearMarkScheme,
]
c.HTMLExporter.sanitize_html = True
