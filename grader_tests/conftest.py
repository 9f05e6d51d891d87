"""Hidden graders: never released to students.

Run them on one notebook with::

    pytest grader_tests/test_lab1_dense.py --notebook submitted/STUDENT/lab1_dense/lab1_dense.ipynb

nbgrader's autograde runs them the same way (see nbgrader_config.py), and writes
each check's result into the notebook's test cell of the same grade id.
"""

from coursekit.pytest_plugin import *  # noqa: F401,F403  (options, fixtures and hooks)
