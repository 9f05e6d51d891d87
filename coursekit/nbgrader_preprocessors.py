"""The kit's nbgrader preprocessors: sanitizing, the hidden graders' verdicts, safe pages.

``nbgrader_config.py`` puts them into nbgrader's steps:

- sanitizing (``Autograde.sanitize_preprocessors``): :class:`CleanSubmission` first, then
  :class:`RestoreGradedCells` before nbgrader's ``OverwriteCells``;
- grading (``Autograde.autograde_preprocessors``): :class:`NoteLeftOutFiles`,
  :class:`SanitizeSubmission` and :class:`HiddenGraders`, just before ``SaveAutoGrades``;
- the student's page (``GenerateFeedback.preprocessors``): :class:`SanitizeSubmission` first.

The verdicts. nbgrader scores a test cell from its outputs after re-executing the notebook in
the student's kernel, where the student's code could have changed anything. These
preprocessors run after that execution and *replace* the outputs of every
autograder test cell with the verdict of the hidden graders, which ran in their
own process on the submitted files (:func:`coursekit.grading.grade_notebook`):

- passed: a line on stdout, so nbgrader gives full points;
- failed: an error output holding the student's message, so nbgrader gives 0.

``HiddenGraders`` runs the graders itself. It goes in
``Autograde.autograde_preprocessors`` just before ``SaveAutoGrades`` (see
``nbgrader_config.py``). Whatever the kernel printed in a test cell, including
stderr, no longer decides the grade.

Class grading (:mod:`coursekit.classgrading`) does the slow work, the graders and
the quick-mode re-execution, in parallel workers, and then lets nbgrader record
each submission with two stand-ins that read the stored result, beside the
gradebook writer (:mod:`coursekit.gradebook_writer`): ``StoredExecution`` in place
of nbgrader's ``Execute`` and ``StoredVerdicts`` in place of ``HiddenGraders``
(a :class:`VerdictsPreprocessor` like it). Nothing here imports class grading.
"""

from pathlib import Path
from types import SimpleNamespace

import nbformat
from nbformat.v4 import new_output
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from nbconvert.preprocessors.sanitize import SanitizeHTML
from nbgrader.preprocessors import ClearOutput, NbGraderPreprocessor, OverwriteCells
from traitlets import Any, List, Unicode

import course_config
from coursekit.grading import grade_notebook
from coursekit.notebooks import NotebookProblem, is_not_rerun, read_submission


def gradebook_cells(resources):
    """Every nbgrader cell of this notebook as released, by grade id, from the gradebook.

    The submission's own metadata can be edited by the student; the gradebook was
    written by ``nbgrader generate_assignment`` from the instructor's source. Each
    entry has the source cell's fields (name, cell_type, locked, source, checksum)
    and its role: ``grade``, ``solution``, ``task``, ``points``.
    """
    info = resources["nbgrader"]
    cells = {}
    with Gradebook(info["db_url"]) as gradebook:
        notebook = gradebook.find_notebook(info["notebook"], info["assignment"])
        graded = {cell.name: cell.max_score for cell in notebook.grade_cells}
        tasks = {cell.name: cell.max_score for cell in notebook.task_cells}
        solutions = {cell.name for cell in notebook.solution_cells}
        for source in notebook.source_cells:
            cells[source.name] = SimpleNamespace(
                name=source.name,
                cell_type=source.cell_type,
                locked=source.locked,
                source=source.source,
                checksum=source.checksum,
                grade=source.name in graded,
                solution=source.name in solutions,
                task=source.name in tasks,
                points=graded.get(source.name, tasks.get(source.name)),
            )
    return cells


def stand_in_notebook(resources, problem):
    """What nbgrader grades in place of a submitted notebook it cannot read: a note, then the released cells.

    The released nbgrader cells come from the gradebook, unchanged, so nbgrader scores every answer 0 and
    asks for no manual grading (its rule for an answer left as released); the hidden graders still grade
    the submitted files themselves (:class:`HiddenGraders`), so the checks that need no notebook, such as the
    saved model, keep their points, as in ``coursekit grade`` and class grading.
    """
    note = (
        "**Your notebook could not be read, so it was graded without it.** " + problem + "\n\n"
        "Only the checks that need no notebook (the saved model file) can give points; every answer "
        "scores 0. What follows is the released notebook's graded cells, not your work."
    )
    cells = [nbformat.v4.new_markdown_cell(note)]
    for cell in gradebook_cells(resources).values():
        new_cell = nbformat.v4.new_code_cell if cell.cell_type == "code" else nbformat.v4.new_markdown_cell
        meta = {
            "grade": cell.grade,
            "solution": cell.solution,
            "locked": cell.locked,
            "grade_id": cell.name,
            "schema_version": 3,
            "checksum": cell.checksum,
        }
        if cell.task:
            meta["task"] = True
        if cell.points is not None:
            meta["points"] = cell.points
        cells.append(new_cell(cell.source, metadata={"nbgrader": meta}))
    return nbformat.v4.new_notebook(cells=cells)


def grade_unreadable_notebooks_without_them(step=course_config.SUBMITTED_FOLDER):
    """Make ``nbgrader autograde`` grade a submission whose notebook it cannot read; once per process.

    nbgrader reads each submitted notebook with nbconvert (``NotebookExporter.from_filename``); a file that
    is not UTF-8, not JSON, not a notebook or over ``course_config.SUBMISSION_MAX_MB`` makes it fail before
    any preprocessor runs, record no grade and delete the student's autograded folder. For a notebook in a
    ``STEP/STUDENT/ASSIGNMENT/`` folder that :func:`coursekit.notebooks.read_submission` refuses, nbgrader
    gets :func:`stand_in_notebook` instead, which says why at the top of the feedback. Every other file is
    read by nbgrader as before. ``nbgrader_config.py`` calls it.
    """
    from nbconvert.exporters.notebook import NotebookExporter

    original = NotebookExporter.from_filename
    if getattr(original, "stands_in_for_unreadable", False):
        return

    def from_filename(self, filename, resources=None, **kw):
        path = Path(filename)
        info = (resources or {}).get("nbgrader", {})
        if path.parent.parent.parent.name != step or "db_url" not in info:
            return original(self, filename, resources, **kw)
        try:
            read_submission(path)
        except NotebookProblem as problem:
            self.log.warning("Grading %s without its notebook: %s", info.get("student"), problem)
            resources["metadata"] = {"name": path.stem, "path": str(path.parent), "modified_date": ""}
            return self.from_notebook_node(stand_in_notebook(resources, str(problem)), resources, **kw)
        return original(self, filename, resources, **kw)

    from_filename.stands_in_for_unreadable = True
    from_filename.__doc__ = original.__doc__
    NotebookExporter.from_filename = from_filename


def autograder_tests(resources):
    """The released notebook's autograder test cells, by grade id (see :func:`gradebook_cells`)."""
    return {
        name: cell
        for name, cell in gradebook_cells(resources).items()
        if cell.grade and not cell.solution and cell.cell_type == "code"
    }


def verdict_outputs(result):
    """Cell outputs that make nbgrader award full points (passed) or none (failed)."""
    if result.passed:
        return [new_output("stream", name="stdout", text="Passed the hidden check.\n")]
    return [
        new_output("error", ename="Check failed", evalue=result.message, traceback=[f"Check failed: {result.message}"])
    ]


class VerdictsPreprocessor(NbGraderPreprocessor):
    """Replace the outputs of every autograder test cell with the verdict of a grading report."""

    def report(self, nb, resources):
        """The :class:`~coursekit.grading.GradingReport` of this notebook (subclasses say where from)."""
        raise NotImplementedError

    def preprocess(self, nb, resources):
        report = self.report(nb, resources)
        if report.problem:
            self.log.error("Hidden graders failed on %s: %s", resources["nbgrader"]["student"], report.problem)
        if report.unfinished:
            self.log.warning(
                "Hidden graders stopped at their time limit on %s: %s",
                resources["nbgrader"]["student"],
                report.unfinished,
            )
        for note in report.flags:  # suggestive evidence: the points stand, the instructor should look
            self.log.warning("For review, %s: %s", resources["nbgrader"]["student"], note)
        # The gradebook, not the submission's metadata, says which cells are autograder tests.
        tests = autograder_tests(resources)
        scored = set()
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in tests and grade_id not in scored:
                cell.metadata.nbgrader.update(grade=True, solution=False, points=tests[grade_id].points)
                self._score(cell, report.result_for(grade_id))
                scored.add(grade_id)
        for grade_id in sorted(set(tests) - scored):  # a test cell the student deleted comes back, scored
            self.log.warning("Test cell %s is missing from the submission; adding it back", grade_id)
            cell = OverwriteCells(parent=self).missing_cell_transform(tests[grade_id], tests[grade_id].points)
            self._score(cell, report.result_for(grade_id))
            nb.cells.append(cell)
        return nb, resources

    def _score(self, cell, result):
        cell.outputs = verdict_outputs(result)
        self.log.info("%s: %s", result.grade_id, "passed" if result.passed else "failed: " + result.message)


class HiddenGraders(VerdictsPreprocessor):
    """Score autograder test cells with the hidden graders in grader_tests/."""

    def submitted_notebook(self, resources):
        info = resources["nbgrader"]
        coursedir = CourseDirectory(config=self.config)
        folder = coursedir.format_path(coursedir.submitted_directory, info["student"], info["assignment"])
        return Path(folder) / f"{info['notebook']}.ipynb"

    def report(self, nb, resources):
        notebook = self.submitted_notebook(resources)
        self.log.info("Running the hidden graders on %s", notebook)
        return grade_notebook(
            notebook, resources["nbgrader"]["assignment"], course=CourseDirectory(config=self.config).root
        )


class NoteLeftOutFiles(NbGraderPreprocessor):
    """Say at the top of the autograded notebook (and so of the feedback) which submitted files were left out.

    nbgrader copies only the files :func:`coursekit.submission_files.select_files` keeps (links,
    files over ``SUBMISSION_EXTRA_FILE_MAX_MB``, beyond ``SUBMISSION_EXTRA_TOTAL_MAX_MB`` or
    ``SUBMISSION_EXTRA_MAX_FILES``: :func:`~coursekit.submission_files.bound_nbgrader_copies`). This
    step, in ``Autograde.autograde_preprocessors`` before ``SanitizeSubmission``, adds a markdown
    cell with one note per file left out, in the student's terms; nothing when none was. No grade
    depends on it.
    """

    def preprocess(self, nb, resources):
        from coursekit.submission_files import select_files

        info = resources["nbgrader"]
        coursedir = CourseDirectory(config=self.config)
        folder = coursedir.format_path(coursedir.submitted_directory, info["student"], info["assignment"])
        notes = select_files(folder, info["assignment"], ignore=coursedir.ignore).notes()
        if notes:
            self.log.warning("%s: files left out of grading: %s", info["student"], " ".join(notes))
            nb.cells.insert(0, nbformat.v4.new_markdown_cell(left_out_cell_text(notes)))
        return nb, resources


def left_out_cell_text(notes):
    """The markdown of the note at the top of the autograded notebook and the feedback page."""
    lines = "\n".join(f"- {note}" for note in notes)  # file names in code spans (SanitizeSubmission runs after)
    return f"**Files not graded.** Some files of your submission were left out:\n\n{lines}\n"


class RestoreGradedCells(NbGraderPreprocessor):
    """Sanitizing step: put back the nbgrader roles of the released cells, from the gradebook.

    nbgrader's ``OverwriteCells`` restores a cell's type, lock, points and (locked)
    source, but not its role: a test cell the student marked as an answer cell
    (``solution: true``) fails nbgrader's checksum test and the whole submission goes
    ungraded, and a cell with an invented grade id keeps ``grade: true`` without an id
    and fails validation. This preprocessor runs before ``OverwriteCells`` in
    ``Autograde.sanitize_preprocessors`` (see ``nbgrader_config.py``): cells with a
    released grade id get that cell's role and points back (the last one wins, as in
    nbgrader's ``DeduplicateIds``); any other nbgrader metadata is dropped.
    """

    def preprocess(self, nb, resources):
        released = gradebook_cells(resources)
        seen = set()
        for cell in reversed(nb.cells):
            meta = cell.metadata.get("nbgrader")
            if meta is None:
                continue
            grade_id = meta.get("grade_id")
            if grade_id not in released or grade_id in seen:
                self.log.warning("Dropping nbgrader metadata the release does not have (grade id %r)", grade_id)
                del cell.metadata["nbgrader"]
                continue
            seen.add(grade_id)
            entry = released[grade_id]
            meta.update(grade=entry.grade, solution=entry.solution, task=entry.task, locked=entry.locked)
            if entry.grade or entry.task:
                meta["points"] = entry.points
            else:
                meta.pop("points", None)
        return nb, resources


HIDDEN_TEST_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")  # nbgrader's ClearHiddenTests delimiters


class CleanSubmission(NbGraderPreprocessor):
    """First sanitizing step: junk the student's editor could have put in nbgrader's way.

    nbgrader's own steps assume well-formed metadata and crash on anything else, which leaves the
    submission ungraded (or, in class grading, failing on every run). Before they run:

    - ``metadata.nbgrader`` that is not a dict (a string, a list, a number), or whose grade id is
      not a string, is dropped (the released cells' roles come back from the gradebook,
      :class:`RestoreGradedCells`);
    - a ``source`` that is not a string becomes one (a list of strings is joined, anything else is
      dropped: the hidden graders say that the notebook is not in the Jupyter format);
    - hidden-test markers (``### BEGIN HIDDEN TESTS``) in any cell are defused, so that feedback
      never fails on an unmatched marker; the released test cells get their source, markers
      included, back from the gradebook (``OverwriteCells``).

    None of this changes a grade: the hidden graders read the submitted file itself.
    """

    def preprocess(self, nb, resources):
        for index, cell in enumerate(nb.cells):
            meta = cell.get("metadata")
            if not isinstance(meta, dict):
                cell["metadata"] = meta = nbformat.NotebookNode()
            nbgrader = meta.get("nbgrader")
            junk = not isinstance(nbgrader, dict) or not isinstance(nbgrader.get("grade_id", ""), str)
            if "nbgrader" in meta and junk:
                self.log.warning("Cell %d: dropping nbgrader metadata that is not nbgrader's (%.60r)", index, nbgrader)
                del meta["nbgrader"]
            source = cell.get("source", "")
            if not isinstance(source, str):
                parts = source if isinstance(source, list) and all(isinstance(p, str) for p in source) else []
                self.log.warning("Cell %d: its source is not text; %s", index, "joined" if parts else "dropped")
                cell["source"] = source = "".join(parts)
            for marker in HIDDEN_TEST_MARKERS:
                source = source.replace(marker, marker.replace(" TESTS", "-TESTS (not a marker here)"))
            cell["source"] = source
        return nb, resources


# What honest notebooks show (pandas tables, Markdown's HTML): no scripts, styles, frames, forms or handlers.
SAFE_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "code",
    "del",
    "details",
    "div",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "small",
    "span",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
SAFE_ATTRIBUTES = {
    "*": ["class", "title"],
    "a": ["href"],
    "img": ["src", "alt", "width", "height"],
    "td": ["colspan", "rowspan", "align"],
    "th": ["colspan", "rowspan", "align"],
    "table": ["border"],
}


class ClearOutputExceptNotRerun(ClearOutput):
    """nbgrader's ``ClearOutput``, except for the cells the graded re-run leaves as submitted (tagged
    ``course_config.NOT_RERUN_TAG``: optional experiments): the TA grades the questions on them against
    the student's own results, and the feedback shows them. Their outputs are bounded and sanitized like
    every other output (LimitOutput, SanitizeSubmission), and they decide no grade."""

    def preprocess_cell(self, cell, resources, index):
        if is_not_rerun(cell):
            return cell, resources
        return super().preprocess_cell(cell, resources, index)


class SanitizeSubmission(SanitizeHTML):
    """No active content from a submission in any page rendered from it, and no output beyond a bound.

    nbconvert's ``SanitizeHTML`` (bleach): markdown and raw cells and ``text/html`` / ``text/markdown``
    outputs keep only harmless tags and attributes (``<script>``, event handlers, ``javascript:``
    links are escaped or dropped); any output type not known to be inert (``application/javascript``,
    ``image/svg+xml``, widgets, ...) is removed. Locked markdown cells are left alone: sanitizing has
    restored them from the gradebook, so they hold the instructor's text. Then every output is bounded: text over
    ``course_config.NOTEBOOK_OUTPUT_MAX_CHARS`` characters is cut with a visible note, and an image
    over that size is replaced by a note. In ``Autograde.autograde_preprocessors`` after the
    re-execution (the autograded notebook, which formgrader renders for the instructor) and first in
    ``GenerateFeedback.preprocessors`` (the student's page); see ``nbgrader_config.py``.
    """

    tags = List(Unicode(), default_value=sorted(SAFE_TAGS)).tag(config=True)
    attributes = Any(default_value=SAFE_ATTRIBUTES).tag(config=True)

    def preprocess_cell(self, cell, resources, cell_index):
        meta = cell.metadata.get("nbgrader")
        if cell.cell_type != "code" and isinstance(meta, dict) and meta.get("locked"):
            return cell, resources  # the instructor's text, put back from the gradebook by OverwriteCells
        if cell.cell_type == "code":  # cut first, then sanitize: bleach closes what a cut left open
            cell.outputs = [bounded_output(output) for output in cell.outputs]
        result = super().preprocess_cell(cell, resources, cell_index)
        return result if result else (cell, resources)


def _cut_note(size):
    return (
        f"\n[... output cut by the grader: it was {size:,} characters, more than the "
        f"{course_config.NOTEBOOK_OUTPUT_MAX_CHARS:,} shown. Print a summary (shapes, a few values) instead.]"
    )


def bounded_output(output):
    """``output`` with text over ``NOTEBOOK_OUTPUT_MAX_CHARS`` cut and large images replaced, each with a note."""
    limit = course_config.NOTEBOOK_OUTPUT_MAX_CHARS

    def cut(text):
        text = "".join(text) if isinstance(text, list) else str(text)
        return text if len(text) <= limit else text[:limit] + _cut_note(len(text))

    if output.get("output_type") == "stream":
        output["text"] = cut(output.get("text", ""))
    elif output.get("output_type") == "error":
        output["evalue"] = cut(output.get("evalue", ""))
        traceback, kept = [], 0
        for line in output.get("traceback", []):
            if kept + len(line) > limit:
                traceback.append(_cut_note(sum(len(text) for text in output["traceback"])))
                break
            traceback.append(line)
            kept += len(line)
        output["traceback"] = traceback
    elif "data" in output:
        data = output["data"]
        for key in list(data):
            if key.startswith("image/") and len(str(data[key])) > limit:
                size = len(str(data.pop(key)))
                data["text/plain"] = (
                    f"[an image of {size:,} characters, over the grader's limit of {limit:,}, was "
                    "left out. Save smaller figures (fewer points, a lower dpi).]"
                )
            elif isinstance(data[key], (str, list)):
                data[key] = cut(data[key])
    return output
