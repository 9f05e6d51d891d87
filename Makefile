# Two commands do all the set-up on a fresh Debian machine (README.md):
#   make demo   the instructor's whole flow on demo submissions of every lab
#   make test   the kit's test suite
# Both are safe to run again.

# The Python that creates the environment (found before PATH points into .venv). The system's
# comes first: the sandbox's unprivileged user (course_config.SANDBOX_USER) must be able to run
# it, and cannot where Python lives in root's home (pyenv). Override with make PYTHON=...
ifndef PYTHON
PYTHON := $(shell for p in /usr/bin/python3.11 /usr/bin/python3; do [ -x $$p ] && echo $$p && exit 0; done; 	command -v python3.11 || command -v python3)
endif
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST_DEB_DIR := /usr/share/datasets/fashion-mnist

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: all venv data kernel browser lint release demo test reference grade benchmark calibrate-retraining clean-demo

all: test

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Fashion-MNIST without internet: Debian's package, copied into Keras's cache.
data: venv
	@if [ ! -d $(FASHION_MNIST_DEB_DIR) ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq >/dev/null && $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || true; \
	fi
	$(PY) -m coursekit data

# The notebooks' kernel is this virtual environment's Python.
kernel: venv
	$(PY) -m ipykernel install --prefix $(VENV) --name python3 --display-name "Python 3 (course kit)" >/dev/null

release: data kernel
	$(PY) -m coursekit release

demo: data kernel
	$(PY) -m coursekit demo

# A headless browser for the feedback-page tests (tests/test_feedback_pages.py; they skip without it).
browser:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq >/dev/null && $(SUDO) apt-get install -y -qq chromium >/dev/null; } || true; \
	fi

# The linter and the formatter's check, clean on the whole tree (configuration in pyproject.toml, [tool.ruff]);
# `ruff format .` fixes what the second one finds.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint data kernel browser
	$(PY) -m pytest

reference: data kernel
	$(PY) -m coursekit reference

# Grade every new or changed submission in submitted/ and record it with nbgrader (README.md,
# Grading a whole class): make grade [WORKERS=2] [ASSIGNMENTS=lab1_dense] [SCHEDULER=tcp://host:8786]
grade: data kernel
	$(PY) -m coursekit grade-class $(ASSIGNMENTS) $(if $(WORKERS),--workers $(WORKERS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER))

# Seconds per submission and throughput with 1 and 2 workers, per lab, from an empty grader cache
# (README.md, Grading a whole class): writes benchmark.json. Run it on an idle machine.
# make benchmark BASELINE=<commit> measures that revision too, in the same run: before and after.
benchmark: data kernel
	$(PY) -m coursekit.benchmark --out benchmark.json $(if $(BASELINE),--baseline $(BASELINE))

# The retraining check's calibration: the grader's recipe on honest and non-learning architectures of
# Labs 1 and 2 (README.md, Measured results); set the bars in course_config.py from its table.
calibrate-retraining: data
	$(PY) benchmarks/retraining_calibration.py --out docs/measurements/retraining-calibration-$$(date +%F).json

clean-demo:
	rm -rf submitted autograded/demo_* feedback gradebook.db grades.csv .class_grading
