"""What machine this is, for the records of measurements (reference runs, the class-grading benchmark)."""

import platform
from pathlib import Path


def cpu_model():
    """The CPU's model name from ``/proc/cpuinfo`` (e.g. "Intel(R) Xeon(R) CPU @ 2.80GHz").

    Falls back to :func:`platform.processor`, then "unknown", where there is no such file or line.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
