"""`vqa train` with its training batches held in memory: the input pipeline's ceiling.

    python -m bench.cached_train train KIND --data D --features F --out O ...   # vqa train's own arguments

The run is `vqa train` itself (same model, optimiser, metrics, callbacks, bucketed widths and
batch order), except that its training feed is read through once before ``fit`` starts and every
epoch then replays those batches from memory (``tf.data`` ``cache``). Its samples/s over
`vqa train`'s own is the share of the ceiling the input pipeline reaches (``bench_train``).
"""

from __future__ import annotations

import sys


def cached(training_feed):
    """``training_feed`` (as ``vqa.data.training_feed``) whose result is read once into memory and replayed."""

    def feed(strategy, role, train_set):
        import tensorflow as tf

        source = training_feed(strategy, role, train_set)
        if not isinstance(source, tf.data.Dataset):
            raise SystemExit(f"bench.cached_train: the training feed is a {type(source).__name__}, not a tf.data "
                             "Dataset (the in-graph feed of a TensorFlow run); no in-memory ceiling for it")
        replay = source.cache()
        for _ in replay:  # one whole pass fills the cache, outside the timed epochs
            pass
        return replay

    return feed


def main(argv=None) -> int:
    from vqa import cli, data

    data.training_feed = cached(data.training_feed)
    return cli.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
