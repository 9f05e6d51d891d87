"""coursekit: the engine behind the deep-learning course kit.

Modules, one concern each:

- ``data``: Fashion-MNIST without internet (Keras cache filled from local files).
- ``sandbox``: runs a student's functions in a separate, limited process; only data comes back.
- ``checks``: helpers for writing hidden checks (``expect``, model and figure inspection).
- ``pytest_plugin``: turns the hidden pytest graders into a per-check report.
- ``grading``: grades one notebook by running the hidden graders in a subprocess.
- ``nbgrader_plugin``: puts those results into nbgrader's autograde, so the gradebook has them.
- ``submissions``: the demo and test submissions (reference and flawed variants).
- ``cli``: ``python -m coursekit data|demo|reference|grade``.
"""

__version__ = "0.1.0"
