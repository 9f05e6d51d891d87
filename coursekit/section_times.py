"""How long each section of a lab takes: a table in the notebook, measured on the kept reference run.

nbclient records when each cell started and finished (``cell.metadata.execution``). The kept
reference notebook (``reference_solution/<lab>/<lab>.ipynb``) holds those times for one seed's run
of the whole notebook, so the section times a student reads are measured, not estimated:

    python -m coursekit.section_times          # rewrite the table cell of every source notebook
    python -m coursekit reference LAB --text-only && python -m coursekit release

The table goes into the markdown cell that holds :data:`MARKER` (one is added after the notebook's
introduction when there is none). ``tests/test_notebook_text.py`` checks the released tables
against the kept reference notebooks.
"""

import json
import re
import sys
import nbformat

import course_config
from coursekit.notebooks import cell_run_times, rewrite_notebook

MARKER = "<!-- section times: made by `python -m coursekit.section_times` from the kept reference run -->"
SECTION = re.compile(r"^## (\d+\. .+)$", re.MULTILINE)
SHOWN_FROM_S = 10  # sections faster than this are added up in one row


def section_seconds(notebook):
    """{section heading ("6. Compile and train"): seconds its code cells ran}, in notebook order."""
    seconds, section = {}, None
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            headings = SECTION.findall(cell.source)
            section = headings[-1] if headings else section
            continue
        times = cell_run_times(cell)
        if section is not None and times is not None:
            seconds[section] = seconds.get(section, 0.0) + times[1] - times[0]
    return seconds


def _kept_run(lab):
    results = json.loads((course_config.REFERENCE_DIR / lab.assignment / "results.json").read_text(encoding="utf-8"))
    seed = results["kept"]["seed"]
    run = next(run for run in results["runs"] if run["seed"] == seed)
    return {"hardware": results.get("hardware", {}), **run}  # older results record the hardware once


def _machine(hardware):
    gpu = f", GPU {hardware['gpu']}" if hardware.get("gpu") else ", no GPU"
    cpu = hardware.get("cpu", "CPU").replace("(R)", "").replace(" Processor", "")
    return f"a {hardware.get('cores', '?')}-core {cpu} CPU{gpu}"


def table_markdown(lab, executed):
    """The table cell's text for ``lab`` from its executed reference notebook ``executed``."""
    run = _kept_run(lab)
    seconds = section_seconds(executed)
    shown = [(name, value) for name, value in seconds.items() if value >= SHOWN_FROM_S]
    rest = [value for value in seconds.values() if value < SHOWN_FROM_S]
    lines = [
        MARKER,
        "",
        f"**Time per section** in the course's reference run (seed {run['seed']}, {_machine(run['hardware'])}; "
        "the cells' own run times, as nbclient recorded them). Your machine's times differ "
        "(a GPU shortens the training sections most).",
        "",
        "| Section | Time |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {round(value):,} s |" for name, value in shown]
    if rest:
        lines.append(f"| the other {len(rest)} sections together | {round(sum(rest)):,} s |")
    lines.append(f"| all sections | {round(sum(seconds.values())):,} s |")
    return "\n".join(lines)


def update(notebook, text):
    """Put ``text`` into the notebook's section-times cell, or a new one after the title and the grading table."""
    from coursekit.grading_table import is_table_cell

    for cell in notebook.cells:
        if cell.cell_type == "markdown" and MARKER in cell.source:
            cell.source = text
            return notebook
    after = next((index for index, cell in enumerate(notebook.cells) if is_table_cell(cell)), 0)
    notebook.cells.insert(after + 1, nbformat.v4.new_markdown_cell(text))
    return notebook


def main(argv=None):
    labs = [course_config.lab_settings(name) for name in (argv or [])] or list(course_config.LABS)
    for lab in labs:
        executed_path = course_config.REFERENCE_DIR / lab.assignment / lab.notebook
        if not executed_path.exists():
            print(f"{lab.assignment}: no reference run yet ({executed_path}): left as it is")
            continue
        text = table_markdown(lab, nbformat.read(executed_path, as_version=4))
        path = course_config.SOURCE_DIR / lab.assignment / lab.notebook
        changed = rewrite_notebook(path, lambda notebook, text=text: update(notebook, text))
        print(f"{path}: section times {'updated' if changed else 'up to date'}")


if __name__ == "__main__":
    main(sys.argv[1:])
