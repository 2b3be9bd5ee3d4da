"""Effect of the image input scaling on `vqa synth` data (random-weight VGG16 features).

Run by hand from the repository root:  python -m bench.bench_image_scaling [--images 300] [--epochs 12]
Trains the MLP and the LSTM (128 units, as in `vqa demo`) with each combination
of --[no-]standardize-image and --[no-]norm-image and prints the validation
modal-answer accuracy after 1 / 5 / last epochs, beside the best question-only
answers' modal accuracy. Results go to bench/results_image_scaling.json (``--out``;
bench.harness's record).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from bench import harness

SETTINGS = [(True, True), (False, True), (True, False), (False, False)]  # (standardize, L2 norm)


def make_data(workdir: Path, num_images: int) -> tuple[Path, Path]:
    """The demo's kind of dataset (one shape per image, random-weight fc7), built once under ``workdir``."""
    from vqa.sample_dataset import build_sample_dataset

    if not (workdir / "preprocessed" / "vqa_data.h5").is_file():  # written last
        build_sample_dataset(workdir, num_images=num_images, seed=0, max_objects=1)
    return workdir / "preprocessed", workdir / "features.h5"


def question_only_modal_accuracy(prepared: Path) -> float:
    """Modal accuracy of answering each val question with its text's commonest train answer."""
    from vqa.prepared import load_prepared_split
    from vqa.evaluate import question_only_answers

    train, val = load_prepared_split(prepared, "train"), load_prepared_split(prepared, "val")
    guesses = question_only_answers(train.questions, train.modal_answers, val.questions)
    return sum(g == m for g, m in zip(guesses, val.modal_answers)) / len(guesses)


def run(kind: str, standardize: bool, norm: bool, *, prepared: Path, features: Path, epochs: int,
        workdir: Path) -> list[float]:
    from vqa.train import TrainConfig, train_model

    sizes = {"lstm_units": 128} if kind == "lstm" else {}
    config = TrainConfig.for_model(kind, epochs=epochs, batch_size=32, seed=0, verbose=0,
                                  standardize_image=standardize, norm_image=norm, **sizes)
    history = train_model(config, data_dir=prepared, features_path=features,
                          out_dir=workdir / f"{kind}-{standardize}-{norm}", logdir=workdir / "Graph", overwrite=True)
    return history["val_modal_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/image_scaling"))
    parser.add_argument("--out", type=Path, default=Path("bench/results_image_scaling.json"), help="results file")
    args = parser.parse_args()
    from vqa.features import RandomWeightsWarning
    from vqa.runtime import quiet_tensorflow

    quiet_tensorflow()
    warnings.simplefilter("ignore", RandomWeightsWarning)  # random VGG16 weights are this bench's choice
    prepared, features = make_data(args.workdir, args.images)
    results = {"images": args.images, "epochs": args.epochs,
               "question_only": question_only_modal_accuracy(prepared), "runs": []}
    print(f"question-only modal accuracy: {results['question_only']:.2f}")
    for kind in ("mlp", "lstm"):
        for standardize, norm in SETTINGS:
            accuracy = run(kind, standardize, norm, prepared=prepared, features=features, epochs=args.epochs,
                           workdir=args.workdir)
            results["runs"].append({"model": kind, "standardize_image": standardize, "norm_image": norm,
                                    "val_modal_accuracy": accuracy})
            print(f"{kind:4} standardize={standardize!s:5} norm={norm!s:5} "
                  f"1/5/{args.epochs}: {accuracy[0]:.2f} / {accuracy[4]:.2f} / {accuracy[-1]:.2f}", flush=True)
    harness.write_results(args.out, results)


if __name__ == "__main__":
    main()
