"""The graders' memory of their own scores: computed once per content, recomputed when it changes."""

import importlib

import pytest

import course_config
from coursekit import checks


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(course_config, "GRADER_CACHE_DIR", tmp_path)
    return tmp_path


def test_a_score_is_computed_once_per_content(cache_dir):
    calls = []

    def compute():
        calls.append(1)
        return 0.9

    assert checks.remembered("retraining", "model A", compute) == 0.9
    assert checks.remembered("retraining", "model A", compute) == 0.9
    assert len(calls) == 1
    assert checks.remembered("retraining", "model B", compute) == 0.9
    assert checks.remembered("saved_model", "model A", compute) == 0.9
    assert len(calls) == 3
    assert len(list(cache_dir.rglob("*.json"))) == 3 and not list(cache_dir.rglob("*.tmp"))


def test_a_failed_computation_is_not_remembered(cache_dir):
    def broken():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        checks.remembered("retraining", "model A", broken)
    assert checks.remembered("retraining", "model A", lambda: 0.5) == 0.5


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSEKIT_GRADER_CACHE", str(tmp_path / "elsewhere"))
    try:
        assert importlib.reload(course_config).GRADER_CACHE_DIR == tmp_path / "elsewhere"
    finally:
        monkeypatch.undo()
        importlib.reload(course_config)
