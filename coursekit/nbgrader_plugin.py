"""Deprecated name of :mod:`coursekit.nbgrader_preprocessors`, kept so that a course's ``nbgrader_config.py``
written for an earlier kit still loads; import from ``coursekit.nbgrader_preprocessors`` instead."""

from coursekit.nbgrader_preprocessors import *  # noqa: F401,F403
