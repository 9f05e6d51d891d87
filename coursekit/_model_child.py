"""Runs inside the sandbox: opens a submitted model file and predicts. Started as a script.

The grader has already read the file's configuration as data and accepted it
(:func:`coursekit.model_files.read_model_file`). Here, as the sandbox's user, without
network and without access to course files, the child

1. refuses HDF5 weights that reach outside the file (external links, soft links,
   external storage, virtual datasets) or declare far more data than they hold, before
   Keras opens them;
2. loads the model in Keras's safe mode, without compiling it;
3. predicts each array of ``inputs.npz`` and writes ``out.npz`` (probabilities, and
   the weights of the layer kinds asked for) and ``result.json``. No pickles.

Usage: python -I _model_child.py WORKDIR
  WORKDIR/model.keras, WORKDIR/inputs.npz,
  WORKDIR/request.json {"weights_of": [...], "max_weight_bytes": n, "batch_size": n}
"""

import json
import os
import sys
import zipfile


class RefusedFile(Exception):
    """The weights file reaches outside itself."""


def check_weights_structure(path, max_bytes):
    """Walk every link of the HDF5 file; refuse anything that is not a plain group or dataset in it,
    and datasets that declare more data than a submitted model may hold (``max_bytes``)."""
    import h5py

    def walk(group, where):
        for name in group:
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise RefusedFile(
                    f"its weights file has a {type(link).__name__} at {where}/{name}, which points outside the weights"
                )
            item = group[name]
            if isinstance(item, h5py.Group):
                walk(item, f"{where}/{name}")
            elif isinstance(item, h5py.Dataset):
                if item.external:
                    raise RefusedFile(f"its weights file stores {where}/{name} in external files")
                if item.is_virtual:
                    raise RefusedFile(f"its weights file has a virtual dataset at {where}/{name}")
                declared = int(item.size) * item.dtype.itemsize
                if declared > max_bytes:
                    raise RefusedFile(
                        f"its weights file declares {declared / 2**20:,.0f} MB of weights at "
                        f"{where}/{name}, more than a submitted model may hold"
                    )
            else:
                raise RefusedFile(f"its weights file holds an unexpected object at {where}/{name}")

    with h5py.File(path, "r") as handle:
        walk(handle, "")


def leaf_layers(model):
    """The model's layers, nested models (e.g. a pretrained base) replaced by their own layers.

    Defined here, where the model child needs it, because this script runs alone in the sandbox and
    imports nothing of the kit; :mod:`coursekit.checks` imports it from here (this module has no
    import-time effects)."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from leaf_layers(layer)
        else:
            yield layer


def main(workdir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before Keras (and TensorFlow) are imported below
    import numpy as np

    request = json.loads(open(os.path.join(workdir, "request.json"), encoding="utf-8").read())
    model_path = os.path.join(workdir, "model.keras")
    result = {"ok": False, "error": ""}
    try:
        with zipfile.ZipFile(model_path) as archive:
            archive.extract("model.weights.h5", os.path.join(workdir, "unpacked"))
        check_weights_structure(os.path.join(workdir, "unpacked", "model.weights.h5"), request["max_weight_bytes"])
        import keras

        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
        outputs = {}
        with np.load(os.path.join(workdir, "inputs.npz"), allow_pickle=False) as inputs:
            for name in inputs.files:
                predicted = np.asarray(
                    model.predict(inputs[name], batch_size=request.get("batch_size", 256), verbose=0), dtype=np.float32
                )
                outputs[f"predict__{name}"] = predicted
        kinds = set(request.get("weights_of", []))
        names = []
        for layer in leaf_layers(model):
            if type(layer).__name__ in kinds:
                for index, array in enumerate(layer.get_weights()):
                    outputs[f"weights__{len(names)}__{index}"] = np.asarray(array, dtype=np.float32)
                names.append(layer.name)
        np.savez(os.path.join(workdir, "out.npz"), **outputs)
        result.update(ok=True, weight_layers=names)
    except RefusedFile as error:
        result["error"] = str(error)
    except Exception as error:  # a damaged or hostile file: the grader reports it to the student
        result["error"] = f"Keras could not open or run it ({type(error).__name__}: {str(error)[:300]})"
    with open(os.path.join(workdir, "result.json"), "w", encoding="utf-8") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main(sys.argv[1])
