"""nbgrader's re-execution of a submitted notebook, in a kernel isolated like the sandbox.

``nbgrader autograde`` (and class grading's quick-mode run) executes every cell of a
student's notebook in a Jupyter kernel. Its outputs decide no grade here, but the code
in it is the student's. :class:`SandboxedKernelManager` starts that kernel under the
isolation :mod:`coursekit.isolation` gives student functions (its decision, limits, scratch
folders, environment and readable-file mirror, shared with the sandbox):

- new network and PID namespaces (``unshare``): no network, not even the machine's
  loopback services, and every process of the kernel dies with it;
- when the grader runs as root, the kernel runs as ``course_config.SANDBOX_USER``
  (where that user can run the interpreter), with no supplementary groups and
  ``RLIMIT_NPROC``;
- resource limits: address space ``NOTEBOOK_KERNEL_MEMORY_MB``, files of at most
  ``SANDBOX_MAX_OUTPUT_MB``, no core files;
- a private scratch folder, the only one the kernel's user owns: the working folder is a
  copy of the notebook's folder (plain files only, no links), so a notebook never
  writes into ``autograded/`` or next to the submitted files; ``HOME`` and
  ``KERAS_HOME`` are there too, with read-only links to the grader's Fashion-MNIST and
  Keras model files; the environment holds only what a notebook needs.

The kernel talks to nbgrader over Unix sockets in that folder (ZeroMQ's ``ipc``
transport): TCP on localhost does not cross a network namespace, a socket file does.

Before the kernel starts, the private folders of the course being graded are closed to
others (:func:`coursekit.isolation.close_course`): the course nbgrader runs in (its
``CourseDirectory.root``), every course folder the notebook's folder or the working folder
lies in, and the kit's own folder, whatever folder nbgrader or class grading runs in.

Where a protection is unavailable, the kernel degrades exactly like the sandbox: the
missing protection is logged once as a warning, or, with
``course_config.SANDBOX_REQUIRE_ISOLATION``, the kernel is not started at all.

nbgrader's ``Execute`` preprocessor forces its own kernel manager class in its
constructor (configuration cannot change it), so :class:`SandboxedExecute`, an
``Execute`` that uses this manager, takes its place in ``nbgrader_config.py``.
"""

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_output
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute
from traitlets import Dict, Float, Unicode

import course_config
from coursekit.notebooks import is_not_rerun, not_rerun_note
from coursekit.isolation import (
    KERNEL_PREFIXES,
    close_course,
    find_course_roots,
    isolation,
    keras_mirror,
    limit_resources,
    sandbox_readable_file,
    scratch_parent,
    student_environment,
)

log = logging.getLogger(__name__)


def file_variables():
    """Environment variables that name a file a notebook reads (Lab 3: VGG16's weights)."""
    return (course_config.VGG16_WEIGHTS_ENV,)


def kernel_environment(env, home):
    """The kernel's environment: ``env`` (what jupyter_client prepared) cut to what a notebook needs
    (:func:`coursekit.isolation.student_environment`, with what Jupyter and nbgrader set for a kernel),
    with ``HOME``, ``KERAS_HOME`` and caches in ``home``, and the files a notebook reads mirrored."""
    env = env if env is not None else os.environ
    kept = student_environment(home, env, prefixes=KERNEL_PREFIXES)
    for name in file_variables():
        if env.get(name):
            mirrored = sandbox_readable_file(env[name])
            kept[name] = str(mirrored) if mirrored else env[name]  # e.g. "imagenet": not a file
    return kept


def _prepare_home(home):
    """``HOME`` of the kernel: Keras's datasets and models linked to the read-only mirror, and
    matplotlib's font list (building it takes seconds at every start otherwise)."""
    mirror = keras_mirror()
    (home / ".keras").mkdir(parents=True)
    for part in ("datasets", "models"):
        (home / ".keras" / part).symlink_to(mirror / part)
    (home / ".matplotlib").mkdir()
    cache = Path(
        os.environ.get("MPLCONFIGDIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matplotlib"
    )
    for font_list in cache.glob("fontlist-*.json") if cache.is_dir() else ():
        shutil.copyfile(font_list, home / ".matplotlib" / font_list.name)


def _copy_folder(source, target):
    """Copy the plain files and folders of ``source`` into ``target``; links and special files are left out."""
    target.mkdir(exist_ok=True)
    if not source or not Path(source).is_dir():
        return
    for entry in os.scandir(source):
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            _copy_folder(entry.path, target / entry.name)
        elif entry.is_file(follow_symlinks=False):
            shutil.copyfile(entry.path, target / entry.name)


def _chown_tree(root, uid, gid):
    for folder, folders, files in os.walk(root):
        os.chown(folder, uid, gid)
        for name in files + folders:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs isolated like the sandbox (see the module's docstring).

    The kernel's working folder is a copy of the ``cwd`` it is started with; files the
    notebook writes stay in that copy and are deleted with it when the kernel's resources
    are cleaned up.
    """

    scratch = None  # the kernel's private folder, once started
    course_roots = ()  # the course folders being graded (SandboxedExecute sets nbgrader's)

    async def _async_pre_start_kernel(self, **kw):
        # jupyter_client's private step, the one its start_kernel calls (pinned in requirements.txt; tests/
        # test_untrusted.py::test_the_private_kernel_manager_hook_the_sandbox_needs_is_still_called).
        where = isolation()  # RuntimeError with SANDBOX_REQUIRE_ISOLATION where a protection is missing
        # Before any student code runs: the course being graded, any course the notebook lies in, the kit's.
        roots = [*map(Path, self.course_roots), *find_course_roots(kw.get("cwd"))]
        close_course(*dict.fromkeys(roots))
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix="kernel-", dir=scratch_parent()))
            _prepare_home(self.scratch / "home")
            _copy_folder(kw.get("cwd"), self.scratch / "work")
            if where.drops_privileges:
                _chown_tree(self.scratch, where.uid, where.gid)  # the only folder the kernel's user may write
        self.transport = "ipc"  # even if tcp was configured: it cannot reach a kernel in its own network namespace
        self.connection_file = str(self.scratch / "kernel.json")
        self.ip = str(self.scratch / "kernel-ipc")
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        if where.drops_privileges:
            os.chown(self.connection_file, where.uid, where.gid)
        kw.update(
            cwd=str(self.scratch / "work"),
            env=kernel_environment(kw.get("env"), self.scratch / "home"),
            # The kernel's own stderr (C++ libraries' start-up lines, ipykernel's log) stays out of the grader's
            # terminal and its progress bar; what a cell prints, to either stream, reaches the notebook.
            stderr=subprocess.DEVNULL,
            preexec_fn=limit_resources(
                course_config.NOTEBOOK_KERNEL_MEMORY_MB, course_config.SANDBOX_MAX_PROCESSES, where.drops_privileges
            ),
        )
        self.isolation = where
        return [*where.prefix, *kernel_cmd], kw

    async def _async_cleanup_resources(self, restart=False):
        await super()._async_cleanup_resources(restart=restart)
        if not restart and self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def _cell_limit_message():
    return (
        f"This cell ran past the time limit and was interrupted: when your notebook is graded, each cell may "
        f"run at most {course_config.NOTEBOOK_CELL_TIMEOUT_S} s. Make it train only briefly when the "
        "environment variable NBGRADER_EXECUTION is set (the lab's instructions show how), and submit again."
    )


def _unresponsive_message(seconds):
    return (
        f"This cell ran past the time limit ({seconds} s) and did not stop when it was interrupted, so the "
        "notebook was stopped here and the cells after it were not run. Code that catches KeyboardInterrupt or "
        "ignores SIGINT does this, and so can one long call into compiled code (a big import, a whole training "
        "run in one call). Let Ctrl-C stop your code, make it train only briefly when NBGRADER_EXECUTION is set, "
        "and submit again. Your checks are graded by the hidden graders all the same."
    )


def dead_kernel_message():
    """The message of the cell during which the re-run's kernel died."""
    return (
        "The notebook's kernel died while this cell ran (it may have used more memory than the "
        f"{course_config.NOTEBOOK_KERNEL_MEMORY_MB} MB a graded re-run may use, crashed, or ended its own "
        "process), so the notebook was stopped here and the cells after it were not run. Make it train only "
        "briefly when NBGRADER_EXECUTION is set, let it end normally, and submit again. Your checks are graded by "
        "the hidden graders all the same."
    )


class SandboxedExecute(Execute):
    """nbgrader's ``Execute``, with the kernel started by :class:`SandboxedKernelManager`.

    ``Execute`` sets ``kernel_manager_class`` in its constructor, which overrides
    ``c.Execute.kernel_manager_class`` in a configuration file; this subclass passes
    the sandboxed manager instead. Configuration for ``Execute`` (``timeout``, ...)
    applies to it as well.

    Time is the student's problem, never a failure of grading: a cell over its limit is
    interrupted and shows a message naming the limit (``error_on_timeout``); a cell that does
    not stop when interrupted (it ignores SIGINT), or a notebook whose cells add up past
    ``deadline``, ends the run there with a message in that cell, the kernel is killed, and
    the later cells keep no outputs. A cell tagged ``course_config.NOT_RERUN_TAG`` (an optional
    experiment) is not run: it keeps its submitted outputs, with a note. A kernel that dies during a
    cell (memory, a crash, ``os._exit``) ends the run the same way. The grade is not affected: it
    comes from the hidden graders.
    """

    error_on_timeout = Dict(
        default_value={
            "ename": "CellTimeoutError",
            "evalue": _cell_limit_message(),
            "traceback": [f"CellTimeoutError: {_cell_limit_message()}"],
        },
        help="The error output of a cell that was interrupted at its time limit.",
    ).tag(config=True)
    deadline = Float(
        0,
        help="time.monotonic() after which no further cell is started (0: no limit); "
        "class grading's limit per submission.",
    )
    deadline_note = Unicode("", help="The message shown in the first cell not run because of ``deadline``.")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb, resources=None, km=None):
        # Run by nbgrader (resources["nbgrader"]): its course folder is the one being graded, whether or not
        # it holds an nbgrader_config.py. Elsewhere (class grading's worker) the kernel finds course folders.
        self._course_roots = ()
        self.stopped = ""  # why the run ended before the last cell ("" when it did not)
        if isinstance(resources, dict) and "nbgrader" in resources:
            self._course_roots = (CourseDirectory(config=self.config).root,)
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell, resources, index):
        if self.stopped or cell.cell_type != "code":
            return cell, self.resources
        if is_not_rerun(cell):  # an optional experiment: its submitted outputs stay (ClearOutputExceptNotRerun)
            cell.outputs.append(new_output("stream", name="stdout", text=not_rerun_note()))
            return cell, self.resources
        if self.deadline and time.monotonic() >= self.deadline:
            self._stop(
                cell,
                self.deadline_note
                or "The time limit for the whole notebook was reached before "
                "this cell: it and the cells after it were not run.",
            )
            return cell, self.resources
        limit = self._get_timeout(cell)
        try:
            return super().preprocess_cell(cell, resources, index)
        except CellTimeoutError:  # interrupted at its limit, and still no answer: the kernel ignores SIGINT
            self._stop(cell, _unresponsive_message(limit))
            self.shutdown_kernel = "immediate"  # kill the busy kernel (its PID namespace) without waiting
            return cell, self.resources
        except DeadKernelError:  # the student's code killed its kernel: the run ends here, the grading goes on
            self._stop(cell, dead_kernel_message(), ename="GradingKernelDied")
            self.shutdown_kernel = "immediate"
            return cell, self.resources

    def _stop(self, cell, message, ename="GradingTimeLimit"):
        self.stopped = message
        self.log.warning("Re-execution stopped at cell %s: %s", cell.get("id", "?"), message)
        cell.outputs.append(new_output("error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"]))

    def create_kernel_manager(self):
        manager = super().create_kernel_manager()
        if isinstance(manager, SandboxedKernelManager):
            manager.course_roots = getattr(self, "_course_roots", ())
        return manager
