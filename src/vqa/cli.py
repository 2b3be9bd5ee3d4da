"""`vqa <command>`: the command-line interface (the only module that reads argv).

Each sub-command has ``add_<cmd>_parser(sub)`` and ``run_<cmd>(args) -> int``;
the latter only turns flags into one library call. Library modules are imported
inside ``run_*`` so that ``vqa --help`` never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vqa import __version__
from vqa.errors import VQAError
from vqa.runtime import quiet_tensorflow


# --------------------------------------------------------------------------- prepare
def add_prepare_parser(sub) -> None:
    p = sub.add_parser("prepare", help="official VQA JSON -> preprocessed/ text files + HDF5")
    p.add_argument("--data-dir", type=Path, default=Path("data"),
                   help="folder holding the official JSON files (default: data)")
    p.add_argument("--version", choices=["v1", "v2"], default="v2", help="VQA version (default: v2)")
    p.add_argument("--out", type=Path, default=Path("preprocessed"), help="output folder (default: preprocessed)")
    p.add_argument("--num-answers", type=int, default=1000, help="top-K answers kept as classes (default: 1000)")
    p.add_argument("--max-question-length", type=int, default=30,
                   help="tokens kept per question; longer ones are truncated (default: 30, the tutorial's)")
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
                        "S = size / 32 (default: 448, the paper's 14 x 14; 224 gives 7 x 7)")
    p.add_argument("--cnn-weights", default="imagenet",
                   help="imagenet (Keras download), a local VGG16 .h5 file, or random (tests/demos only)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per VGG16 batch (default: 32; lower it at --image-size 448 if memory is short)")
    p.set_defaults(func=run_features)


def run_features(args) -> int:
    from vqa import artifacts, features
    from vqa.errors import InputError

    if args.grid and args.karpathy is not None:
        raise InputError("--grid needs --images: Karpathy's vgg_feats.mat holds fc7 vectors only")
    if args.image_size is not None and not args.grid:
        raise InputError(f"--image-size applies to --grid only; fc7 vectors always use "
                         f"{artifacts.FC7_IMAGE_SIZE} x {artifacts.FC7_IMAGE_SIZE} images")
    if args.karpathy is not None:
        rows = features.convert_karpathy(args.karpathy, args.out)
    else:
        grid_image_size = artifacts.DEFAULT_GRID_IMAGE_SIZE if args.image_size is None else args.image_size
        layout, image_size = ((artifacts.LAYOUT_GRID, grid_image_size) if args.grid
                              else (artifacts.LAYOUT_VECTOR, artifacts.FC7_IMAGE_SIZE))
        rows = features.extract_image_features(args.images, args.out, cnn_weights=args.cnn_weights,
                                               batch_size=args.batch_size, layout=layout, image_size=image_size)
    print(f"wrote features of {rows} images to {args.out}")
    return 0


# --------------------------------------------------------------------------- synth
def add_synth_parser(sub) -> None:
    p = sub.add_parser("synth", help="generate a small dataset in the official VQA formats")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--images", type=int, default=200, help="number of rendered images (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--max-objects", type=int, default=None,
                   help="most shapes per image, 1-6 (default: 4; with --relations 4-6, default 6)")
    p.add_argument("--min-objects", type=int, default=None,
                   help="fewest shapes per image (default: 1; with --relations, 4)")
    p.add_argument("--relations", action="store_true",
                   help="cluttered scenes of 4-6 shapes and questions that need attention: which object "
                        "has which colour and shape, and where it is")
    p.add_argument("--karpathy", action="store_true",
                   help="also write a Karpathy-style dataset.json + vgg_feats.mat (random-weight VGG16)")
    p.set_defaults(func=run_synth)


def run_synth(args) -> int:
    from vqa.synthetic import generate_dataset

    summary = generate_dataset(args.out, num_images=args.images, seed=args.seed, karpathy=args.karpathy,
                               max_objects=args.max_objects, min_objects=args.min_objects,
                               relations=args.relations)
    counts = ", ".join(f"{split} {count}" for split, count in summary.num_questions.items())
    print(f"wrote {args.images} images and questions ({counts}) to {args.out}")
    return 0


# --------------------------------------------------------------------------- evaluate
def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="official VQA accuracy of a results file, or of a model on a split")
    p.add_argument("--questions", type=Path, help="official questions JSON")
    p.add_argument("--annotations", type=Path, help="official annotations JSON")
    p.add_argument("--model", type=Path, help="model directory written by `vqa train`")
    p.add_argument("--data", type=Path, help="preprocessed folder (with --model)")
    p.add_argument("--features", type=Path, help="image features HDF5 (with --model)")
    p.add_argument("--split", choices=["val", "test-dev", "test"], default="val", help="split to predict (with --model)")
    p.add_argument("--results", type=Path, required=True,
                   help="results JSON [{question_id, answer}] to score, or to write with --model")
    p.add_argument("--report", type=Path, default=None, help="write the accuracy report JSON here")
    p.add_argument("--batch-size", type=int, default=512, help="prediction batch size (with --model)")
    _add_checkpoint_argument(p)  # with --model; the report names the checkpoint scored
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from vqa import evaluate

    if args.model is not None:
        missing = [f"--{n}" for n in ("data", "features") if getattr(args, n) is None]
        if missing:
            raise VQAError(f"--model needs {' and '.join(missing)}")
        report = evaluate.evaluate_model(args.model, data_dir=args.data, features_path=args.features,
                                         split=args.split, results_path=args.results, report_path=args.report,
                                         batch_size=args.batch_size, checkpoint=args.checkpoint)
        if report:
            print(evaluate.format_summary(report), end="")
        return 0
    if args.questions is None or args.annotations is None:
        raise VQAError("give --questions and --annotations with --results, or --model --data --features")
    report = evaluate.evaluate_results_file(args.questions, args.annotations, args.results, report_path=args.report)
    print(evaluate.format_summary(report), end="")
    return 0


# --------------------------------------------------------------------------- train
TRAIN_HELP = {"mlp": "the tutorial's bag-of-words MLP (fc7 features)",
              "lstm": "the tutorial's 3 x 512 LSTM (fc7 features)",
              "san": "the stacked attention network over grid features (`vqa features --grid`; docs/attention.md)"}


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train the tutorial's MLP or LSTM, or the attention model; writes a model directory",
                       description="Train the tutorial's MLP or LSTM, or its 'way forward', a stacked attention "
                       "network (san). `vqa train MODEL --help` lists MODEL's flags and its defaults.")
    models = p.add_subparsers(dest="model", required=True, metavar="{mlp,lstm,san}")
    for model, text in TRAIN_HELP.items():
        _add_train_model_parser(models, model, text)


def _add_train_model_parser(models, model: str, text: str) -> None:
    from vqa.config import TUTORIAL_RECIPE, TrainConfig, flag_fields

    p = models.add_parser(model, help=text, description=f"Train {text}. The topology and sizes are the "
                          "tutorial's (the paper's for san); the defaults add input scaling and a training "
                          "recipe that learns real questions faster and steadier (docs/training.md, "
                          "docs/real-questions.md). --tutorial-inputs gives the tutorial's raw inputs, "
                          "--tutorial-recipe its whole recipe; explicit flags override both.")
    p.add_argument("--data", type=Path, default=Path("preprocessed"), help="`vqa prepare` folder (default: preprocessed)")
    p.add_argument("--features", type=Path, required=True,
                   help="image features HDF5 (`vqa features`" + ("; --grid)" if model == "san" else ")"))
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--logdir", type=Path, default=Path("./Graph"), help="TensorBoard logs (default: ./Graph)")
    defaults = TrainConfig.for_model(model)
    for field in flag_fields(model):
        tutorial = TUTORIAL_RECIPE.get(field.name)
        _add_config_flag(p, field, getattr(defaults, field.name),
                         None if tutorial in (None, getattr(defaults, field.name)) else tutorial)
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--tutorial-inputs", action="store_true",
                        help="the tutorial's raw inputs: no image standardisation, no L2 norms")
    preset.add_argument("--tutorial-recipe", action="store_true",
                        help="the tutorial's whole recipe: raw inputs, RMSprop, 'uniform' init, dropout 0.5, "
                             "no schedule")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue the run in --out with other --epochs")
    run.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=run_train)


def _add_config_flag(p, field, default, tutorial) -> None:
    """One TrainConfig field as a flag whose help states this model's default (and the tutorial's, if other).

    The parsed value is None unless the flag is given, so ``TrainConfig.for_model`` applies the presets.
    """
    flag = "--" + field.name.replace("_", "-")
    note = f"default: {flag_value_text(default)}" + ("" if tutorial is None else f"; the tutorial's: "
                                                      f"{flag_value_text(tutorial)}")
    help_text = f"{field.metadata['help']} ({note})"
    kind, choices = field.metadata["flag"], field.metadata["choices"]
    if kind == "switch":
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif kind == "on":
        p.add_argument(flag, action="store_true", default=None, help=help_text)
    else:
        p.add_argument(flag, type=_flag_type(field), choices=choices, default=None, help=help_text)


def flag_value_text(value) -> str:
    """How a flag's help writes a config value: on/off for switches, none for None."""
    return "on" if value is True else "off" if value is False else "none" if value is None else str(value)


def _flag_type(field):
    """The argparse type of a TrainConfig field (its annotation, without ``| None``)."""
    annotation = str(field.type)
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str


def run_train(args) -> int:
    from vqa.config import TrainConfig, flag_fields
    from vqa.distribute import cluster_role
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
    p.add_argument("--model", type=Path, required=True, help="model directory written by `vqa train`")
    p.add_argument("--image", type=Path, required=True, help="image file (JPEG or PNG)")
    p.add_argument("--question", required=True, help='the question, e.g. "What color is the ground?"')
    p.add_argument("--top", type=int, default=5, help="number of answers to print (default: 5)")
    p.add_argument("--attention", type=Path, default=None, metavar="OUT.png",
                   help="also write the image with each attention layer's map over it (a `vqa train san` model)")
    _add_inference_arguments(p)
    p.set_defaults(func=run_ask)


def _add_inference_arguments(p) -> None:
    """--cnn-weights, --checkpoint and --spacy-model: what `vqa ask` and `vqa serve` load."""
    p.add_argument("--cnn-weights", default="imagenet",
                   help="VGG16 weights the training features used: imagenet, a local .h5, or random")
    _add_checkpoint_argument(p)
    p.add_argument("--spacy-model", default=None, help="spaCy model name or folder (default: auto-detect)")


def _add_checkpoint_argument(p) -> None:
    p.add_argument("--checkpoint", choices=["last", "best"], default="last",
                   help="weights that answer: last = model.keras (the last epoch, default), "
                        "best = best.keras (the epoch with the lowest val loss)")


def run_ask(args) -> int:
    from vqa.predict import Predictor, answer_sentence, check_attention

    if not args.image.is_file():
        raise VQAError(f"{args.image}: image not found; pass --image with a JPEG or PNG file")
    if args.top < 1:
        raise VQAError(f"--top must be at least 1, got {args.top}")
    if args.attention is not None:
        check_attention(args.model)  # before VGG16 and the model are loaded
    predictor = Predictor(args.model, cnn_weights=args.cnn_weights, checkpoint=args.checkpoint,
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
SERVING_APP = "serving.app:create_app()"
SERVE_THREADS = 8  # requests of one worker can meet in a batch only on its threads
# (flag, environment variable, the name of the server's default in vqa.batching, imported only by `vqa serve`)
BATCHING_SETTINGS = (("max_batch_size", "VQA_MAX_BATCH_SIZE", "SERVING_MAX_BATCH_SIZE"),
                     ("batch_timeout_ms", "VQA_BATCH_TIMEOUT_MS", "SERVING_BATCH_TIMEOUT_MS"),
                     ("feature_cache_mb", "VQA_FEATURE_CACHE_MB", "SERVING_FEATURE_CACHE_MB"))


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help=f"run the REST API: gunicorn on {SERVING_APP} (serving/README.md)")
    p.add_argument("--model", type=Path, required=True, help="model directory written by `vqa train`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 = all)")
    p.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    p.add_argument("--workers", type=int, default=1, help="gunicorn worker processes, each with its own model, "
                   "batches and feature cache (default: 1, so that every request can join a batch and find "
                   "the cache; more where one process cannot keep the cores busy, one per GPU)")
    p.add_argument("--threads", type=int, default=SERVE_THREADS,
                   help=f"threads per worker sharing its model; only one worker's threads can share a batch "
                        f"(default: {SERVE_THREADS})")
    p.add_argument("--timeout", type=int, default=120, help="seconds before a silent worker is restarted "
                   "(default: 120)")
    _add_inference_arguments(p)
    p.add_argument("--max-batch-size", default=None, metavar="N",
                   help="most requests answered by one VGG16 / model call; 1 = no batching "
                        "(default: VQA_MAX_BATCH_SIZE, else the server's default; docs/serving.md)")
    p.add_argument("--batch-timeout-ms", default=None, metavar="T",
                   help="longest wait for a batch to fill while other requests are on their way; a lone request "
                        "never waits (default: VQA_BATCH_TIMEOUT_MS, else the server's default)")
    p.add_argument("--feature-cache-mb", default=None, metavar="M",
                   help="megabytes of image features remembered per worker, by the SHA-256 of the upload; "
                        "0 = off (default: VQA_FEATURE_CACHE_MB, else the server's default)")
    p.set_defaults(func=run_serve)


def run_serve(args) -> int:
    """Check the settings here (one-line errors), then replace this process with gunicorn."""
    import shlex

    from vqa.modeldir import check_model_dir

    check_model_dir(args.model, checkpoint=args.checkpoint)
    env = _serving_environment(args)
    argv = gunicorn_argv(host=args.host, port=args.port, workers=args.workers, threads=args.threads,
                         timeout=args.timeout)
    print(f"vqa serve: {shlex.join(['python', *argv[1:]])} (model {env['VQA_MODEL_DIR']}, "
          f"checkpoint {args.checkpoint})", file=sys.stderr, flush=True)
    os.execve(sys.executable, argv, env)  # signals (Ctrl-C, SIGTERM) now reach gunicorn directly
    return 0  # not reached


def _serving_environment(args) -> dict[str, str]:
    """This process's environment plus the app's VQA_* settings from the flags; VQAError on a bad flag."""
    import importlib.util

    for flag in ("workers", "threads", "timeout"):
        if getattr(args, flag) < 1:
            raise VQAError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if not 1 <= args.port <= 65535:
        raise VQAError(f"--port must be in 1..65535, got {args.port}")
    cnn_weights = args.cnn_weights
    if cnn_weights not in ("imagenet", "random"):  # a bad file fails here, not later in every worker
        from vqa.features import local_weights_file

        cnn_weights = str(local_weights_file(cnn_weights).resolve())
    if importlib.util.find_spec("gunicorn") is None:
        raise VQAError("gunicorn is not installed; pip install gunicorn")
    env = {**os.environ, "VQA_MODEL_DIR": str(args.model.resolve()), "VQA_CNN_WEIGHTS": cnn_weights,
           "VQA_CHECKPOINT": args.checkpoint}
    if args.spacy_model is not None:
        env["VQA_SPACY_MODEL"] = str(args.spacy_model)
    env.update(_batching_environment(args))
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):  # /metrics adds up every worker's figures (serving/metrics.py)
        import tempfile

        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vqa-metrics-")
    return env


def _batching_environment(args) -> dict[str, str]:
    """VQA_MAX_BATCH_SIZE & co. from the flags; every value (flag, environment or default) checked now,
    so that a bad one stops `vqa serve` with one line naming the flag or the variable."""
    from vqa import batching

    values, names, env = [], [], {}
    for flag, variable, default_name in BATCHING_SETTINGS:
        default = getattr(batching, default_name)
        value = getattr(args, flag)
        if value is not None:
            env[variable] = str(value)
            names.append("--" + flag.replace("_", "-"))
        else:
            names.append(variable)
        values.append(value if value is not None else os.environ.get(variable) or default)
    batching.check_batching(*values, names=names)
    return env


def gunicorn_argv(*, host: str, port: int, workers: int, threads: int, timeout: int) -> list[str]:
    """The gunicorn command line `vqa serve` runs: the documented one, with this interpreter."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", str(threads), "-b", bind,
            "--timeout", str(timeout), SERVING_APP]


# --------------------------------------------------------------------------- export
def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a model directory as TensorFlow SavedModels for TensorFlow Serving",
                       description="Write the answer model as a TensorFlow SavedModel (signature 'serve' over "
                       "'question' int32 token ids and 'image_features', output 'answer', plus 'attention' for a "
                       "SAN) in OUT/answer/1/, with vocabulary.json, answers.json and export.json beside it; "
                       "with --with-cnn also VGG16 (its preprocessing inside) in OUT/cnn/1/. See docs/serving.md.")
    p.add_argument("--model", type=Path, required=True, help="model directory written by `vqa train`")
    p.add_argument("--out", type=Path, required=True, help="a new (or empty) folder to write")
    _add_checkpoint_argument(p)
    p.add_argument("--with-cnn", action="store_true", help="also export the VGG16 feature extractor")
    p.add_argument("--cnn-weights", default="imagenet",
                   help="with --with-cnn: VGG16 weights the training features used: imagenet, a local .h5, or random")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from vqa.export import export_model

    out = export_model(args.model, args.out, checkpoint=args.checkpoint, with_cnn=args.with_cnn,
                       cnn_weights=args.cnn_weights)
    print(f"SavedModel(s) written to {out}")
    return 0


# --------------------------------------------------------------------------- demo
def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the whole tutorial on built-in synthetic data (no download)")
    p.add_argument("--workdir", type=Path, default=Path("demo"), help="where everything is written (default: demo)")
    p.add_argument("--images", type=int, default=None, help="synthetic images (default: 300)")
    p.add_argument("--mlp-epochs", type=int, default=None, help="MLP epochs (default: 12)")
    p.add_argument("--lstm-epochs", type=int, default=None, help="LSTM epochs (default: 10)")
    p.add_argument("--san-epochs", type=int, default=None, help="SAN epochs (default: 10)")
    p.add_argument("--relation-images", type=int, default=None,
                   help="cluttered scenes of the relational part (default: 300)")
    p.add_argument("--relation-epochs", type=int, default=None, help="epochs of the relational part (default: 15)")
    p.add_argument("--relations", dest="relations", action="store_true", default=None,
                   help="add the relational part (cluttered scenes, the SAN against the question-only answers)")
    p.add_argument("--no-relations", dest="relations", action="store_false", default=None,
                   help="skip the relational part (the default)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from vqa.demo import DemoConfig, run_demo as demo

    overrides = {"num_images": args.images, "mlp_epochs": args.mlp_epochs, "lstm_epochs": args.lstm_epochs,
                 "san_epochs": args.san_epochs, "relation_images": args.relation_images,
                 "relation_epochs": args.relation_epochs, "relations": args.relations, "seed": args.seed}
    demo(args.workdir, config=DemoConfig(**{k: v for k, v in overrides.items() if v is not None}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `vqa` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="vqa", description="Visual Question Answering with Keras (VQA v2).")
    parser.add_argument("--version", action="version", version=f"vqa-keras {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for add in (add_prepare_parser, add_features_parser, add_synth_parser, add_evaluate_parser, add_train_parser,
                add_ask_parser, add_serve_parser, add_export_parser, add_demo_parser):
        add(sub)
    return parser


def _needs_tensorflow(args) -> bool:
    """Whether the command will run Keras (then TensorFlow is imported quietly up front)."""
    light = {"prepare": True, "synth": not getattr(args, "karpathy", False),
             "features": getattr(args, "karpathy", None) is not None,
             "evaluate": getattr(args, "model", None) is None,
             "serve": True}  # gunicorn's workers import TensorFlow, not this process
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
