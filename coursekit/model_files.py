"""A submitted ``.keras`` file is untrusted input: read as data first, opened only in the sandbox.

A model file can do more than Keras's safe mode stops: a built-in layer such as
``TFSMLayer`` loads and runs another file, and HDF5 weights can point at files on the
grading machine (external storage, external links, virtual datasets). So the graders
never load a submitted model in their own process:

1. :func:`read_model_file` reads the zip archive and its ``config.json`` as plain data
   and refuses anything but what ``model.save("x.keras")`` writes: known members only,
   every object a class of Keras itself, every layer one of :data:`SAFE_LAYERS` (built-in
   layers that compute from their own weights only);
2. :func:`rebuild_architecture` rebuilds the architecture from that configuration
   (weights are never read here), so the lab's architecture rules can be applied to it;
3. :func:`run_model_file` hands the file to a sandbox child (``coursekit/_model_child.py``:
   unprivileged user, no network, no course files, time and memory limits) that checks the
   HDF5 weights' structure, loads the model in safe mode and sends back only predictions
   and the weights asked for.
"""

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import course_config
from coursekit.checks import CheckFailed, expect

WEIGHTS_MEMBER = "model.weights.h5"
ALLOWED_MEMBERS = frozenset({"config.json", "metadata.json", WEIGHTS_MEMBER})
MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
# How Keras writes plain values (tensors' places in the graph, arrays, bytes, slices) in a configuration.
VALUE_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"})

# Built-in Keras layers that compute from their configuration and weights only: no file, no code.
# Normalisation and regularisation layers: safe to load, and left out of a model's structure when it is
# compared with what a build function gives (coursekit.saved_model.IGNORED_IN_SIGNATURE).
NORMALISATION_AND_REGULARISATION = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
)
SAFE_LAYERS = frozenset(
    {
        "InputLayer",
        "Dense",
        "EinsumDense",
        "Activation",
        "Identity",
        "Masking",
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "SeparableConv1D",
        "SeparableConv2D",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
        *NORMALISATION_AND_REGULARISATION,
        "Reshape",
        "Flatten",
        "Permute",
        "RepeatVector",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
        "Concatenate",
        "Dot",
        "ReLU",
        "LeakyReLU",
        "PReLU",
        "ELU",
        "Softmax",
        "Rescaling",
        "Normalization",
        "Resizing",
        "CenterCrop",
        "RandomCrop",
        "RandomFlip",
        "RandomTranslation",
        "RandomRotation",
        "RandomZoom",
        "RandomContrast",
        "RandomBrightness",
        "RandomGaussianBlur",
        "RandomErasing",
        "RandomSharpness",
        "RandomGrayscale",
        "RandomColorJitter",
        "RandomPerspective",
        "RandomShear",
        "AutoContrast",
        "Solarization",
        "RandomInvert",
        "RandomPosterization",
    }
)


@dataclass
class ModelFile:
    """A submitted model file that passed :func:`read_model_file`."""

    path: Path
    config: dict = field(repr=False)
    content: bytes = field(repr=False)

    @property
    def name(self):
        return self.path.name

    @property
    def sha256(self):
        return hashlib.sha256(self.content).hexdigest()


def _fix_hint():
    return "Save the model with model.save(MODEL_PATH) and submit the file it writes."


def read_model_file(path):
    """Read a submitted ``.keras`` file as data and refuse what ``model.save`` would not write.

    Raises
    ------
    CheckFailed
        With a message for the student: missing, not a zip archive, too large unpacked,
        other members than a saved model has, or a configuration that is not made of
        Keras's own safe layers (:func:`config_problems`).
    """
    path = Path(path)
    name = path.name
    expect(
        path.is_file() and not path.is_symlink(),
        f"The saved model file {name} is missing from the submission. Run the notebook's save cell and "
        "submit the file with it.",
    )
    limit = course_config.SUBMITTED_MODEL_MAX_MB * 1024 * 1024
    expect(
        path.stat().st_size <= limit,
        f"{name} is {path.stat().st_size / 2**20:.0f} MB; the grader accepts at most "
        f"{course_config.SUBMITTED_MODEL_MAX_MB} MB. {_fix_hint()}",
    )
    content = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = archive.infolist()
            names = [member.filename for member in members]
            unpacked = sum(member.file_size for member in members)
            expect(
                unpacked <= limit,
                f"{name} unpacks to {unpacked / 2**20:.0f} MB; the grader accepts at most "
                f"{course_config.SUBMITTED_MODEL_MAX_MB} MB. {_fix_hint()}",
            )
            expect(
                "config.json" in names and WEIGHTS_MEMBER in names,
                f"{name} holds no model configuration and weights (config.json, {WEIGHTS_MEMBER}): it is "
                f"not a file written by model.save(MODEL_PATH). {_fix_hint()}",
            )
            odd = sorted(set(names) - ALLOWED_MEMBERS)
            expect(
                not odd and len(names) == len(set(names)),
                f"{name} holds files a saved Keras model does not have ({', '.join(odd[:5]) or 'duplicates'}). "
                f"{_fix_hint()}",
            )
            config = json.loads(archive.read("config.json").decode("utf-8"))
    except CheckFailed:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError, NotImplementedError):
        raise CheckFailed(
            f"{name} is not a complete Keras model file: a .keras file is a zip archive, and this one is "
            f"damaged, cut short or something else (e.g. an .h5 file renamed). {_fix_hint()}"
        ) from None
    problems = config_problems(config)
    expect(
        not problems,
        f"{name} cannot be graded: {'; '.join(problems[:3])}. The grader opens only models "
        "made of Keras's built-in layers that compute from their own weights (no Lambda, "
        "TFSMLayer or custom layers, nothing that loads other files).",
    )
    return ModelFile(path, config, content)


def config_problems(config):
    """What in a model configuration (``config.json`` as data) the grader refuses to open.

    Every object must be a class of Keras itself (module ``keras`` or ``keras.*``, no
    registered custom name), and every layer one of :data:`SAFE_LAYERS`, nested models
    included. The compile configuration is ignored: the grader loads without compiling.
    """
    problems = []

    def visit(node, where):
        if isinstance(node, list):
            for item in node:
                visit(item, where)
            return
        if not isinstance(node, dict):
            return
        if "class_name" in node:
            kind, module = node.get("class_name"), node.get("module")
            registered = node.get("registered_name")
            if not isinstance(kind, str):
                problems.append(f"an object without a proper class name in {where}")
                return
            if kind in VALUE_MARKERS:
                return
            if not (isinstance(module, str) and (module == "keras" or module.startswith("keras."))):
                problems.append(f"{kind} is not one of Keras's own classes (module {module!r})")
            elif kind != "function" and registered not in (None, kind) and not str(registered).startswith("keras"):
                problems.append(f"{kind} is registered as a custom object ({registered!r})")
            elif kind not in MODEL_CLASSES and (module.startswith("keras.layers") or where == "layers"):
                if kind not in SAFE_LAYERS:
                    problems.append(f"it contains a {kind} layer")
            where = kind
        for key, value in node.items():
            if key == "compile_config":
                continue
            visit(value, "layers" if key in ("layers", "layer") else where)

    if not isinstance(config, dict) or config.get("class_name") not in MODEL_CLASSES:
        return ["its config.json does not describe a Keras model"]
    visit(config, "model")
    return sorted(set(problems), key=problems.index)


def rebuild_architecture(model_file):
    """The model that ``model_file``'s configuration describes, with fresh weights (none are read).

    Only called on a configuration :func:`read_model_file` accepted; Keras's safe mode
    stays on as a second line of defence.
    """
    import keras

    config = dict(model_file.config)
    config.pop("compile_config", None)
    try:
        return keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as error:
        raise CheckFailed(
            f"The architecture in {model_file.name} could not be rebuilt from its configuration "
            f"({type(error).__name__}: {str(error)[:200]}). {_fix_hint()}"
        ) from None


def run_model_file(model_file, images, timeout, weights_of=()):
    """Predictions of the submitted model on ``images``, computed in the sandbox.

    Parameters
    ----------
    model_file : ModelFile
    images : dict
        ``{name: array of raw images}``; each comes back as ``{name: probabilities}``.
    weights_of : sequence of str
        Layer class names (e.g. ``("Conv2D",)``) whose weights come back too, as
        ``weights[layer name] = tuple of arrays``, in the model's order.
    timeout : float
        Seconds for loading and predicting (a lab's ``model_timeout_s`` in course_config.py).

    Raises
    ------
    CheckFailed
        When the file cannot be opened or run in the sandbox, or takes too long.
    """
    from coursekit.sandbox import run_model_child

    outcome = run_model_child(model_file.content, images, weights_of, timeout)
    if outcome.get("error"):
        raise CheckFailed(f"{model_file.name} could not be evaluated: {outcome['error']}")
    return outcome
