"""vqa.data: the id -> row map, the feature statistics and the batches."""

import numpy as np
import pytest
from helpers import grid_features, write_grid

from vqa.data import QuestionBatches, feature_rows, image_statistics, in_graph_batches
from vqa.errors import InputError
from vqa.feature_file import ChunkedFeatures
from vqa.prepared import Split


def test_feature_rows_maps_ids_and_reports_missing():
    feature_ids = np.array([50, 10, 40, 20], dtype=np.int64)
    np.testing.assert_array_equal(feature_rows(np.array([10, 40, 10, 50]), feature_ids), [1, 2, 1, 0])
    with pytest.raises(InputError, match=r"no features for 2 image ids \(e\.g\. 5\)"):
        feature_rows(np.array([10, 5, 99, 5]), feature_ids, source="f.h5")


def _split(lengths, labels=None):
    n = len(lengths)
    tokens = np.zeros((n, 30), np.int32)
    for i, length in enumerate(lengths):
        tokens[i, :length] = np.arange(2, 2 + length)
    return Split("s", tokens, np.asarray(lengths, np.int32), np.arange(n, dtype=np.int64) % 7,
                 np.arange(n, dtype=np.int64), None if labels is None else np.asarray(labels, np.int32))


def test_batches_gather_features_by_row_and_cover_each_question_once():
    rng = np.random.default_rng(1)
    split = _split(rng.integers(1, 30, 100), labels=np.arange(100))
    features = rng.normal(size=(7, 5)).astype(np.float32)
    batches = QuestionBatches(split, features, split.image_ids, batch_size=16, seed=3)
    assert len(batches) == 7
    seen = []
    for i in range(len(batches)):
        inputs, targets = batches[i]
        assert inputs["question"].shape[1] == 30
        labels = targets["answer"]  # label = question index here
        np.testing.assert_array_equal(inputs["image_features"], features[labels % 7])
        np.testing.assert_array_equal(inputs["question"], split.token_ids[labels])
        seen.extend(labels)
    assert sorted(seen) == list(range(100))
    first = [batches[i][1]["answer"].tolist() for i in range(len(batches))]
    batches.on_epoch_end()
    assert first != [batches[i][1]["answer"].tolist() for i in range(len(batches))]


def test_batches_reshuffle_only_after_every_batch_was_read():
    """Keras reads batches 0 and 1 to learn the signature, then calls on_epoch_end: epoch 1 keeps its order."""
    split = _split(np.full(100, 5), labels=np.arange(100))
    batches = QuestionBatches(split, np.zeros((7, 2), np.float32), split.image_ids, batch_size=10, seed=0)
    order = [batches[i][1]["answer"].tolist() for i in range(2)]
    batches.on_epoch_end()
    assert [batches[i][1]["answer"].tolist() for i in range(len(batches))][:2] == order
    batches.on_epoch_end()
    assert [batches[i][1]["answer"].tolist() for i in range(2)] != order


def test_bucketing_pads_each_batch_to_its_longest_question():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 31, 400)
    split = _split(lengths, labels=np.arange(400))
    batches = QuestionBatches(split, np.zeros((7, 3), np.float32), split.image_ids, batch_size=20,
                              bucket=True, seed=0)
    widths = []
    for i in range(len(batches)):
        inputs, targets = batches[i]
        widths.append(inputs["question"].shape[1])
        assert widths[-1] == lengths[targets["answer"]].max()
        np.testing.assert_array_equal(inputs["question"], split.token_ids[targets["answer"], : widths[-1]])
    # Grouping by length pads far less than the fixed 30 columns of unbucketed batches.
    assert np.mean(widths) < 0.75 * 30


def test_unshuffled_unlabelled_batches_keep_question_order():
    split = _split([3, 4, 5, 6, 7])
    batches = QuestionBatches(split, np.eye(7, dtype=np.float32), split.image_ids, batch_size=2, shuffle=False)
    (inputs,) = batches[1]
    np.testing.assert_array_equal(inputs["question"], split.token_ids[2:4])


def test_image_statistics_cover_each_training_image_once_and_floor_dead_features():
    rng = np.random.default_rng(0)
    features = rng.random((6, 4)).astype(np.float32)
    features[:, 3] = 0.0  # a unit that never fires in training
    rows = np.array([0, 0, 0, 2, 5, 2])  # three questions on image 0: counted once
    mean, variance = image_statistics(features, rows, chunk_size=2)
    picked = features[[0, 2, 5]]
    np.testing.assert_allclose(mean, picked.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(variance[:3], picked.var(axis=0)[:3], rtol=1e-5)
    assert mean.dtype == variance.dtype == np.float32
    assert variance[3] == pytest.approx((0.01 * np.sqrt(picked.var(axis=0)[:3]).sum() / 4) ** 2, rel=1e-4)


# --------------------------------------------------------------------------- grid features


def test_image_statistics_are_per_channel_over_every_region_of_each_training_image(tmp_path):
    grids = grid_features(num_images=7, side=3)
    grids[..., 5] = 0.0  # a channel that never fires
    rows = np.array([6, 0, 6, 3, 0, 3, 3])  # images 0, 3, 6, some asked about several times
    regions = grids[[0, 3, 6]].reshape(-1, 512)
    write_grid(tmp_path / "g.h5", grids, np.arange(7))
    chunked = ChunkedFeatures(tmp_path / "g.h5", grids.shape, np.float16)
    for features in (grids.astype(np.float16), chunked):
        mean, variance = image_statistics(features, rows, chunk_size=10)  # one image per block
        assert mean.shape == variance.shape == (512,) and mean.dtype == variance.dtype == np.float32
        np.testing.assert_allclose(mean, regions.mean(axis=0), rtol=1e-5, atol=1e-6)
        live = np.arange(512) != 5
        np.testing.assert_allclose(variance[live], regions.var(axis=0)[live], rtol=1e-4)
        assert variance[5] == pytest.approx((0.01 * np.sqrt(regions.var(axis=0)).mean()) ** 2, rel=1e-3)


def test_batches_cast_float16_grids_to_float32():
    grids = grid_features(num_images=7).astype(np.float16)
    split = _split([3, 4, 5, 6, 7], labels=np.arange(5))
    batches = QuestionBatches(split, grids, split.image_ids, batch_size=2, shuffle=False)
    inputs, targets = batches[1]
    assert inputs["image_features"].dtype == np.float32 and inputs["image_features"].shape == (2, 2, 2, 512)
    np.testing.assert_array_equal(inputs["image_features"], grids[split.image_ids[targets["answer"]]])


@pytest.mark.parametrize("bucket", [False, True])
def test_in_graph_batches_are_the_same_batches_gathered_by_tensorflow(bucket):
    rng = np.random.default_rng(4)
    split = _split(rng.integers(1, 31, 90), labels=np.arange(90))
    grids = rng.normal(size=(7, 2, 2, 3)).astype(np.float16)
    make = lambda: QuestionBatches(split, grids, split.image_ids, batch_size=16, bucket=bucket, seed=5)  # noqa: E731
    reference, dataset = make(), in_graph_batches(make())
    passes = []
    for _ in range(2):  # each pass over the dataset is one epoch, reshuffled as fit reshuffles a PyDataset
        got = [(x["question"].numpy(), x["image_features"].numpy(), y["answer"].numpy()) for x, y in dataset]
        assert len(got) == len(reference) == int(dataset.cardinality())
        for i, (question, image, answer) in enumerate(got):
            inputs, targets = reference[i]
            np.testing.assert_array_equal(answer, targets["answer"])
            np.testing.assert_array_equal(question, inputs["question"])
            assert image.dtype == np.float32
            np.testing.assert_array_equal(image, inputs["image_features"])
        passes.append([a.tolist() for _, _, a in got])
        reference.on_epoch_end()
    assert passes[0] != passes[1]


def test_in_graph_batches_only_for_whole_in_memory_labelled_batches():
    split = _split([3, 4, 5, 6, 7], labels=np.arange(5))
    features = np.zeros((7, 4), np.float32)
    assert in_graph_batches(QuestionBatches(split, features, split.image_ids, batch_size=2)) is not None
    assert in_graph_batches(QuestionBatches(split, features, split.image_ids, batch_size=2), max_bytes=100) is None
    assert in_graph_batches(QuestionBatches(split, features, split.image_ids, batch_size=2, shard=(0, 2))) is None
    unlabelled = _split([3, 4, 5])
    assert in_graph_batches(QuestionBatches(unlabelled, features, unlabelled.image_ids, batch_size=2)) is None
