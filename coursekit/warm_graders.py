"""The hidden graders' process, forked from a warm one: Keras is imported once per worker, not per grading.

Importing Keras and TensorFlow costs about 5 CPU-seconds, a tenth of a Lab 1 grading (README.md, the
profile). A long-lived process (:mod:`coursekit._warm_graders_child`) imports them once; each grading
is a fork of it, which then imports the kit, course_config, the graders and their conftest afresh
and runs pytest, exactly as ``python -m pytest`` in a fresh process would. The graders are the
kit's own, trusted code: student code still runs only in the sandboxes they start, and each grading
is a process of its own that ends with it, so nothing of one grading reaches the next.

:func:`run_pytest` uses the warm process where it can (Linux, ``course_config.WARM_GRADERS``, one
grading at a time per process) and a fresh ``python -m pytest`` process otherwise; when the warm
process is missing, dies or does not answer, the grading runs in a fresh process instead, and the
next one starts a new warm process.
"""

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import course_config

CHILD_SCRIPT = Path(__file__).with_name("_warm_graders_child.py")
START_TIMEOUT_S = 120  # importing Keras on a loaded machine


class WarmProcessError(RuntimeError):
    """The warm process could not take the grading (it is then run in a fresh process)."""


def run_pytest(argv, cwd, env, timeout, log_path):
    """Run pytest with ``argv`` in ``cwd``; stdout and stderr go to ``log_path``.

    Returns
    -------
    (bool, bytes)
        Whether it was stopped at ``timeout`` seconds (its process group killed), and its output.
    """
    started = time.monotonic()
    if _warm_graders_possible():
        with contextlib.suppress(WarmProcessError):
            return _WARM.run(argv, cwd, env, timeout, log_path)
    remaining = timeout - (time.monotonic() - started)  # a warm process that failed midway took some of it
    if remaining <= 0:
        return True, b""
    return _run_fresh(argv, cwd, env, remaining, log_path)


def _warm_graders_possible():
    return course_config.WARM_GRADERS and sys.platform.startswith("linux") and hasattr(os, "fork")


def _run_fresh(argv, cwd, env, timeout, log_path):
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # also on Ctrl-C or any other exception: nothing of the graders' process group survives
            _kill_group(process.pid)
            process.wait()
    return timed_out, Path(log_path).read_bytes()


def _kill_group(pid):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _WarmProcess:
    """One warm process per grading process (a class-grading worker, the test run), started when first needed."""

    def __init__(self):
        self._lock = threading.Lock()
        self._process = None
        self._env = None
        self._pending = b""

    def run(self, argv, cwd, env, timeout, log_path):
        if not self._lock.acquire(blocking=False):
            raise WarmProcessError("busy with another grading")  # a second thread grades in a fresh process
        try:
            return self._run(argv, cwd, env, timeout, log_path)
        finally:
            self._lock.release()

    def _run(self, argv, cwd, env, timeout, log_path):
        self._start(env)
        started = time.monotonic()
        self._send({"argv": list(argv), "cwd": str(cwd), "env": dict(env), "log": str(log_path)})
        pid = self._receive(START_TIMEOUT_S).get("pid")
        if not isinstance(pid, int) or pid <= 0:
            self.stop()
            raise WarmProcessError("no grading process")
        timed_out, finished = False, False
        try:
            self._receive(max(timeout - (time.monotonic() - started), 0.1))
            finished = True
        except TimeoutError:
            timed_out = True
        finally:  # as for a fresh process: the grading's process group never survives it (Ctrl-C included)
            _kill_group(pid)
            if not finished:
                self._reap()
        return timed_out, Path(log_path).read_bytes() if Path(log_path).exists() else b""

    def _reap(self):
        """Read a killed grading's status, so that the next grading's messages stay in step; else end the warm
        process (the next grading starts a new one)."""
        if self._process is None:  # it has ended already
            return
        try:
            self._receive(30)
        except (TimeoutError, WarmProcessError):
            self.stop()

    def _start(self, env):
        """A warm process whose environment is ``env`` (what Keras read when it was imported), started if needed."""
        if self._process is not None and self._process.poll() is None and self._env == env:
            return
        self.stop()
        self._process = subprocess.Popen(
            [sys.executable, str(CHILD_SCRIPT)],
            env=env,
            cwd=str(Path(CHILD_SCRIPT).parent),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._env, self._pending = dict(env), b""
        try:
            ready = self._receive(START_TIMEOUT_S)
        except (TimeoutError, WarmProcessError) as error:
            self.stop()
            raise WarmProcessError(f"the warm process did not start: {error}") from None
        if not ready.get("ready"):
            self.stop()
            raise WarmProcessError("the warm process did not start")

    def _send(self, message):
        try:
            self._process.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
            self._process.stdin.flush()
        except (OSError, ValueError) as error:
            self.stop()
            raise WarmProcessError(f"the warm process is gone ({error})") from None

    def _receive(self, timeout):
        """The warm process's next message; TimeoutError after ``timeout`` seconds, WarmProcessError when it ended."""
        deadline = time.monotonic() + timeout
        stream = self._process.stdout
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            readable, _, _ = select.select([stream], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                self.stop()
                raise WarmProcessError("the warm process ended")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            self.stop()
            raise WarmProcessError("the warm process answered something else") from None

    def pid(self):
        """The warm process's pid, or None when none is running."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def stop(self):
        if self._process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._process.wait()
        self._process.stdout.close()
        self._process = None


_WARM = _WarmProcess()
atexit.register(_WARM.stop)
