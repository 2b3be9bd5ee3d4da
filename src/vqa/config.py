"""A training run's settings: ``TrainConfig``, the one place where every training default is written.

Three layers, each written once here:

* the dataclass defaults of ``TrainConfig``: values shared by every model;
* ``MODEL_DEFAULTS``: this project's per-model values (the tutorial's epochs and batch sizes, the
  paper's SAN sizes, and the project's departures: input scaling, MLP dropout and soft loss, LSTM input
  dropout);
* ``TUTORIAL_INPUTS`` and ``TUTORIAL_RECIPE``: the tutorial's own values, set back by
  ``--tutorial-inputs`` and ``--tutorial-recipe``.

Each field's metadata carries its command-line help and the models it applies to, so ``vqa train``
builds its flags, help text and stated defaults from here (``vqa.cli``) and cannot drift from what a
run records in config.json. The model builders' keyword defaults (``vqa.models``) are held to
``TUTORIAL_RECIPE`` by a test. Importing this module imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vqa import artifacts
from vqa.errors import InputError

# The other stages' defaults, each written once: their functions' keyword defaults and
# the CLI's flags both read these (the CLI without importing the stage's heavy module).
PREPARE_VERSION = "v2"  # `vqa prepare --version`
FEATURES_BATCH_SIZE = 32  # images per VGG16 call (`vqa features`, the Predictor)
SYNTH_IMAGES = 200  # `vqa synth --images`
SYNTH_SEED = 0
# `vqa synth --disagreement`: how the 10 simulated humans disagree ("low": at most 4 stray; "real":
# as VQA's annotators, vqa.synthetic.REAL_AGREEMENT).
SYNTH_DISAGREEMENTS = ("low", "real")
MAX_OBJECTS = 6  # shapes per `vqa synth` scene: up to 4, one per quadrant; 5-6, a 3 x 2 grid
QUADRANT_OBJECTS = 4
RELATION_MIN_OBJECTS, RELATION_MAX_OBJECTS = 4, 6  # `vqa synth --relations`: cluttered scenes
EVALUATE_BATCH_SIZE = 512  # questions per model call (`vqa evaluate --model`)
TOP_ANSWERS = 5  # answers `vqa ask` prints and the server returns
CHECKPOINT = "last"  # which model file inference reads: the last epoch (`--checkpoint last|best`)

MODEL_KINDS = ("mlp", "lstm", "san", "topdown")
# The image layout each model reads (`vqa features` writes "vector" = fc7, `--grid` writes "grid").
IMAGE_LAYOUTS = {"mlp": artifacts.LAYOUT_VECTOR, "lstm": artifacts.LAYOUT_VECTOR, "san": artifacts.LAYOUT_GRID,
                 "topdown": artifacts.LAYOUT_GRID}
# The models with an "attention" output (`vqa ask --attention`, the server's attention=1).
ATTENTION_MODELS = ("san", "topdown")
# The tutorial's Keras 1/2 initialiser: 'uniform' = RandomUniform(-0.05, 0.05).
KERNEL_INITIALIZER = "uniform"
OPTIMIZERS = ("adam", "rmsprop")
# modal: softmax + cross-entropy on the modal answer (the tutorial's); soft: sigmoid + binary
# cross-entropy on every answer's min(n/3, 1) (docs/training.md, "Loss: modal or soft").
LOSSES = ("modal", "soft")
LR_SCHEDULES = ("none", "plateau")
STRATEGIES = ("mirrored", "multiworker", "data-parallel")
JIT_MODES = ("auto", "on", "off")
VERBOSITY = ("auto", "0", "1", "2")
# Fields that may change between an interrupted run and its resumption.
RUNTIME_FIELDS = ("epochs", "steps_per_epoch", "distribute", "mixed_precision", "jit", "update_freq", "verbose")

_ALL = MODEL_KINDS
_TUTORIAL_MODELS = ("mlp", "lstm")
_RECURRENT = ("lstm", "san", "topdown")


def _field(default, help: str, *, models=_ALL, choices=None, flag: str = "value"):
    """A TrainConfig field with its flag's help (without the default, which the CLI states from the
    config) and the models whose flag it is. ``flag``: "value", "switch" (--x/--no-x), "on" (--x)."""
    return dataclasses.field(default=default, metadata={"help": help, "models": models, "choices": choices,
                                                        "flag": flag})


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Build it with ``TrainConfig.for_model(model, ...)``, which applies the model's defaults."""

    model: str = dataclasses.field(default="mlp", metadata={"flag": None})
    epochs: int = _field(100, "training epochs")
    batch_size: int = _field(128, "global batch size")
    seed: int | None = _field(None, "seed for reproducible runs (deterministic on CPU)")
    hidden_units: int = _field(1024, "units per dense layer", models=_TUTORIAL_MODELS)
    hidden_layers: int = _field(3, "tanh dense layers before the softmax (0 = the prose LSTM)",
                                models=_TUTORIAL_MODELS)
    lstm_units: int = _field(512, "units per LSTM layer (san: the question and region size d; topdown: the "
                             "question and joint size d)", models=_RECURRENT)
    lstm_layers: int = _field(3, "stacked LSTM layers", models=_RECURRENT)
    attention_units: int = _field(512, "hidden units k of each attention layer (topdown: the region vectors' "
                                  "size k)", models=ATTENTION_MODELS)
    attention_layers: int = _field(2, "stacked attention layers (topdown: glimpses)", models=ATTENTION_MODELS)
    dropout: float = _field(0.5, "dropout rate of the dense layers (san: before the softmax)")
    activation: str = _field("tanh", "activation of the dense layers", models=_TUTORIAL_MODELS)
    learning_rate: float = _field(0.001, "learning rate")
    loss: str = _field("modal", "modal: softmax on the modal answer (the tutorial's); soft: sigmoid and binary "
                       "cross-entropy on each answer's min(n/3, 1), the official metric's credit", choices=LOSSES)
    optimizer: str = _field("adam", "optimiser", choices=OPTIMIZERS)
    epsilon: float = _field(1e-7, "the optimiser's epsilon")
    clipnorm: float | None = _field(None, "clip each gradient to this norm (none: no clipping)")
    weight_decay: float = _field(0.0, "decoupled weight decay, as AdamW")
    lr_schedule: str = _field("plateau", "plateau: halve the rate when val loss stops falling; "
                              "none: a fixed rate", choices=LR_SCHEDULES)
    initializer: str = _field(KERNEL_INITIALIZER, "Keras initialiser of the tanh layers "
                              "(uniform = the tutorial's +-0.05)", models=_TUTORIAL_MODELS)
    first_initializer: str = _field(KERNEL_INITIALIZER, "initialiser of the first (linear) layer",
                                    models=("mlp",))
    first_dropout: float | None = _field(None, "dropout after the first layer (none: --dropout)", models=("mlp",))
    lstm_dropout: float = _field(0.0, "dropout on each LSTM layer's inputs", models=("lstm",))
    norm_question: bool = _field(True, "L2-normalise the question (mlp: its word-vector sum; "
                                 "lstm and san: each word vector)", flag="switch")
    norm_image: bool = _field(True, "L2-normalise the image vector", models=_TUTORIAL_MODELS, flag="switch")
    standardize_image: bool = _field(True, "standardise each image feature (san: each grid channel) with the "
                                     "train images' mean/std, before --norm-image", flag="switch")
    standardize_question: bool = _field(True, "standardise the word-vector sum with the train questions' "
                                        "mean/std, before --norm-question", models=("mlp",), flag="switch")
    coordinates: bool = _field(True, "append each region's (row, column) to its feature, so questions "
                               "about where things are can be answered", models=ATTENTION_MODELS, flag="switch")
    bucket: bool = _field(False, "batch questions of similar length, padded to the longest", flag="switch")
    steps_per_epoch: int | None = _field(None, "train batches per epoch, for quick rehearsals and fixed-size "
                                         "epochs (none: one pass over the train split; validation still "
                                         "covers the whole val split)")
    update_freq: int = _field(100, "TensorBoard scalars every N batches")
    distribute: str | None = _field(None, "mirrored: this host's GPUs; multiworker: several hosts named by "
                                    "TF_CONFIG (both TensorFlow); data-parallel: this host's devices with "
                                    "KERAS_BACKEND=jax (docs/scale.md)", choices=STRATEGIES)
    mixed_precision: bool = _field(False, "mixed_float16 compute, float32 softmax (GPUs)", flag="on")
    jit: str = _field("auto", "XLA compilation (auto = on GPUs)", choices=JIT_MODES)
    verbose: str | int = _field("auto", "Keras progress output: auto = a progress bar on a terminal, one line per "
                          "epoch otherwise", choices=VERBOSITY)

    @classmethod
    def for_model(cls, model: str, *, tutorial_inputs: bool = False, tutorial_recipe: bool = False,
                  **overrides) -> "TrainConfig":
        """This project's config for ``model`` ("mlp"|"lstm"|"san"), with non-None ``overrides`` applied.

        Args:
            model: "mlp", "lstm" or "san".
            tutorial_inputs: start from the tutorial's raw inputs (no standardisation, no L2 norms).
            tutorial_recipe: start from the tutorial's whole recipe (raw inputs, RMSprop, its
                initialisers and dropout, no schedule): every departure set back.
            overrides: field values; None keeps the default.
        """
        if model not in MODEL_KINDS:
            raise InputError(f"unknown model {model!r}; choose one of {', '.join(MODEL_KINDS)}")
        preset = TUTORIAL_RECIPE if tutorial_recipe else TUTORIAL_INPUTS if tutorial_inputs else {}
        values = {**MODEL_DEFAULTS[model], **preset, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(model=model, **values).validated()

    def validated(self) -> "TrainConfig":
        """This config, or InputError naming the first bad value."""
        checks = [(self.model in MODEL_KINDS, f"model must be one of {MODEL_KINDS}"),
                  (self.epochs >= 1, "--epochs must be >= 1"), (self.batch_size >= 1, "--batch-size must be >= 1"),
                  (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
                  (self.hidden_layers >= 0 and self.lstm_layers >= 1, "layer counts must be >= 0 (LSTM >= 1)"),
                  (self.distribute in (None, *STRATEGIES), f"--distribute: {'|'.join(STRATEGIES)}"),
                  (self.jit in JIT_MODES, "--jit must be auto, on or off"),
                  (str(self.verbose) in VERBOSITY, "--verbose must be auto, 0, 1 or 2"),
                  (self.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}"),
                  (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
                  (self.lr_schedule in LR_SCHEDULES, f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}"),
                  (self.epsilon > 0 and (self.clipnorm is None or self.clipnorm > 0), "--epsilon/--clipnorm must be > 0"),
                  (self.first_dropout is None or 0 <= self.first_dropout < 1, "--first-dropout must be in [0, 1)"),
                  (0 <= self.lstm_dropout < 1, "--lstm-dropout must be in [0, 1)"),
                  (self.weight_decay >= 0, "--weight-decay must be >= 0"),
                  (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "--steps-per-epoch must be >= 1"),
                  (self.attention_units >= 1 and self.attention_layers >= 1,
                   "--attention-units and --attention-layers must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        return self


# This project's per-model defaults. The epochs and batch sizes are the tutorial's (the MLP's 128 is
# its text's; its script used 256); the rest departs from it, each measured (docs/training.md):
# input scaling (spaCy 3 word vectors have norms of about 40-110, an fc7 vector a few tens: raw, the
# MLP's question swamps the image), the MLP's dropout 0.3 (at 0.5 it underfits real questions), the
# LSTM's input dropout 0.2 (without it the LSTM overfits real questions after ~9 epochs) and the MLP's
# soft loss (over 3 seeds it led modal on every set; the other models keep the tutorial's modal).
MODEL_DEFAULTS = {
    "mlp": {"epochs": 100, "batch_size": 128, "norm_question": True, "norm_image": True, "bucket": False,
            "standardize_question": True, "dropout": 0.3, "loss": "soft"},
    "lstm": {"epochs": 90, "batch_size": 256, "norm_question": False, "norm_image": True, "bucket": True,
             "standardize_question": False, "lstm_dropout": 0.2},
    # The tutorial's "way forward": Yang et al. 2016's sizes on VQA (LSTM d = 1024, 2 attention layers,
    # batch 100); k, the epochs and the word-vector norm are ours (docs/attention.md).
    "san": {"epochs": 30, "batch_size": 100, "norm_question": True, "norm_image": False, "bucket": True,
            "standardize_question": False, "lstm_units": 1024, "lstm_layers": 1},
    # Top-down attention (Anderson et al. 2018; Teney et al. 2018): d = k = 512 as Teney's; the rest ours, screened on
    # cluttered scenes (docs/attention.md): batch 64 and a fixed rate let attention form in few epochs.
    "topdown": {"epochs": 30, "batch_size": 64, "norm_question": True, "norm_image": False, "bucket": True,
                "standardize_question": False, "lstm_units": 512, "lstm_layers": 1, "attention_units": 512,
                "dropout": 0.2, "lr_schedule": "none"},
}
# The tutorial's raw inputs (--tutorial-inputs) and its whole recipe (--tutorial-recipe).
TUTORIAL_INPUTS = {"norm_question": False, "norm_image": False, "standardize_image": False,
                   "standardize_question": False}
TUTORIAL_RECIPE = {**TUTORIAL_INPUTS, "loss": "modal",
                   "dropout": 0.5, "optimizer": "rmsprop", "epsilon": 1e-7, "clipnorm": None,
                   "weight_decay": 0.0, "lr_schedule": "none", "first_initializer": KERNEL_INITIALIZER,
                   "initializer": KERNEL_INITIALIZER, "first_dropout": None, "lstm_dropout": 0.0}


def flag_fields(model: str) -> list[dataclasses.Field]:
    """The TrainConfig fields that are ``vqa train <model>`` flags, in declaration order."""
    return [f for f in dataclasses.fields(TrainConfig)
            if f.metadata.get("flag") is not None and model in f.metadata["models"]]


def field_defaults() -> dict:
    """Every TrainConfig field's dataclass default (what a config.json without the field used)."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


# --------------------------------------------------------------------------- shared by every settings class
def flag_name(field: dataclasses.Field) -> str:
    """A settings field's command-line flag: ``--field-name``, unless its metadata names another."""
    return "--" + (field.metadata.get("flag_name") or field.name).replace("_", "-")


def value_text(value) -> str:
    """How help text, docs and recorded commands write a setting's value: on/off for switches, none for None."""
    return "on" if value is True else "off" if value is False else "none" if value is None else str(value)


# --------------------------------------------------------------------------- the demo
def _demo_field(default, help: str | None = None, *, flag: str | None = "value", flag_name: str | None = None):
    """A DemoSettings field; ``flag`` None keeps it library-only (the results file records it all the same)."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag if help else None,
                                                        "flag_name": flag_name})


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the `vqa demo` run; the defaults finish in a few minutes on a 2-core CPU."""

    num_images: int = _demo_field(300, "synthetic images", flag_name="images")
    # One shape per image: with random VGG16 weights (nothing can be downloaded here),
    # ~240 training images teach colour and shape but not which colour is which shape's.
    max_objects: int = _demo_field(1)
    seed: int = _demo_field(0, "random seed")
    num_answers: int = _demo_field(artifacts.NUM_ANSWERS)
    mlp_epochs: int = _demo_field(12, "MLP epochs")
    lstm_epochs: int = _demo_field(10, "LSTM epochs")
    # The tutorial's topology throughout; only the LSTM width is reduced (512 -> 128)
    # so that three stacked layers train in about a minute on a CPU.
    lstm_units: int = _demo_field(128)
    batch_size: int = _demo_field(32)
    # The SAN reads a 7 x 7 grid (224-pixel images) and is narrowed like the LSTM (paper: d = 1024);
    # on small sets attention forms only without dropout and at a fixed rate (docs/attention.md).
    san_epochs: int = _demo_field(10, "SAN epochs")
    san_units: int = _demo_field(128)
    attention_units: int = _demo_field(64)
    grid_image_size: int = _demo_field(224)
    # The relational part (cluttered scenes of 4-6 shapes, vqa synth --relations) is off by default:
    # 300 scenes are too few for attention to form (bench/bench_attention.py uses 1,500), so it
    # would add a third of the demo's time to show a SAN barely above the question-only answers.
    relations: bool = _demo_field(False, "add the relational part (cluttered scenes, the SAN against the "
                                  "question-only answers)", flag="switch")
    relation_images: int = _demo_field(300, "cluttered scenes of the relational part")
    relation_epochs: int = _demo_field(15, "epochs of the relational part")


def demo_flag_fields() -> list[dataclasses.Field]:
    """The DemoSettings fields that are ``vqa demo`` flags, in declaration order."""
    return [field for field in dataclasses.fields(DemoSettings) if field.metadata["flag"] is not None]
