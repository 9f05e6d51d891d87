"""Runs inside the sandbox process. Not imported by the kit: started as a script.

Loads the *definitions* of a student's notebook (imports, functions, classes and
assignments of literal values; never the training or plotting statements), calls
the functions named in the request and writes back plain data only: JSON and
``.npz`` arrays (never pickles), one line per call as soon as the call ends, so a
later crash or kill keeps the finished ones.

Usage: python -I _sandbox_child.py REQUEST_DIR
  REQUEST_DIR/request.json  {"notebook": ..., "calls": [...], "call_timeout": s}
  REQUEST_DIR/inputs.npz    arrays referred to as {"array": key} in the calls' arguments
  REQUEST_DIR/results.jsonl written here, one JSON object per call
"""

import ast
import contextlib
import io
import json
import os
import signal
import sys

import numpy as np

MAX_TEXT = 2000


class CallTimeout(BaseException):
    """Raised in a student function that runs past its time limit."""


def _on_alarm(signum, frame):
    raise CallTimeout()


def _is_literal(node):
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def definitions_only(source):
    """Parse a code cell and keep only its imports, definitions and literal assignments."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    kept = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kept.append(node)
        elif isinstance(node, ast.Assign) and _is_literal(node.value):
            kept.append(node)
        elif isinstance(node, ast.AnnAssign) and node.value is not None and _is_literal(node.value):
            kept.append(node)
    return ast.Module(body=kept, type_ignores=[])


def load_definitions(notebook_path, time_limit=30):
    """Execute the notebook's definitions into a fresh namespace; report cells that failed.

    Each cell's definitions get ``time_limit`` seconds (a decorator or class body may loop).
    """
    with open(notebook_path, encoding="utf-8") as handle:
        notebook = json.load(handle)
    namespace = {"__name__": "__student__"}
    problems = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        try:
            module = definitions_only(source)
        except SyntaxError as error:
            problems.append(
                {
                    "cell": index,
                    "error": f"SyntaxError: {error.msg} (line {error.lineno} of that cell)",
                    "defines": _names_defined_in(source),
                }
            )
            continue
        signal.alarm(int(time_limit))
        try:
            with _quiet():
                exec(compile(module, f"<cell {index}>", "exec"), namespace)
        except CallTimeout:
            problems.append(
                {
                    "cell": index,
                    "error": f"its definitions did not load within {time_limit} s",
                    "defines": _names_defined_in(source),
                }
            )
        except (Exception, SystemExit, KeyboardInterrupt) as error:  # one broken cell must not hide the others
            problems.append(
                {
                    "cell": index,
                    "error": f"{type(error).__name__}: {error}"[:MAX_TEXT],
                    "defines": _names_defined_in(source),
                }
            )
        finally:
            signal.alarm(0)
    return namespace, problems


def _names_defined_in(source):
    """Best-effort names of functions defined in a cell that does not parse."""
    names = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("def ") and "(" in stripped:
            names.append(stripped[4 : stripped.index("(")].strip())
    return names


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _decode(value, inputs):
    if isinstance(value, dict) and set(value) == {"array"}:
        return np.array(inputs[value["array"]])  # a fresh copy for every call
    return value


def _numeric_array(value):
    array = np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"expected a numeric array, got {type(value).__name__} with dtype {array.dtype}")
    return array


def _describe_figure(figure):
    axes = []
    for ax in figure.get_axes():
        legend = ax.get_legend()
        axes.append(
            {
                "title": ax.get_title(),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
                "legend": [text.get_text() for text in legend.get_texts()] if legend else None,
                "lines": [
                    {
                        "label": str(line.get_label()),
                        "x": np.asarray(line.get_xdata(), dtype=float).tolist(),
                        "y": np.asarray(line.get_ydata(), dtype=float).tolist(),
                    }
                    for line in ax.get_lines()
                ],
                "images": len(ax.get_images()),
            }
        )
    return {"axes": axes}


def _convert(result, kind, name, arrays):
    """Turn a function's return value into JSON-able data plus arrays."""
    if kind == "none":
        return None
    if kind == "array":
        arrays[f"{name}__0"] = _numeric_array(result)
        return {"arrays": 1}
    if kind == "arrays":
        if not isinstance(result, (tuple, list)):
            raise TypeError(f"expected a tuple of arrays, got {type(result).__name__}")
        for index, item in enumerate(result):
            arrays[f"{name}__{index}"] = _numeric_array(item)
        return {"arrays": len(result)}
    if kind in ("model", "model_weights"):
        if not hasattr(result, "to_json"):
            raise TypeError(f"expected a Keras model, got {type(result).__name__}")
        if kind == "model":
            return {"json": result.to_json()}
        weights = result.get_weights()
        for index, item in enumerate(weights):
            arrays[f"{name}__{index}"] = _numeric_array(item)
        return {"json": result.to_json(), "arrays": len(weights)}
    if kind == "figure":
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        if result is None and plt.get_fignums():
            result = plt.gcf()
        if not isinstance(result, Figure):
            raise TypeError(f"expected a matplotlib Figure to be returned, got {type(result).__name__}")
        return _describe_figure(result)
    raise ValueError(f"unknown return kind {kind!r}")


def run_call(call, namespace, problems, inputs, call_timeout):
    name, function_name = call["name"], call["function"]
    record = {"name": name, "ok": False, "error": None, "value": None}
    arrays = {}
    function = namespace.get(function_name)
    if not callable(function):
        broken = [p for p in problems if function_name in p["defines"]]
        if broken:
            record["error"] = (
                f"`{function_name}` could not be defined: the cell with `def {function_name}(` "
                f"fails with {broken[0]['error']}."
            )
        else:
            record["error"] = f"The notebook defines no function `{function_name}`."
        return record, arrays
    args = [_decode(value, inputs) for value in call.get("args", [])]
    kwargs = {key: _decode(value, inputs) for key, value in call.get("kwargs", {}).items()}
    signal.alarm(int(call_timeout))
    try:
        with _quiet():
            result = function(*args, **kwargs)
            record["value"] = _convert(result, call.get("returns", "array"), name, arrays)
        record["ok"] = True
    except CallTimeout:
        record["error"] = f"`{function_name}` did not finish within {call_timeout} s."
    except (SystemExit, KeyboardInterrupt) as error:
        record["error"] = (
            f"`{function_name}` tried to end the program ({type(error).__name__}, e.g. sys.exit() "
            "or exit()); a graded function must return its result."
        )
    except Exception as error:
        record["error"] = f"`{function_name}` raised {type(error).__name__}: {error}"[:MAX_TEXT]
    finally:
        signal.alarm(0)
    if call.get("return_args") and record["ok"]:
        for index, arg in enumerate(args):
            if isinstance(arg, np.ndarray):
                arrays[f"{name}__arg{index}"] = arg
    return record, arrays


def main(request_dir):
    with open(os.path.join(request_dir, "request.json"), encoding="utf-8") as handle:
        request = json.load(handle)
    inputs_path = os.path.join(request_dir, "inputs.npz")
    inputs = dict(np.load(inputs_path, allow_pickle=False)) if os.path.exists(inputs_path) else {}
    signal.signal(signal.SIGALRM, _on_alarm)
    namespace, problems = load_definitions(request["notebook"], request["call_timeout"])
    results_path = os.path.join(request_dir, "results.jsonl")
    with open(results_path, "w", encoding="utf-8") as out:
        out.write(json.dumps({"cell_problems": problems}) + "\n")
        out.flush()
        for call in request["calls"]:
            # Written first, so the grader knows which call was running if this process dies in it.
            out.write(json.dumps({"started": call["name"]}) + "\n")
            out.flush()
            record, arrays = run_call(call, namespace, problems, inputs, request["call_timeout"])
            if arrays:
                try:
                    np.savez(os.path.join(request_dir, f"out_{call['name']}.npz"), **arrays)
                except OSError as error:  # e.g. past the file-size limit
                    record.update(
                        ok=False,
                        value=None,
                        error=f"`{call['function']}` returned more data than the grader accepts ({error.strerror}).",
                    )
            out.write(json.dumps(record) + "\n")
            out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
