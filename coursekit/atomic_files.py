"""Files written whole or not at all, for readers that may run at the same time (parallel graders, resumed runs)."""

import os
import threading
from pathlib import Path


def write_atomically(path, write, suffix=""):
    """Fill ``path`` through ``write(temporary_path)``, then put it in place in one rename.

    The temporary file lies next to ``path`` (same file system), hidden, named after this
    process and thread, and ends with ``suffix`` (``".npz"`` for :func:`numpy.savez`, which
    adds it otherwise). A reader sees the old file or the new one, never half of one; a
    writer killed midway leaves at most its temporary file, which is removed when ``write``
    raises.

    Parameters
    ----------
    path : path
        The file to write; its folder must exist.
    write : callable
        ``write(temporary_path)`` writes the whole content to ``temporary_path``.
    suffix : str
        Ending of the temporary file's name.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp{suffix}")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_text_atomically(path, text):
    """:func:`write_atomically` of the UTF-8 ``text``."""
    write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))
