"""Which files of a submission folder are graded, copied and sent to a worker.

A submission folder is the student's: besides the notebook and the model file it can hold
anything, a 1 GiB file, thousands of small ones, a folder tree, a link to a file of the
grading machine. :func:`select_files` decides, from names, types and sizes alone (nothing is
read), what goes on:

- the lab's notebook and model file, at the top of the folder, while within their own limits
  (``SUBMISSION_MAX_MB``, ``SUBMITTED_MODEL_MAX_MB``, which the graders apply too);
- other plain files, in name order, while each is at most ``SUBMISSION_EXTRA_FILE_MAX_MB``, all
  of them together at most ``SUBMISSION_EXTRA_TOTAL_MAX_MB``, and at most
  ``SUBMISSION_EXTRA_MAX_FILES`` of them;
- never a link (to a file or a folder) or a special file: links are not followed.

What is left out gets a note for the student (:meth:`SubmissionFiles.notes`). The same
selection is used by nbgrader's copies into ``autograded/`` and ``feedback/``
(:func:`bound_nbgrader_copies`, installed by ``nbgrader_config.py``), by the note in the
feedback (:class:`coursekit.nbgrader_preprocessors.NoteLeftOutFiles`) and by class grading, which
reads and sends only the selected files (:meth:`coursekit.class_results.Submission.files`).
"""

import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import course_config

MB = 1024 * 1024
ADVICE = "hand in only the notebook and the model file"


def describe_size(size):
    """``size`` bytes for a person: "1.0 GiB", "12.5 MB", "300 bytes"."""
    if size >= 1024 * MB:
        return f"{size / (1024 * MB):.1f} GiB"
    if size >= MB:
        return f"{size / MB:.1f} MB"
    return f"{size:,} bytes"


def _shown(name):
    """A student's file name, safe to show in a page: no backticks, control characters or endless names."""
    name = "".join("?" if ch == "`" or not ch.isprintable() else ch for ch in name)
    return name if len(name) <= 100 else name[:97] + "..."


@dataclass(frozen=True)
class LeftOut:
    """A file of the submission folder that was not graded, copied or sent; ``why`` ends its note."""

    path: str
    size: int
    why: str

    def note(self):
        size = f" ({describe_size(self.size)})" if self.size else ""
        return f"`{_shown(self.path)}`{size} was not graded or copied: {self.why}; {ADVICE}."


@dataclass(frozen=True)
class SubmissionFiles:
    """The outcome of :func:`select_files`: relative paths (POSIX) kept, and what was left out."""

    folder: Path
    kept: tuple
    left_out: tuple

    def notes(self, shown=5):
        """One line per file left out, the files over the count limit and beyond ``shown`` in one line."""
        counted = [entry for entry in self.left_out if entry.why == _too_many()]
        notes = [entry.note() for entry in self.left_out if entry.why != _too_many()]
        if len(notes) > shown:
            notes = notes[:shown] + [
                f"{len(notes) - shown:,} more files were not graded or copied, for the reasons above; {ADVICE}."
            ]
        if counted:
            names = ", ".join(f"`{_shown(entry.path)}`" for entry in counted[:3])
            more = f" and {len(counted) - 3:,} more files" if len(counted) > 3 else ""
            notes.append(f"{names}{more} were not graded or copied: {_too_many()}; {ADVICE}.")
        return notes


def _too_many():
    return (
        f"a submission may hold at most {course_config.SUBMISSION_EXTRA_MAX_FILES} files besides the notebook "
        "and the model file"
    )


def _walk(folder, ignore, limit):
    """(relative path, os.stat_result of the entry itself) for the entries of ``folder``, in name order, at most
    ``limit`` of them; folders are walked, links to folders are entries of their own."""
    stack, seen = [""], 0
    while stack:
        relative = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(folder, relative)), key=lambda entry: entry.name)
        except OSError:
            continue
        folders = []
        for entry in entries:
            if any(fnmatch.fnmatch(entry.name, pattern) for pattern in ignore):
                continue
            seen += 1
            if seen > limit:
                yield None, None
                return
            path = f"{relative}/{entry.name}" if relative else entry.name
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                folders.append(path)
            else:
                yield path, info
        stack.extend(reversed(folders))


def select_files(folder, assignment, ignore=()):
    """What of the submission ``folder`` of ``assignment`` is graded, copied and sent (see the module's docstring).

    Parameters
    ----------
    folder : path
        ``submitted/STUDENT/ASSIGNMENT/`` (or nbgrader's ``autograded/`` copy of it).
    assignment : str
        The lab, for the names of its notebook and model file (none for an assignment not in course_config.LABS).
    ignore : sequence of str
        Globs of names skipped altogether, files and folders (nbgrader's ``CourseDirectory.ignore``).

    Returns
    -------
    SubmissionFiles
    """
    try:
        lab = course_config.lab_settings(assignment)
        main = {
            lab.notebook: ("the notebook", course_config.SUBMISSION_MAX_MB),
            lab.model_file: ("the model file", course_config.SUBMITTED_MODEL_MAX_MB),
        }
    except KeyError:
        main = {}
    limit_file = course_config.SUBMISSION_EXTRA_FILE_MAX_MB * MB
    limit_total = course_config.SUBMISSION_EXTRA_TOTAL_MAX_MB * MB
    limit_count = course_config.SUBMISSION_EXTRA_MAX_FILES
    kept, left_out, total, extras = [], [], 0, 0
    for path, info in _walk(folder, ignore, limit=20 * limit_count + len(main)):
        if path is None:
            left_out.append(
                LeftOut(
                    "(the rest of the folder)",
                    0,
                    f"the folder holds more than {20 * limit_count:,} entries, and the rest were not looked at",
                )
            )
            break
        if stat.S_ISLNK(info.st_mode):
            left_out.append(LeftOut(path, 0, "it is a link, and links are not followed (hand in the file itself)"))
        elif not stat.S_ISREG(info.st_mode):
            left_out.append(LeftOut(path, 0, "it is not a plain file"))
        elif path in main and info.st_size > main[path][1] * MB:
            what, limit = main[path]
            left_out.append(LeftOut(path, info.st_size, f"{what} may be at most {limit} MB, so it was not graded"))
        elif path in main:
            kept.append(path)
        elif info.st_size > limit_file:
            left_out.append(
                LeftOut(
                    path,
                    info.st_size,
                    f"extra files may be at most {course_config.SUBMISSION_EXTRA_FILE_MAX_MB} MB each",
                )
            )
        elif extras >= limit_count:
            left_out.append(LeftOut(path, info.st_size, _too_many()))
        elif total + info.st_size > limit_total:
            left_out.append(
                LeftOut(
                    path,
                    info.st_size,
                    f"extra files may be at most {course_config.SUBMISSION_EXTRA_TOTAL_MAX_MB} MB together",
                )
            )
        else:
            kept.append(path)
            extras += 1
            total += info.st_size
    return SubmissionFiles(Path(folder), tuple(sorted(kept)), tuple(left_out))


def bound_nbgrader_copies(steps=(course_config.SUBMITTED_FOLDER, course_config.AUTOGRADED_FOLDER)):
    """Make nbgrader copy only :func:`select_files`' files of a submission folder; once per process.

    nbgrader's converters copy every file of their input folder but the notebooks
    (``BaseConverter.init_assignment``, through ``nbgrader.converters.base.find_all_files``):
    ``autograde`` from ``submitted/STUDENT/ASSIGNMENT/`` into ``autograded/``,
    ``generate_feedback`` from there into ``feedback/``. nbgrader has no setting for it
    (``CourseDirectory.max_file_size`` applies to ``nbgrader collect`` only), so this replaces
    that one function of that one module: for a folder ``.../STEP/STUDENT/ASSIGNMENT`` with
    STEP in ``steps`` it lists the selected files (minus nbgrader's ignore globs, ``*.ipynb``
    among them); any other folder (``source/`` for ``generate_assignment``) is listed by nbgrader
    as before. ``nbgrader_config.py`` calls it.
    """
    import nbgrader.converters.base as base

    original = base.find_all_files
    if getattr(original, "bounded_by_coursekit", False):
        return

    def find_all_files(path, exclude=None):
        folder = Path(path)
        if folder.parent.parent.name not in steps:
            return original(path, exclude)
        selection = select_files(folder, folder.name, ignore=exclude or ())
        return [os.path.join(path, name) for name in selection.kept]

    find_all_files.bounded_by_coursekit = True
    find_all_files.__doc__ = original.__doc__
    base.find_all_files = find_all_files
