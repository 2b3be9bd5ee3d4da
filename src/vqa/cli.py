"""`vqa <command>`: the command-line interface (the only module that reads argv).

Each sub-command has ``add_<cmd>_parser(sub)`` and ``run_<cmd>(args) -> int``;
the latter only turns flags into one library call. No library default is
restated here: a flag takes it from the library (a function's signature, a constant, or a
settings dataclass: ``TrainConfig``, ``DemoSettings``, ``ServeSettings``) and its
help states it. Library modules are imported inside functions, and the parser
imports only light ones, so that ``vqa --help`` never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vqa import __version__, artifacts, config
from vqa.errors import InputError, VQAError
from vqa.runtime import quiet_tensorflow


# --------------------------------------------------------------------------- prepare
def add_prepare_parser(sub) -> None:
    version = config.PREPARE_VERSION
    p = sub.add_parser("prepare", help="official VQA JSON -> preprocessed/ text files + HDF5")
    p.add_argument("--data-dir", type=Path, default=Path("data"),
                   help="folder holding the official JSON files (default: data)")
    p.add_argument("--version", choices=["v1", "v2"], default=version, help=f"VQA version (default: {version})")
    p.add_argument("--out", type=Path, default=Path("preprocessed"), help="output folder (default: preprocessed)")
    p.add_argument("--num-answers", type=int, default=artifacts.NUM_ANSWERS,
                   help=f"top-K answers kept as classes (default: {artifacts.NUM_ANSWERS}, the tutorial's)")
    p.add_argument("--max-question-length", type=int, default=artifacts.MAX_QUESTION_LENGTH,
                   help=f"tokens kept per question; longer ones are truncated (default: "
                        f"{artifacts.MAX_QUESTION_LENGTH}, the tutorial's)")
    p.add_argument("--spacy-model", default=None,
                   help="spaCy model name or folder with en_core_web_md vectors (default: auto-detect)")
    for split in ("train", "val"):
        p.add_argument(f"--{split}-questions", type=Path, default=None, help=f"{split} questions JSON (overrides --data-dir)")
        p.add_argument(f"--{split}-annotations", type=Path, default=None, help=f"{split} annotations JSON")
    p.add_argument("--test-dev-questions", type=Path, default=None, help="test-dev questions JSON")
    p.add_argument("--test-questions", type=Path, default=None, help="test questions JSON")
    p.set_defaults(func=run_prepare)


def run_prepare(args) -> int:
    from vqa.prepare import prepare_dataset

    files = {
        "train_questions": args.train_questions, "train_annotations": args.train_annotations,
        "val_questions": args.val_questions, "val_annotations": args.val_annotations,
        "test_dev_questions": args.test_dev_questions, "test_questions": args.test_questions,
    }
    prepare_dataset(
        data_dir=args.data_dir, version=args.version, out_dir=args.out,
        num_answers=args.num_answers, max_question_length=args.max_question_length,
        spacy_model=args.spacy_model, files={k: v for k, v in files.items() if v is not None},
    )
    return 0


# --------------------------------------------------------------------------- features
def add_features_parser(sub) -> None:
    p = sub.add_parser("features", help="VGG16 image features -> HDF5: fc7 vectors (Karpathy's .mat or images) "
                                        "or block5_pool grids (--grid, images)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--karpathy", type=Path, help="folder with Karpathy's vgg_feats.mat and dataset.json")
    source.add_argument("--images", type=Path, help="folder of images (COCO file names give the image ids)")
    p.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    p.add_argument("--grid", action="store_true",
                   help="block5_pool grid features float16 (N, S, S, 512) for attention models, "
                        "instead of fc7 vectors (with --images)")
    p.add_argument("--image-size", type=int, default=None,
                   help="with --grid: side the images are resized to, a multiple of 32; "
                        f"S = size / 32 (default: {artifacts.DEFAULT_GRID_IMAGE_SIZE}, the paper's 14 x 14; "
                        "224 gives 7 x 7)")
    p.add_argument("--cnn-weights", default=artifacts.IMAGENET_WEIGHTS,
                   help="imagenet (Keras download), a local VGG16 .h5 file, or random (tests/demos only) "
                        f"(default: {artifacts.IMAGENET_WEIGHTS})")
    batch_size = config.FEATURES_BATCH_SIZE
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"images per VGG16 batch (default: {batch_size}; lower it at --image-size "
                        f"{artifacts.DEFAULT_GRID_IMAGE_SIZE} if memory is short)")
    p.set_defaults(func=run_features)


def run_features(args) -> int:
    from vqa.features import build_features_file

    rows = build_features_file(args.out, images=args.images, karpathy=args.karpathy, grid=args.grid,
                               image_size=args.image_size, cnn_weights=args.cnn_weights,
                               batch_size=args.batch_size)
    print(f"wrote features of {rows} images to {args.out}")
    return 0


# --------------------------------------------------------------------------- synth
def add_synth_parser(sub) -> None:
    images, seed = config.SYNTH_IMAGES, config.SYNTH_SEED
    p = sub.add_parser("synth", help="generate a small dataset in the official VQA formats")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--images", type=int, default=images, help=f"number of rendered images (default: {images})")
    p.add_argument("--seed", type=int, default=seed, help=f"random seed (default: {seed})")
    low, high = config.RELATION_MIN_OBJECTS, config.RELATION_MAX_OBJECTS
    p.add_argument("--max-objects", type=int, default=None,
                   help=f"most shapes per image, 1-{config.MAX_OBJECTS} (default: {config.QUADRANT_OBJECTS}; "
                        f"with --relations {low}-{high}, default {high})")
    p.add_argument("--min-objects", type=int, default=None,
                   help=f"fewest shapes per image (default: 1; with --relations, {low})")
    p.add_argument("--relations", action="store_true",
                   help=f"cluttered scenes of {low}-{high} shapes and questions that need attention: which object "
                        "has which colour and shape, and where it is")
    p.add_argument("--disagreement", choices=config.SYNTH_DISAGREEMENTS, default=config.SYNTH_DISAGREEMENTS[0],
                   help="how the 10 simulated humans disagree: low (at most 4 stray, the true answer always "
                        "modal) or real (calibrated to VQA's human agreement per answer type, docs/data.md) "
                        f"(default: {config.SYNTH_DISAGREEMENTS[0]})")
    p.add_argument("--karpathy", action="store_true",
                   help="also write a Karpathy-style dataset.json + vgg_feats.mat (random-weight VGG16)")
    p.set_defaults(func=run_synth)


def run_synth(args) -> int:
    from vqa.synthetic import generate_dataset

    summary = generate_dataset(args.out, num_images=args.images, seed=args.seed, karpathy=args.karpathy,
                               max_objects=args.max_objects, min_objects=args.min_objects,
                               relations=args.relations, disagreement=args.disagreement)
    counts = ", ".join(f"{split} {count}" for split, count in summary.num_questions.items())
    print(f"wrote {args.images} images and questions ({counts}) to {args.out}")
    return 0


# --------------------------------------------------------------------------- evaluate
def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="official VQA accuracy of a results file, or of a model on a split; "
                                        "checks a submission")
    p.add_argument("--questions", type=Path, help="official questions JSON (with --model: checked that the "
                                                  "results answer each of its questions)")
    p.add_argument("--annotations", type=Path, help="official annotations JSON")
    _add_model_arguments(p, required=False)
    p.add_argument("--data", type=Path, help="preprocessed folder (with --model)")
    p.add_argument("--features", type=Path, help="image features HDF5 (with --model)")
    p.add_argument("--split", choices=["val", "test-dev", "test"], default="val", help="split to predict (with --model)")
    p.add_argument("--results", type=Path, default=None,
                   help="results JSON [{question_id, answer}] to score, or to write with --model")
    p.add_argument("--name", default=None, metavar="ALG",
                   help="with --model on test-dev or test, instead of --results: write the evaluation server's "
                        "file vqa_OpenEnded_mscoco_<split>_ALG_results.json into --results-dir")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="with --name: the folder to write the results file into (default: the current folder)")
    p.add_argument("--check-submission", type=Path, default=None, metavar="FILE",
                   help="check a results file before upload against --questions: every question answered once, "
                        "no other ids, the official file name; one line per problem")
    p.add_argument("--report", type=Path, default=None, help="write the accuracy report JSON here")
    batch_size = config.EVALUATE_BATCH_SIZE
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"prediction batch size (with --model; default: {batch_size})")
    # with --model; the report names the checkpoint scored
    _add_checkpoint_argument(p, config.CHECKPOINT)
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from vqa import evaluate

    if args.check_submission is not None:
        return run_check_submission(args)
    if args.model is not None:
        missing = [f"--{n}" for n in ("data", "features") if getattr(args, n) is None]
        if missing:
            raise VQAError(f"--model needs {' and '.join(missing)}")
        report = evaluate.evaluate_model(_resolve_model(args), data_dir=args.data, features_path=args.features,
                                         split=args.split, results_path=args.results, name=args.name,
                                         results_dir=args.results_dir, questions_path=args.questions,
                                         report_path=args.report, batch_size=args.batch_size,
                                         checkpoint=args.checkpoint)
        if report:
            print(evaluate.format_summary(report), end="")
        return 0
    if args.name is not None or args.results_dir is not None:
        raise VQAError("--name and --results-dir go with --model (writing a submission)")
    if args.questions is None or args.annotations is None or args.results is None:
        raise VQAError("give --questions, --annotations and --results, or --model --data --features, "
                       "or --check-submission FILE --questions")
    report = evaluate.evaluate_results_file(args.questions, args.annotations, args.results, report_path=args.report)
    print(evaluate.format_summary(report), end="")
    return 0


def run_check_submission(args) -> int:
    """`vqa evaluate --check-submission FILE --questions Q`: one stdout line per problem, OK or a stderr line."""
    from vqa.results import check_submission

    other = [flag for flag in ("model", "results", "name", "annotations") if getattr(args, flag) is not None]
    if other:
        raise VQAError(f"--check-submission takes --questions only, not --{other[0]}")
    if args.questions is None:
        raise VQAError("--check-submission needs --questions: the official questions JSON of the split")
    check = check_submission(args.check_submission, args.questions)
    if not check.ok:
        print("\n".join(check.lines()))
        raise InputError(f"{args.check_submission}: {len(check.problems):,} problems; fix them before uploading")
    print(f"OK: {check.num_answers} answers for {check.split or args.questions}")
    return 0


# --------------------------------------------------------------------------- train
TRAIN_HELP = {"mlp": "the tutorial's bag-of-words MLP (fc7 features)",
              "lstm": "the tutorial's 3 x 512 LSTM (fc7 features)",
              "san": "the stacked attention network over grid features (`vqa features --grid`; docs/attention.md)",
              "topdown": "the top-down attention model over grid features (`vqa features --grid`; docs/attention.md)"}


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train the tutorial's MLP or LSTM, or an attention model; writes a model "
                       "directory",
                       description="Train the tutorial's MLP or LSTM, or its 'way forward', an attention model: "
                       "top-down attention (topdown) or a stacked attention network (san). "
                       "`vqa train MODEL --help` lists MODEL's flags and its defaults.")
    models = p.add_subparsers(dest="model", required=True, metavar="{" + ",".join(TRAIN_HELP) + "}")
    for model, text in TRAIN_HELP.items():
        _add_train_model_parser(models, model, text)


def _add_train_model_parser(models, model: str, text: str) -> None:
    from vqa.config import TUTORIAL_RECIPE, TrainConfig, flag_fields

    p = models.add_parser(model, help=text, description=f"Train {text}. The topology and sizes are the "
                          "tutorial's (the papers' for san and topdown); the defaults add input scaling and a training "
                          "recipe that learns real questions faster and steadier (docs/training.md, "
                          "docs/real-questions.md). --tutorial-inputs gives the tutorial's raw inputs, "
                          "--tutorial-recipe its whole recipe; explicit flags override both.")
    p.add_argument("--data", type=Path, default=Path("preprocessed"), help="`vqa prepare` folder (default: preprocessed)")
    p.add_argument("--features", type=Path, required=True,
                   help="image features HDF5 (`vqa features`"
                   + ("; --grid)" if config.IMAGE_LAYOUTS[model] == artifacts.LAYOUT_GRID else ")"))
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--logdir", type=Path, default=Path(artifacts.DEFAULT_LOGDIR),
                   help=f"TensorBoard logs (default: {artifacts.DEFAULT_LOGDIR})")
    defaults = TrainConfig.for_model(model)
    for field in flag_fields(model):
        tutorial = TUTORIAL_RECIPE.get(field.name)
        _add_config_flag(p, field, getattr(defaults, field.name),
                         None if tutorial in (None, getattr(defaults, field.name)) else tutorial)
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--tutorial-inputs", action="store_true",
                        help="the tutorial's raw inputs: no image standardisation, no L2 norms")
    preset.add_argument("--tutorial-recipe", action="store_true",
                        help="the tutorial's whole recipe: raw inputs, modal loss, RMSprop, 'uniform' init, "
                             "dropout 0.5, no schedule")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue the run in --out with other --epochs")
    run.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=run_train)


def _add_config_flag(p, field, default, tutorial=None) -> None:
    """One settings field (TrainConfig, DemoSettings) as a flag whose help states its default (and the
    tutorial's, if other).

    The parsed value is None unless the flag is given, so the library applies its defaults and presets.
    """
    from vqa.config import flag_name, value_text

    flag = flag_name(field)
    note = f"default: {value_text(default)}" + ("" if tutorial is None else f"; the tutorial's: "
                                                 f"{value_text(tutorial)}")
    help_text = f"{field.metadata['help']} ({note})"
    kind, choices = field.metadata["flag"], field.metadata.get("choices")
    if kind == "switch":
        p.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif kind == "on":
        p.add_argument(flag, dest=field.name, action="store_true", default=None, help=help_text)
    else:
        p.add_argument(flag, dest=field.name, type=_flag_type(field), choices=choices, default=None,
                       help=help_text)


def _flag_type(field):
    """The argparse type of a settings field (its annotation, without ``| None``)."""
    annotation = str(field.type)
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str


def run_train(args) -> int:
    from vqa.config import TrainConfig, flag_fields
    from vqa.cluster import cluster_role
    from vqa.train import train_model

    values = {f.name: getattr(args, f.name) for f in flag_fields(args.model)}
    config = TrainConfig.for_model(args.model, tutorial_inputs=args.tutorial_inputs,
                                   tutorial_recipe=args.tutorial_recipe, **values)
    history = train_model(config, data_dir=args.data, features_path=args.features, out_dir=args.out,
                          logdir=args.logdir, resume=args.resume, overwrite=args.overwrite)
    last = {k: round(v[-1], 4) for k, v in history.items() if v and k != "epoch"}
    role = cluster_role(config.distribute)
    if role.is_chief:
        print(f"model written to {args.out}: {last}")
    else:  # its own copy went to a temporary folder, now removed
        print(f"{role.name} finished; the chief (worker 0) wrote the model to {args.out}: {last}")
    return 0


# --------------------------------------------------------------------------- ask
def add_ask_parser(sub) -> None:
    p = sub.add_parser("ask", help="answer a question about an image with a trained model (the tutorial's test.py)")
    _add_model_arguments(p)
    p.add_argument("--image", type=Path, required=True, help="image file (JPEG or PNG)")
    p.add_argument("--question", required=True, help='the question, e.g. "What color is the ground?"')
    p.add_argument("--top", type=int, default=config.TOP_ANSWERS,
                   help=f"number of answers to print (default: {config.TOP_ANSWERS})")
    p.add_argument("--attention", type=Path, default=None, metavar="OUT.png",
                   help="also write the image with each attention layer's map over it "
                   "(a `vqa train topdown` or `san` model)")
    _add_inference_arguments(p)
    p.set_defaults(func=run_ask)


def _add_inference_arguments(p) -> None:
    """--cnn-weights, --checkpoint and --spacy-model: what `vqa ask` loads, as the server's settings of the
    same names (ServeSettings) say."""
    import dataclasses

    from vqa.config import flag_name, value_text
    from vqa.serve_config import ServeSettings

    for field in dataclasses.fields(ServeSettings):
        if field.name in ("cnn_weights", "checkpoint", "spacy_model"):
            p.add_argument(flag_name(field), default=field.default, choices=field.metadata["choices"],
                           help=f"{field.metadata['help']} (default: {value_text(field.default)})")


MODEL_HELP = ("model directory written by `vqa train`, a packed file (`vqa pack`), or an http(s):// or file:// "
              "URL of one ending in `#sha256=<hex>`")


def _add_model_arguments(p, *, required: bool = True) -> None:
    """--model (a directory, a packed file or a URL) and --insecure-no-digest."""
    p.add_argument("--model", type=_model_spec, required=required, help=MODEL_HELP)
    p.add_argument("--insecure-no-digest", action="store_true",
                   help="accept a --model URL without `#sha256=<hex>` (local use only: nothing checks what arrives)")


def _model_spec(text: str) -> Path | str:
    """A --model value: a Path, or a URL kept as text (a Path would fold its "//")."""
    from vqa.package import is_url

    return text if is_url(text) else Path(text)


def _resolve_model(args) -> Path:
    """The model directory ``--model`` names (a packed file or URL is opened into the cache)."""
    from vqa.package import resolve_model

    return resolve_model(args.model, insecure_no_digest=args.insecure_no_digest)


def _add_checkpoint_argument(p, default: str) -> None:
    from vqa.modeldir import CHECKPOINTS

    p.add_argument("--checkpoint", choices=list(CHECKPOINTS), default=default,
                   help=f"weights that answer: last = model.keras (the last epoch), best = best.keras (the "
                        f"epoch with the lowest val loss) (default: {default})")


def run_ask(args) -> int:
    from vqa.predict import Predictor, answer_sentence, check_attention

    if not args.image.is_file():
        raise VQAError(f"{args.image}: image not found; pass --image with a JPEG or PNG file")
    if args.top < 1:
        raise VQAError(f"--top must be at least 1, got {args.top}")
    model_dir = _resolve_model(args)
    if args.attention is not None:
        check_attention(model_dir)  # before VGG16 and the model are loaded
    predictor = Predictor(model_dir, cnn_weights=args.cnn_weights, checkpoint=args.checkpoint,
                          spacy_model=args.spacy_model)
    if args.attention is None:
        answers = predictor.ask(args.image, args.question, top=args.top)
    else:
        from vqa.attention_figure import ask_with_attention_figure

        answers = ask_with_attention_figure(predictor, args.image, args.question, out=args.attention, top=args.top)
    for answer, probability in answers:
        print(f"{100 * probability:6.2f}%  {answer}")
    print(answer_sentence(args.question, *answers[0]))
    if args.attention is not None:
        print(f"attention maps written to {args.attention}")
    return 0


# --------------------------------------------------------------------------- serve
def add_serve_parser(sub) -> None:
    import dataclasses

    from vqa.config import flag_name, value_text
    from vqa.serve_config import ServeSettings

    p = sub.add_parser("serve", help="run the REST API: gunicorn on serving.app:create_app() (serving/README.md)",
                       description="Run the REST API under gunicorn. Each setting is taken from its flag, "
                       "else its VQA_* environment variable, else its default (docs/serving.md).")
    for field in dataclasses.fields(ServeSettings):
        env, default = field.metadata["env"], value_text(field.default)
        if field.metadata["required_flag"]:
            p.add_argument(flag_name(field), dest=field.name, type=_model_spec, required=True,
                           help=field.metadata["help"])
            continue
        help_text = f"{field.metadata['help']} (default: {env}, else {default})"
        if isinstance(field.default, bool):
            p.add_argument(flag_name(field), dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        else:
            p.add_argument(flag_name(field), dest=field.name, default=None, choices=field.metadata["choices"],
                           help=help_text)
    p.set_defaults(func=run_serve)


def run_serve(args) -> int:
    """Turn the flags into settings (flag, else environment, else default) and hand them to gunicorn."""
    from serving.launch import serve
    from vqa.serve_config import ServeSettings

    return serve(ServeSettings.from_environ(os.environ, flags=vars(args)))


# --------------------------------------------------------------------------- export
def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a model directory as TensorFlow SavedModels for TensorFlow Serving",
                       description="Write the answer model as a TensorFlow SavedModel (signature 'serve' over "
                       "'question' int32 token ids and 'image_features', output 'answer', plus 'attention' for a "
                       "SAN) in OUT/answer/1/, with vocabulary.json, answers.json and export.json beside it; "
                       "with --with-cnn also VGG16 (its preprocessing inside) in OUT/cnn/1/. See docs/serving.md.")
    _add_model_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="a new (or empty) folder to write")
    _add_checkpoint_argument(p, config.CHECKPOINT)
    p.add_argument("--with-cnn", action="store_true", help="also export the VGG16 feature extractor")
    cnn_weights = artifacts.IMAGENET_WEIGHTS
    p.add_argument("--cnn-weights", default=cnn_weights, help="with --with-cnn: VGG16 weights the training "
                   f"features used: imagenet, a local .h5, or random (default: {cnn_weights})")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from vqa.export import export_model

    out = export_model(_resolve_model(args), args.out, checkpoint=args.checkpoint, with_cnn=args.with_cnn,
                       cnn_weights=args.cnn_weights)
    print(f"SavedModel(s) written to {out}")
    return 0


# --------------------------------------------------------------------------- pack
def add_pack_parser(sub) -> None:
    p = sub.add_parser("pack", help="write a model directory as one checked file with a model card",
                       description="Write a model directory as one file: the chosen checkpoint (as model.keras), "
                       "config.json, vocabulary.json, answers.json, the history and the latest `vqa evaluate "
                       "--report` file, with a generated MODEL_CARD.md and a MANIFEST of every file's SHA-256, "
                       "checked when the file is opened. Every --model takes the file, or a URL of it ending in "
                       "#sha256=<hex>. See docs/serving.md.")
    p.add_argument("--model", type=Path, required=True, help="model directory written by `vqa train`")
    p.add_argument("--out", type=Path, required=True, help="the packed file to write, e.g. mlp.vqa.tar")
    _add_checkpoint_argument(p, config.CHECKPOINT)
    p.set_defaults(func=run_pack)


def run_pack(args) -> int:
    from vqa.package import pack_model, sha256_file

    out = pack_model(args.model, args.out, checkpoint=args.checkpoint)
    print(f"packed {args.model} ({args.checkpoint} checkpoint) into {out}; sha256 {sha256_file(out)}")
    return 0


# --------------------------------------------------------------------------- demo
def add_demo_parser(sub) -> None:
    from vqa.config import demo_flag_fields

    p = sub.add_parser("demo", help="run the whole tutorial on built-in synthetic data (no download)")
    p.add_argument("--workdir", type=Path, default=Path("demo"), help="where everything is written (default: demo)")
    for field in demo_flag_fields():
        _add_config_flag(p, field, field.default)
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from vqa.config import DemoSettings, demo_flag_fields
    from vqa.demo import run_demo as demo

    values = {f.name: getattr(args, f.name) for f in demo_flag_fields() if getattr(args, f.name) is not None}
    demo(args.workdir, settings=DemoSettings(**values))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `vqa` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="vqa", description="Visual Question Answering with Keras (VQA v2).")
    parser.add_argument("--version", action="version", version=f"vqa-keras {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for add in (add_prepare_parser, add_features_parser, add_synth_parser, add_evaluate_parser, add_train_parser,
                add_ask_parser, add_serve_parser, add_export_parser, add_pack_parser, add_demo_parser):
        add(sub)
    return parser


def _needs_tensorflow(args) -> bool:
    """Whether the command will run Keras (then TensorFlow is imported quietly up front)."""
    light = {"prepare": True, "synth": not getattr(args, "karpathy", False),
             "features": getattr(args, "karpathy", None) is not None,
             "evaluate": getattr(args, "model", None) is None or getattr(args, "check_submission", None) is not None,
             "serve": True,  # gunicorn's workers import TensorFlow, not this process
             "pack": True}
    return not light.get(args.command, False)


def main(argv: list[str] | None = None) -> int:
    """Run one `vqa` command; known errors become one stderr line and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    if _needs_tensorflow(args):
        quiet_tensorflow()
    try:
        return args.func(args)
    except VQAError as error:
        print(f"vqa {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vqa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
