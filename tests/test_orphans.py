"""Sandboxed processes die with the process that started them (docs/threat_model.md, *Time and interruption*).

Killing ``nbgrader autograde``, a class-grading worker or the graders must not leave the re-run's kernel or a
sandbox child running as the sandbox's user, re-parented to init (they would count against
``SANDBOX_MAX_PROCESSES`` and keep a student's code running). A small Python process starts them, prints the pid
of ``unshare`` and waits; while it lives they live, and once it is killed with SIGKILL (no clean-up) they end too.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

import course_config
from coursekit.isolation import isolation

COMMAND_CHILD = """
import subprocess, sys, time
from coursekit import isolation
where = isolation.isolation()
child = subprocess.Popen([*where.prefix, "/bin/sleep", "600"], start_new_session=True,
                         preexec_fn=isolation.limit_resources(1024, 64, where.drops_privileges))
print(child.pid, flush=True)
time.sleep(600)
"""

KERNEL = """
import asyncio, sys, time
from coursekit.kernel_sandbox import SandboxedKernelManager
manager = SandboxedKernelManager(kernel_name="python3")
asyncio.new_event_loop().run_until_complete(manager.start_kernel(cwd=sys.argv[1]))
print(manager.provisioner.pid, flush=True)
time.sleep(600)
"""

needs_prefix = pytest.mark.skipif(
    not isolation().prefix, reason="no unshare prefix on this machine: " + "; ".join(isolation().missing)
)


def alive(pid):
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    children.setdefault(int(stat.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                pass
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def start_and_kill(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(course_config.ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        unshare = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while not descendants(unshare) and time.monotonic() < deadline:
            time.sleep(0.2)
        tree = [unshare, *descendants(unshare)]
        assert len(tree) >= 2 and all(alive(pid) for pid in tree)  # while the parent lives, they live
        time.sleep(1)
        assert all(alive(pid) for pid in tree)
    finally:
        parent.kill()  # SIGKILL: no atexit, no clean-up of its own
        parent.wait()
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in tree if alive(pid)]
    for pid in left:  # never leave them for the next test
        os.kill(pid, signal.SIGKILL)
    return tree, left


@needs_prefix
def test_a_sandbox_child_dies_with_the_process_that_started_it(tmp_path):
    tree, left = start_and_kill(COMMAND_CHILD, tmp_path)
    assert left == [], f"still running after their parent was killed: {tree}"


@needs_prefix
def test_the_re_run_kernel_dies_with_the_process_that_started_it(tmp_path):
    tree, left = start_and_kill(KERNEL, tmp_path)
    assert left == [], f"still running after their parent was killed: {tree}"


WARM_GRADING = """
import os, sys, threading, time
from pathlib import Path
from coursekit import warm_graders
folder = Path(sys.argv[1])
(folder / "test_sleep.py").write_text("import time\\n\\ndef test_sleep():\\n    time.sleep(600)\\n")
arguments = ["-q", "-p", "no:cacheprovider", str(folder / "test_sleep.py")]
grading = (arguments, str(folder), dict(os.environ), 600, str(folder / "log"))
threading.Thread(target=warm_graders.run_pytest, args=grading, daemon=True).start()
while warm_graders._WARM.pid() is None:
    time.sleep(0.1)
print(warm_graders._WARM.pid(), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm graders fork: Linux only")
def test_the_warm_graders_and_their_grading_die_with_the_process_that_started_them(tmp_path):
    tree, left = start_and_kill(WARM_GRADING, tmp_path)
    assert left == [], f"still running after their parent was killed: {tree}"
