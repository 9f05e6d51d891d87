"""VGG16 as Lab 3's graders see it: the ImageNet base, its layers, and features to retrain a head on.

Everything here runs in the grader's process, from the kit's local copy of the
weights (:func:`coursekit.data.ensure_vgg16_weights`), never from anything a
student's code produced or downloaded.
"""

import functools
import hashlib

import numpy as np

from coursekit.atomic_files import write_atomically
from coursekit.checks import (
    conv_layers,
    expect,
    remembered,
    train_fresh_and_score,
)

# VGG16's base has plain Conv2D layers only (checks.conv_layers counts separable and depthwise ones too).
VGG16_CONV_KINDS = frozenset({"Conv2D"})
# Filters of VGG16's 13 convolutional layers, in order (blocks of 2, 2, 3, 3, 3).
VGG16_CONV_FILTERS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
# The mean ImageNet pixel that keras.applications.vgg16.preprocess_input subtracts, in BGR order.
IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


@functools.lru_cache(maxsize=2)
def imagenet_base(image_size=32):
    """VGG16's convolutional base with the ImageNet weights, loaded from the local file."""
    import keras

    from coursekit.data import ensure_vgg16_weights

    return keras.applications.VGG16(
        include_top=False, weights=str(ensure_vgg16_weights()), input_shape=(image_size, image_size, 3)
    )


@functools.lru_cache(maxsize=2)
def imagenet_features_model(layer, image_size=32):
    """The ImageNet base from its input up to ``layer`` (e.g. "block4_pool"): the grader's feature extractor."""
    import keras

    base = imagenet_base(image_size)
    return keras.Model(base.inputs, base.get_layer(layer).output, name=f"vgg16_to_{layer}")


def imagenet_conv_weights():
    """[(kernel, bias)] of the 13 ImageNet convolutions, in order."""
    return [tuple(layer.get_weights()) for layer in conv_layers(imagenet_base(), VGG16_CONV_KINDS)]


def expect_vgg16_base(model, what, min_conv_layers=13):
    """Fail unless ``model`` holds VGG16's convolutional layers, in order, at least ``min_conv_layers`` of them.

    A base cut after a middle block holds the first of VGG16's 13 convolutions; return the ones found.
    """
    convs = conv_layers(model, VGG16_CONV_KINDS)
    filters = tuple(getattr(layer, "filters", None) for layer in convs)
    expected = VGG16_CONV_FILTERS[: max(min_conv_layers, min(len(filters), len(VGG16_CONV_FILTERS)))]
    block = _block_of(min_conv_layers)
    expect(
        filters == expected,
        f"{what} should contain VGG16's convolutional base (keras.applications.VGG16(include_top=False)), at "
        f"least from its input through block {block}: {min_conv_layers} Conv2D layers with "
        f"{', '.join(map(str, VGG16_CONV_FILTERS[:min_conv_layers]))} filters, in this order; it has "
        f"{len(convs)} Conv2D layers{' with ' + str(list(filters)) + ' filters' if convs else ''}.",
    )
    return convs


def _block_of(conv_count):
    """The VGG16 block (1-5) whose last convolution is the ``conv_count``-th."""
    ends = (2, 4, 7, 10, 13)
    return next((block for block, end in enumerate(ends, 1) if conv_count <= end), 5)


def first_difference(weights, reference, tolerance):
    """Index of the first array of ``weights`` that differs from ``reference`` (None when all match)."""
    for index, (mine, theirs) in enumerate(zip(weights, reference)):
        if mine is None or np.shape(mine) != np.shape(theirs) or not np.allclose(mine, theirs, atol=tolerance):
            return index
    return None


def preprocessed(images, size, method="pad"):
    """What a correct input adapter gives for raw ``images``: VGG16's inputs, computed by the grader."""
    import keras

    grey = np.asarray(images, dtype=np.float32)[..., np.newaxis]
    if method == "pad":
        margin = (size - grey.shape[1]) // 2
        grey = np.pad(grey, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    else:
        grey = np.asarray(keras.ops.image.resize(grey, (size, size), interpolation="bilinear"))
    return np.repeat(grey, 3, axis=-1) - IMAGENET_BGR_MEAN


def _features_file(settings, data_key):
    import course_config

    digest = hashlib.sha256(
        repr(
            (
                settings.feature_layer,
                settings.feature_image_size,
                settings.retrain_train_size,
                settings.retrain_test_size,
                settings.retrain_seed,
                data_key,
                course_config.VGG16_WEIGHTS_SHA256,
            )
        ).encode()
    ).hexdigest()
    return course_config.GRADER_CACHE_DIR / "vgg16_features" / f"{digest}.npz"


def head_features(data, settings):
    """(train features, train labels, test features, test labels) of the grader's balanced subsets.

    Features are the ImageNet base's outputs at ``settings.feature_layer`` on zero-padded images, computed once and kept
    in the grader's cache folder (they depend only on the data, the weights and the settings).
    """
    from coursekit.checks import balanced_subset

    (x_train, y_train), (x_test, y_test) = data
    path = _features_file(settings, (len(x_train), len(x_test)))
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return tuple(stored[key] for key in ("train", "train_labels", "test", "test_labels"))
    train = balanced_subset(y_train, settings.retrain_train_size, settings.retrain_seed)
    test = balanced_subset(y_test, settings.retrain_test_size, settings.retrain_seed)
    size = settings.feature_image_size
    base = imagenet_features_model(settings.feature_layer, size)
    arrays = {
        "train": base.predict(preprocessed(x_train[train], size), batch_size=256, verbose=0),
        "train_labels": y_train[train],
        "test": base.predict(preprocessed(x_test[test], size), batch_size=256, verbose=0),
        "test_labels": y_test[test],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda partial: np.savez(partial, **arrays), suffix=".npz")  # parallel graders: never half
    return tuple(arrays[key] for key in ("train", "train_labels", "test", "test_labels"))


def head_retraining(head, data, settings, seed=None):
    """Train ``head`` from fresh, trainable weights on the grader's VGG16 features; return its test accuracy.

    As in :func:`coursekit.checks.brief_retraining`: the head is rebuilt from its configuration with
    every layer trainable and standard initializers (:func:`coursekit.checks.fresh_model`), and its
    batch-norm statistics are recomputed on the grader's training features before it is evaluated.
    (The VGG16 base is the grader's own, frozen ImageNet base: only the head is retrained.)

    The features are divided by one number, their standard deviation over the training features:
    VGG16's middle blocks output values in the hundreds, on which a head without normalisation (the
    keras.io way of writing it) learns little in a brief training, while a head that normalises its
    input is unaffected. The check tells a head that can learn from one that cannot, not how it scales.
    """
    train, train_labels, test, test_labels = head_features(data, settings)
    scale = float(np.std(train)) or 1.0
    train, test = train / scale, test / scale
    seed = settings.retrain_seed if seed is None else seed
    return train_fresh_and_score(head, (train, train_labels), (test, test_labels), settings, seed)


def check_head_retraining(head, data, settings):
    """The grader's brief training of the student's classifier head on its own features reaches the bar."""
    feature_shape = imagenet_features_model(settings.feature_layer, settings.feature_image_size).output_shape[1:]
    shape = tuple(head.inputs[0].shape[1:])
    expect(
        shape == tuple(feature_shape),
        f"build_classifier_head({feature_shape}) should take feature maps of shape {feature_shape}; "
        f"its input shape is {shape}.",
    )
    with open(__file__, "rb") as source:
        recipe = source.read()
    score = remembered(
        "head_retraining",
        head.to_json() + repr(settings) + recipe.decode("utf-8"),
        lambda: head_retraining(head, data, settings),
    )
    expect(
        score >= settings.retrain_min_accuracy,
        f"The grader trained your build_classifier_head() for {settings.retrain_epochs} epochs on VGG16 "
        f"features of {settings.retrain_train_size:,} training images (Adam, lr "
        f"{settings.retrain_learning_rate}, batch {settings.retrain_batch_size}); it reached {score:.3f} "
        f"accuracy on {settings.retrain_test_size:,} test images, below the bar of "
        f"{settings.retrain_min_accuracy:.3f}. Check that its layers can learn (trainable Dense layers, "
        "sensible activations and initialisation).",
    )
