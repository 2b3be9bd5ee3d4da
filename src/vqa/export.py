"""`vqa export`: a model directory -> TensorFlow SavedModels for TensorFlow Serving (or any SavedModel server).

The output folder is laid out as TensorFlow Serving's ``--model_config_file``
expects, one numbered version per model::

    OUT/answer/1/          the VQA model (Keras ``model.export``): signature "serve" (and
                           "serving_default") over "question" int32 (N, T) token ids and
                           "image_features" float32 (N, 4096) or (N, S, S, 512); outputs
                           "answer" float32 (N, K) and, for a SAN, "attention" float32 (N, L, S*S)
    OUT/cnn/1/             with --with-cnn: VGG16 with its ImageNet preprocessing inside,
                           signature "serve" over "images" float32 (N, size, size, 3) RGB in
                           [0, 255] (already resized) -> "image_features"
    OUT/vocabulary.json    token id = position (tokenise with spaCy as `vqa prepare` does)
    OUT/answers.json       column i of "answer" is answers[i]
    OUT/export.json        what is where: inputs, shapes, checkpoint, source model directory

Everything is written into a hidden staging folder beside OUT and renamed into place at
the end, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from vqa import __version__, artifacts
from vqa.atomic import write_json_atomically
from vqa.config import CHECKPOINT
from vqa.errors import InputError

ANSWER_MODEL_DIR = "answer"
CNN_MODEL_DIR = "cnn"
MODEL_VERSION = "1"
EXPORT_JSON = "export.json"
SIGNATURE = "serve"


def export_model(model_dir: Path, out_dir: Path, *, checkpoint: str = CHECKPOINT, with_cnn: bool = False,
                 cnn_weights: str = artifacts.IMAGENET_WEIGHTS) -> Path:
    """Write the model (and, with ``with_cnn``, VGG16) as SavedModels plus the vocabulary and answers.

    Args:
        model_dir: a model directory written by ``vqa train``.
        out_dir: a new (or empty) folder to write.
        checkpoint: ``"last"`` (model.keras) or ``"best"`` (best.keras).
        with_cnn: also export the model's VGG16 feature extractor.
        cnn_weights: VGG16 weights for ``with_cnn``: ``"imagenet"``, a VGG16 ``.h5`` path or ``"random"``.
    Returns:
        ``out_dir``.
    Raises:
        InputError: ``out_dir`` exists and is not empty; not a model directory; a missing checkpoint;
            ``cnn_weights`` clearly not the weights the model's features came from (``with_cnn``).
    """
    from vqa import modeldir

    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    loaded = modeldir.load_model_dir(model_dir, checkpoint=checkpoint)  # checked before TensorFlow loads
    model, config, words, answers = loaded.model, loaded.config, loaded.words, loaded.answers
    if with_cnn:  # the exported VGG16 must compute the features the model was trained on
        from vqa.features import check_cnn_weights

        check_cnn_weights(modeldir.read_cnn_identity(Path(model_dir)), cnn_weights, model=model_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        model.export(str(staging / ANSWER_MODEL_DIR / MODEL_VERSION), format="tf_saved_model", verbose=False)
        layout = str(config.get("image_layout", artifacts.LAYOUT_VECTOR))
        image_size = int(config.get("image_size", artifacts.FC7_IMAGE_SIZE))
        if with_cnn:
            export_cnn(staging / CNN_MODEL_DIR / MODEL_VERSION, cnn_weights=cnn_weights, layout=layout,
                       image_size=image_size)
        write_json_atomically(staging / artifacts.VOCABULARY_JSON, words)
        write_json_atomically(staging / artifacts.ANSWERS_JSON, answers)
        write_json_atomically(staging / EXPORT_JSON, _description(model, config, model_dir, checkpoint,
                                                                   with_cnn=with_cnn, cnn_weights=cnn_weights),
                              indent=2)
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def export_cnn(path: Path, *, cnn_weights: str, layout: str, image_size: int) -> None:
    """VGG16 (fc2 or block5_pool) with ``preprocess_images`` inside, as a SavedModel with signature "serve"."""
    import keras
    import tensorflow as tf

    from vqa.features import load_cnn

    cnn = load_cnn(cnn_weights, layout=layout, image_size=image_size)
    archive = keras.export.ExportArchive()
    archive.track(cnn)

    def serve(images):
        # the same ImageNet preprocessing as vqa.features.preprocess_images (RGB -> BGR, minus the means)
        pixels = keras.applications.vgg16.preprocess_input(images)
        return {"image_features": cnn(pixels, training=False)}

    archive.add_endpoint(SIGNATURE, serve, input_signature=[
        tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name="images")])
    archive.write_out(str(path), verbose=False)


def _check_out_dir(out_dir: Path) -> None:
    """InputError when ``out_dir`` is a file or a folder with something in it."""
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: already exists and is not empty; choose a new --out folder")


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging folder to ``out_dir`` (replacing an empty one)."""
    if out_dir.is_dir():
        out_dir.rmdir()  # empty, checked before the export began
    staging.rename(out_dir)


def _description(model, config: dict, model_dir: Path, checkpoint: str, *, with_cnn: bool, cnn_weights: str) -> dict:
    """export.json: where each SavedModel is and what its signature takes and returns."""
    outputs = model.output if isinstance(model.output, dict) else {"answer": model.output}
    models = {"answer": {"path": f"{ANSWER_MODEL_DIR}/{MODEL_VERSION}", "signature": SIGNATURE,
                         "inputs": {layer.name: {"dtype": str(layer.dtype), "shape": list(layer.shape)}
                                    for layer in model.inputs},
                         "outputs": {name: list(tensor.shape) for name, tensor in outputs.items()}}}
    if with_cnn:
        size = int(config.get("image_size", artifacts.FC7_IMAGE_SIZE))
        models["cnn"] = {"path": f"{CNN_MODEL_DIR}/{MODEL_VERSION}", "signature": SIGNATURE,
                         "inputs": {"images": {"dtype": "float32", "shape": [None, size, size, 3],
                                               "note": "RGB in [0, 255], resized (bilinear) to a square"}},
                         "outputs": {"image_features": [None, *config.get("image_feature_shape", [4096])]},
                         "cnn_weights": cnn_weights}
    return {"source": str(Path(model_dir).resolve()), "checkpoint": checkpoint, "model": config.get("model"),
            "max_question_length": int(config.get("max_question_length", artifacts.MAX_QUESTION_LENGTH)),
            "image_layout": config.get("image_layout", artifacts.LAYOUT_VECTOR),
            "image_size": int(config.get("image_size", artifacts.FC7_IMAGE_SIZE)),
            "spacy_model": config.get("spacy_model"), "vocabulary": artifacts.VOCABULARY_JSON,
            "answers": artifacts.ANSWERS_JSON, "models": models, "vqa_version": __version__,
            "tensorflow_serving": "not run here; see docs/serving.md"}
