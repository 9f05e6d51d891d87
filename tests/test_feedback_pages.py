"""No script from a submission runs in a page rendered from it (docs/threat_model.md, *Active content*).

A notebook with every kind of active content (a ``<script>`` and an event handler in markdown, a
``javascript:`` link, ``application/javascript``, ``text/html`` with a script and ``image/svg+xml``
with a handler in outputs, a raw cell) is rendered to HTML with nbconvert, as nbgrader's feedback
and formgrader do, after :class:`coursekit.nbgrader_preprocessors.SanitizeSubmission`; the page is then
loaded in a real headless Chromium, whose DOM after the scripts ran is searched for the mark each
script would leave. The same page without the sanitizer shows the marks (the test can see a script
run), and honest HTML (a table, bold text) still renders. Outputs over
``course_config.NOTEBOOK_OUTPUT_MAX_CHARS`` are cut with a note.

Needs ``/usr/bin/chromium`` (Debian's ``chromium`` package; ``make test`` installs it).
"""

import copy
import os
import shutil
import subprocess
import tempfile

import nbformat
import pytest
from nbconvert import HTMLExporter
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

import course_config
from coursekit.nbgrader_preprocessors import SanitizeSubmission, bounded_output

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=(
        "Chromium is not installed: `apt-get install -y chromium` (make test does) to check pages in a real browser"
    ),
)

MARK = "submission" + "-script-ran"  # what each script writes into the page; its source never spells it out


def marker_script(where):
    return f"document.body.setAttribute('data-{where}', 'submission' + '-script-ran')"


def hostile_notebook():
    return new_notebook(
        cells=[
            new_markdown_cell(
                f"# Answer\n<script>{marker_script('md')}</script>\n"
                f"<img src='x' onerror=\"{marker_script('onerror')}\">\n"
                f"[click](javascript:{marker_script('link')})\n\n**bold answer**"
            ),
            new_raw_cell(f"<script>{marker_script('raw')}</script>", metadata={"format": "text/html"}),
            new_code_cell(
                "display(...)",
                outputs=[
                    new_output(
                        "display_data", data={"application/javascript": marker_script("js"), "text/plain": "js"}
                    ),
                    new_output(
                        "display_data",
                        data={
                            "text/html": f"<table><tr><td>honest cell</td></tr></table>"
                            f"<script>{marker_script('html')}</script>"
                            f'<div onmouseover="{marker_script("hover")}">x</div>'
                        },
                    ),
                    new_output(
                        "display_data",
                        data={
                            "image/svg+xml": f"<svg xmlns='http://www.w3.org/2000/svg' "
                            f'onload="{marker_script("svg")}"></svg>'
                        },
                    ),
                ],
            ),
        ]
    )


def render(notebook, sanitize, folder):
    if sanitize:
        notebook, _ = SanitizeSubmission().preprocess(notebook, {})
    body, _ = HTMLExporter().from_notebook_node(notebook)
    page = folder / ("sanitized.html" if sanitize else "raw.html")
    page.write_text(body, encoding="utf-8")
    return page


def dom_after_scripts(page):
    with tempfile.TemporaryDirectory(prefix="coursekit-chromium-") as profile:
        run = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=3000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0 and "<body" in run.stdout, run.stderr[-2000:]
    return run.stdout


@needs_chromium
def test_no_script_from_a_submission_runs_in_its_page(tmp_path):
    dom = dom_after_scripts(render(hostile_notebook(), True, tmp_path))
    assert MARK not in dom
    assert "<table>" in dom and "honest cell" in dom and "<strong>bold answer</strong>" in dom  # honest HTML stays
    assert 'href="javascript:' not in dom


@needs_chromium
def test_the_browser_check_sees_a_script_that_runs(tmp_path):
    """Without the sanitizer the same page runs the submission's scripts: the check above can fail."""
    dom = dom_after_scripts(render(hostile_notebook(), False, tmp_path))
    assert MARK in dom


def test_sanitized_notebook_has_no_active_content_left():
    """The same without a browser, on the notebook itself (what formgrader and Jupyter would show)."""
    notebook, _ = SanitizeSubmission().preprocess(hostile_notebook(), {})
    text = nbformat.writes(notebook)
    assert "<script" not in text and "onerror=" not in text and "onload=" not in text
    assert "onmouseover" not in text and "application/javascript" not in text and "image/svg+xml" not in text


def test_huge_outputs_are_cut_with_a_note_and_small_ones_kept():
    limit = course_config.NOTEBOOK_OUTPUT_MAX_CHARS
    huge = bounded_output(new_output("stream", name="stdout", text="9" * (3 * limit)))
    assert len(huge.text) < limit + 500 and "output cut by the grader" in huge.text
    image = bounded_output(new_output("display_data", data={"image/png": "A" * (2 * limit)}))
    assert "image/png" not in image.data and "left out" in image.data["text/plain"]
    small = new_output("stream", name="stdout", text="loss 0.31\n")
    assert bounded_output(copy.deepcopy(small)) == small
    figure = new_output("display_data", data={"image/png": "iVBORw0KGgo="})
    assert bounded_output(copy.deepcopy(figure)) == figure
