"""The warm graders' process: imports Keras once, then forks one fresh process per grading. Started as a script.

It imports only third-party modules (Keras and TensorFlow, numpy, pytest, scikit-learn's metrics),
never the kit or course_config, and runs no TensorFlow operation: every grading is a fork of this
state that imports the kit, the graders and their conftest itself, as a new Python process would.
Nothing flows back from a grading to this process except its exit status, so no grading can
reach another.

Protocol, one JSON line per message. On stdin, a request::

    {"argv": [pytest arguments], "cwd": folder, "env": {environment}, "log": file for stdout and stderr}

On stdout, ``{"pid": n}`` as soon as the grading's process exists (it leads its own process group, so
the caller can kill it and its children), then ``{"pid": n, "status": code}`` when it has ended (a
negative code: killed by that signal). Stdin closed (the caller has ended, or was killed): the running
grading is killed and this process ends.

Usage: python _warm_graders_child.py
"""

import json
import os
import select
import signal
import sys


def _grade(request):
    """In the forked process: become what ``python -m pytest ARGV`` started in ``cwd`` would be."""
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path.insert(0, request["cwd"])  # as `python -m` puts its working folder first
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    sys.argv = ["pytest", *request["argv"]]
    status = 1
    try:
        import pytest

        status = int(pytest.main(request["argv"]))
    except BaseException as error:  # anything, so that the fork never returns into the request loop
        print(f"the graders could not run: {type(error).__name__}: {error}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _warm_up():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras  # noqa: F401  (the point of this process: imported once, before any fork)
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import sklearn.metrics  # noqa: F401


def _lines(fd):
    """Lines read from ``fd`` as they come (None at its end), without Python's buffering: select sees them."""
    pending = b""
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line
        chunk = os.read(fd, 65536)
        if not chunk:
            yield None
            return
        pending += chunk


def _wait(pid, stdin):
    """The grading's exit status; when stdin ends meanwhile (the caller is gone), kill the grading and leave."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        readable, _, _ = select.select([stdin], [], [], 0.05)
        if readable and not os.read(stdin, 65536):
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)


def main():
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # the script's own folder: the kit's modules are imported as a package, in each grading
    _warm_up()
    stdin, out = sys.stdin.fileno(), sys.stdout
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in _lines(stdin):
        if line is None:
            return
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _grade(request)
        print(json.dumps({"pid": pid}), file=out, flush=True)
        print(json.dumps({"pid": pid, "status": _wait(pid, stdin)}), file=out, flush=True)


if __name__ == "__main__":
    main()
