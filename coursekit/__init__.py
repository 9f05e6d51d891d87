"""coursekit: the engine behind the deep-learning course kit.

Modules, one concern each:

- ``data``: Fashion-MNIST and VGG16's ImageNet weights without internet (Keras's caches filled
  from local files).
- ``notebooks``: reads a submitted notebook safely, or says why it cannot be graded.
- ``isolation``: how student code is isolated (the protections this machine allows, limits,
  scratch folders, environment, readable files, closing a course's private folders).
- ``sandbox`` (with ``_sandbox_child``, the script it starts): runs a student's functions in a
  separate, limited process; only data comes back.
- ``kernel_sandbox``: nbgrader's re-execution of a notebook, in a kernel isolated like the sandbox.
- ``checks``: helpers for writing hidden checks (``expect``, model and figure inspection).
- ``vgg16``: VGG16 as Lab 3's graders see it (the ImageNet base from the local file, its features).
- ``pytest_plugin``: turns the hidden pytest graders into a per-check report.
- ``grading``: grades one notebook by running the hidden graders in a subprocess.
- ``warm_graders`` (with ``_warm_graders_child``): that subprocess, forked from a process that imported Keras once.
- ``nbgrader_preprocessors``: the kit's nbgrader steps (sanitizing, the graders' verdicts into
  nbgrader's autograde so the gradebook has them, safe pages); ``nbgrader_plugin`` is its old name.
- ``course``: the instructor's nbgrader flow (release, autograde, feedback, export), step by step.
- ``class_worker``: grades one submission from its files (graders and quick-mode re-run side by side).
- ``class_results``: class grading's results (``SubmissionResult``), stored under a fingerprint, for resuming.
- ``gradebook_writer``: records stored results with nbgrader (the one gradebook writer, and the
  stand-ins for nbgrader's slow steps that read them).
- ``classgrading``: ``grade-class``, a whole class with parallel workers or on Dask.
- ``benchmark``: ``make benchmark``, seconds per submission and throughput with 1 and 2 workers.
- ``submissions``: the demo and test submissions (reference and flawed variants).
- ``demo``: ``make demo``, the instructor's whole flow on demo submissions.
- ``reference``: the reference runs (``make reference``).
- ``cli``: ``python -m coursekit data|release|demo|reference|grade|grade-class``.
"""

__version__ = "0.1.0"
