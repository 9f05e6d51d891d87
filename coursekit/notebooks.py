"""Read a submitted notebook safely, or say in the student's terms why it cannot be graded.

Every part of the grader that reads a submitted ``.ipynb`` goes through
:func:`read_submission`: the sandbox (which hands the child a clean copy in the
current format) and the figure check. A notebook that is too big, not UTF-8,
not JSON, or not in the Jupyter notebook format raises :class:`NotebookProblem`,
whose message is shown to the student on every check that needs the notebook.
Old formats (nbformat 3) are converted, as Jupyter itself would.
"""

import json
from datetime import datetime
from pathlib import Path

import nbformat

import course_config


class NotebookProblem(ValueError):
    """The submitted notebook cannot be read; the message is for the student."""


def read_submission(path, max_mb=None):
    """The notebook at ``path`` as an nbformat 4 ``NotebookNode``.

    Raises
    ------
    NotebookProblem
        With a message that says what is wrong with the file and how to fix it.
    """
    path = Path(path)
    max_mb = max_mb or course_config.SUBMISSION_MAX_MB
    name = path.name
    if path.is_symlink():  # never followed: it could point at any file the grader can read
        raise NotebookProblem(
            f"The notebook {name} is a link to another file, not the notebook itself. "
            "Submit the .ipynb file that Jupyter saved (a copy, not a link)."
        )
    if not path.is_file():
        raise NotebookProblem(f"The notebook {name} is missing from the submission.")
    size = path.stat().st_size
    if size > max_mb * 1024 * 1024:
        raise NotebookProblem(
            f"The notebook {name} is {size / 2**20:.0f} MB; the grader accepts at most {max_mb} MB. Its outputs "
            "are too large (printed arrays, many or huge figures): clear the outputs, run the cells again "
            "without printing whole arrays, and submit again."
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotebookProblem(
            f"The notebook {name} is not UTF-8 text (byte 0x{raw[error.start]:02x} at position {error.start}). "
            "Save it from Jupyter (File > Save and Checkpoint) instead of another editor, and submit that file."
        ) from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        where = f" (line {error.lineno}, column {error.colno}: {error.msg})" if hasattr(error, "lineno") else ""
        raise NotebookProblem(
            f"The notebook {name} is not valid JSON{where}: it was cut short or edited outside Jupyter. "
            "Open your work in Jupyter, save it, and submit the saved file."
        ) from None
    _check_structure(data, name)
    try:
        notebook = nbformat.reads(text, as_version=4)
        nbformat.validate(notebook)
        json.dumps(notebook, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot be written back
    except UnicodeEncodeError:
        raise NotebookProblem(
            f"The notebook {name} holds text that is not valid Unicode (an unpaired "
            "surrogate escape such as \\udc80). Remove it, save in Jupyter and submit "
            "again."
        ) from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise NotebookProblem(
            f"The notebook {name} does not follow the Jupyter notebook format ({reason}). Open it in Jupyter, "
            "save it, and submit the saved file."
        ) from None
    return notebook


def _check_structure(data, name):
    """The few facts nbformat needs before it can even convert or validate a notebook."""
    if not isinstance(data, dict) or not isinstance(data.get("nbformat"), int):
        raise NotebookProblem(
            f"The file {name} is JSON but not a Jupyter notebook (it has no 'nbformat' "
            "number). Submit the .ipynb file that Jupyter saved."
        )
    if data["nbformat"] < 3:
        raise NotebookProblem(
            f"The notebook {name} is in the very old format nbformat {data['nbformat']}. "
            "Open it in a current Jupyter, save it, and submit the saved file."
        )


def cell_run_times(cell):
    """(start, end) of a code cell's last run as POSIX seconds, from nbclient's ``metadata.execution``.

    None when the cell holds no such record, or one that is not nbclient's (a submitted file may
    hold anything in a cell's metadata).
    """
    try:
        execution = cell["metadata"]["execution"]
        return tuple(
            datetime.fromisoformat(execution[key].replace("Z", "+00:00")).timestamp()
            for key in ("iopub.status.busy", "shell.execute_reply")
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def rewrite_notebook(path, change):
    """Apply ``change(notebook)`` to the notebook file at ``path``; write it only if that changed it.

    Returns True when the file was rewritten (the generated tables and labels of the source notebooks).
    """
    notebook = nbformat.read(path, as_version=4)
    before = nbformat.writes(notebook)
    change(notebook)
    if nbformat.writes(notebook) == before:
        return False
    nbformat.write(notebook, path)
    return True


def is_not_rerun(cell):
    """Whether the graded re-run leaves this cell as submitted (a code cell tagged
    ``course_config.NOT_RERUN_TAG``: an optional experiment that decides no grade)."""
    metadata = cell.get("metadata")
    tags = metadata.get("tags") if isinstance(metadata, dict) else None
    return cell.get("cell_type") == "code" and isinstance(tags, list) and course_config.NOT_RERUN_TAG in tags


def not_rerun_note():
    """The line added below the submitted outputs of a cell that the graded re-run left as submitted."""
    return (
        f"[Not re-run by the grader: a cell tagged '{course_config.NOT_RERUN_TAG}' (an optional experiment) "
        "keeps the outputs you submitted, shown above. It decides no grade.]\n"
    )
