"""Tests for vqa.batching: the dynamic batcher and the LRU feature cache (pure Python, no models)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vqa.batching import Admission, Batcher, FeatureCache, NullObserver, check_batching, check_limits
from vqa.errors import DeadlineExceeded, InputError, Overloaded


def run_together(batcher: Batcher, items: list, *, announce: bool = True) -> tuple[list, list]:
    """Submit ``items`` from one thread each, all released at once; (results or errors, timings)."""
    results, timings = [None] * len(items), [None] * len(items)
    barrier = threading.Barrier(len(items))

    def work(i):
        barrier.wait()
        try:
            if announce:
                with batcher.expecting() as arrival:
                    results[i], timings[i] = batcher.submit(items[i], arrival=arrival)
            else:
                results[i], timings[i] = batcher.submit(items[i])
        except Exception as error:  # noqa: BLE001 - compared below
            results[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results, timings


class Recorder:
    """A batch function that doubles numbers and records each call's size; "bad" items raise."""

    def __init__(self, delay: float = 0.0):
        self.sizes, self.delay = [], delay

    def __call__(self, items):
        self.sizes.append(len(items))
        time.sleep(self.delay)
        if "bad" in items:
            raise ValueError("a bad item")
        return [2 * item for item in items]


def test_items_from_many_threads_share_batches_and_get_their_own_results():
    recorder = Recorder(delay=0.05)
    batcher = Batcher(recorder, max_batch_size=4, timeout_s=1.0)
    results, timings = run_together(batcher, list(range(10)))
    assert results == [2 * i for i in range(10)]
    assert max(recorder.sizes) > 1 and max(recorder.sizes) <= 4 and sum(recorder.sizes) == 10
    assert all(t["batch_size"] in recorder.sizes and t["queue"] >= 0 and t["run"] > 0 for t in timings)


def test_one_bad_item_fails_only_itself():
    recorder = Recorder(delay=0.02)
    batcher = Batcher(recorder, max_batch_size=8, timeout_s=1.0)
    items = [1, 2, "bad", 3, 4]
    results, _ = run_together(batcher, items)
    assert [r for i, r in enumerate(results) if i != 2] == [2, 4, 6, 8]
    assert isinstance(results[2], ValueError) and str(results[2]) == "a bad item"
    assert max(recorder.sizes) > 1  # the failing call was a real batch, re-run item by item


def test_a_lone_item_does_not_wait_for_the_timeout():
    batcher = Batcher(Recorder(), max_batch_size=8, timeout_s=5.0)
    start = time.perf_counter()
    with batcher.expecting() as arrival:
        result, timing = batcher.submit(21, arrival=arrival)
    assert result == 42 and timing["batch_size"] == 1
    assert time.perf_counter() - start < 1.0


def test_an_announced_caller_is_waited_for_up_to_the_timeout():
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=8, timeout_s=2.0)
    out = {}

    def late():
        with batcher.expecting() as arrival:
            time.sleep(0.2)  # decoding
            out["late"] = batcher.submit(5, arrival=arrival)[0]

    with batcher.expecting() as arrival:
        thread = threading.Thread(target=late)
        thread.start()
        time.sleep(0.05)
        out["first"] = batcher.submit(1, arrival=arrival)[0]
    thread.join(timeout=10)
    assert out == {"first": 2, "late": 10} and recorder.sizes == [2]


def test_batch_size_one_runs_on_the_callers_thread():
    threads = []
    batcher = Batcher(lambda items: threads.append(threading.current_thread()) or items, max_batch_size=1)
    assert batcher.submit("x")[0] == "x"
    assert threads == [threading.current_thread()] and batcher._thread is None


def test_observer_hears_batches_and_queue_depths():
    class Log(NullObserver):
        def __init__(self):
            self.batches, self.depths = [], []

        def batch(self, stage, size, seconds):
            self.batches.append((stage, size))

        def queue_depth(self, stage, depth):
            self.depths.append((stage, depth))

    log = Log()
    batcher = Batcher(Recorder(delay=0.02), max_batch_size=4, timeout_s=0.5, stage="image")
    batcher.observer = log
    run_together(batcher, list(range(6)))
    assert sum(size for _, size in log.batches) == 6 and {stage for stage, _ in log.batches} == {"image"}
    assert log.depths and log.depths[-1] == ("image", 0) and batcher.queue_depth() == 0


# --------------------------------------------------------------------------- the cache
def test_feature_cache_is_lru_and_bounded_in_bytes():
    row = np.zeros(256, np.float32)  # 1 KiB
    cache = FeatureCache(max_bytes=3 * row.nbytes)
    keys = [FeatureCache.key(bytes([i])) for i in range(4)]
    for key in keys[:3]:
        cache.put(key, row)
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], row + 1)
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None
    assert len(cache) == 3 and cache.size_bytes == 3 * row.nbytes
    stored = cache.get(keys[3])
    assert stored[0] == 1 and not stored.flags.writeable


def test_feature_cache_off_and_oversized_rows_keep_nothing():
    cache = FeatureCache(max_bytes=0)
    assert not cache.enabled
    small = FeatureCache(max_bytes=100)
    small.put(b"k", np.zeros(1000, np.float32))
    assert len(small) == 0 and small.get(b"k") is None


def test_feature_cache_counts_hits_and_misses():
    seen = []

    class Log:
        def cache(self, hit):
            seen.append(hit)

    cache = FeatureCache(max_bytes=1 << 20)
    cache.observer = Log()
    key = FeatureCache.key(b"jpeg bytes")
    cache.get(key)
    cache.put(key, np.ones(4, np.float32))
    cache.get(key)
    assert seen == [False, True]


# --------------------------------------------------------------------------- the knobs
@pytest.mark.parametrize("knobs, name", [
    ((0, 10, 64), "max_batch_size"), (("eight", 10, 64), "max_batch_size"), ((2.5, 10, 64), "max_batch_size"),
    ((8, -1, 64), "batch_timeout_ms"), ((8, "soon", 64), "batch_timeout_ms"),
    ((8, 10, -5), "feature_cache_mb"), ((8, 10, "nan"), "feature_cache_mb"),
])
def test_bad_knobs_name_the_setting(knobs, name):
    with pytest.raises(InputError, match=f"^{name} must be"):
        check_batching(*knobs)


def test_knobs_parse_from_environment_strings():
    assert check_batching("8", "2.5", "0") == (8, 2.5, 0.0)


# --------------------------------------------------------------------------- bounded waits
class Counts(NullObserver):
    """An observer that keeps what bounded waits report."""

    def __init__(self):
        self.queue_times, self.timeouts, self.shed_count = [], [], 0

    def queue_time(self, stage, seconds):
        self.queue_times.append((stage, seconds))

    def timeout(self, stage):
        self.timeouts.append(stage)

    def shed(self):
        self.shed_count += 1


class Gate:
    """A batch function that blocks until released, recording every item it runs."""

    def __init__(self):
        self.release, self.ran = threading.Event(), []

    def __call__(self, items):
        self.ran.extend(items)
        assert self.release.wait(30)
        return [2 * item for item in items]


def submit_in_thread(batcher: Batcher, item, deadline: float | None) -> tuple[threading.Thread, dict]:
    out = {}

    def work():
        try:
            out["result"] = batcher.submit(item, deadline=deadline)[0]
        except Exception as error:  # noqa: BLE001 - compared by the test
            out["error"] = error

    thread = threading.Thread(target=work)
    thread.start()
    return thread, out


@pytest.mark.parametrize("max_batch_size", [1, 2])
def test_a_job_queued_past_its_deadline_is_removed_not_computed(max_batch_size):
    gate, counts = Gate(), Counts()
    batcher = Batcher(gate, max_batch_size=max_batch_size, stage="image")
    batcher.observer = counts
    busy, busy_out = submit_in_thread(batcher, 1, None)  # holds the batcher (or its one slot)
    while not gate.ran:
        time.sleep(0.01)
    waiting = [submit_in_thread(batcher, 10 + i, time.perf_counter() + 0.2) for i in range(max_batch_size)]
    started = time.perf_counter()
    for thread, _ in waiting:
        thread.join(timeout=5)
    assert time.perf_counter() - started < 2 and not any(thread.is_alive() for thread, _ in waiting)
    assert all(isinstance(out.get("error"), DeadlineExceeded) for _, out in waiting)
    assert "waiting for its image batch" in str(waiting[0][1]["error"])
    gate.release.set()
    busy.join(timeout=5)
    assert busy_out == {"result": 2} and gate.ran == [1]  # the expired jobs never ran
    assert batcher.queue_depth() == 0 and counts.timeouts == ["image"] * max_batch_size
    assert all(seconds >= 0.15 for _, seconds in counts.queue_times[:max_batch_size])


def test_a_job_whose_batch_runs_past_its_deadline_has_its_result_dropped():
    gate, counts = Gate(), Counts()
    batcher = Batcher(gate, max_batch_size=4, stage="answer")
    batcher.observer = counts
    thread, out = submit_in_thread(batcher, 3, time.perf_counter() + 0.2)
    thread.join(timeout=5)
    assert not thread.is_alive() and isinstance(out["error"], DeadlineExceeded)
    assert "in its answer batch" in str(out["error"]) and gate.ran == [3]
    gate.release.set()
    assert batcher.submit(4, deadline=time.perf_counter() + 5)[0] == 8  # the batcher goes on
    assert counts.timeouts == ["answer"]


@pytest.mark.parametrize("max_batch_size", [1, 4])
def test_a_job_submitted_after_its_deadline_never_runs(max_batch_size):
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=max_batch_size)
    with pytest.raises(DeadlineExceeded):
        batcher.submit(1, deadline=time.perf_counter() - 0.01)
    assert recorder.sizes == [] and batcher.queue_depth() == 0


def test_a_deadline_in_time_changes_nothing():
    batcher = Batcher(Recorder(delay=0.02), max_batch_size=4, timeout_s=0.5)
    result, timing = batcher.submit(5, deadline=time.perf_counter() + 10)
    assert result == 10 and timing["batch_size"] == 1


def test_admission_sheds_beyond_max_queue_and_counts_only_those_inside():
    counts = Counts()
    admission = Admission(max_queue=2, timeout_s=3.0)
    admission.observer = counts
    with admission.admit() as first, admission.admit():
        assert admission.inside == 2 and first == pytest.approx(time.perf_counter() + 3.0, abs=0.5)
        with pytest.raises(Overloaded, match="2 requests are already waiting") as refused:
            with admission.admit():
                pass
        assert refused.value.retry_after == 3 and not isinstance(refused.value, DeadlineExceeded)
    assert admission.inside == 0 and counts.shed_count == 1
    with admission.admit():  # room again
        assert admission.inside == 1


def test_a_deadline_exceeded_inside_says_to_retry_after_the_timeout():
    admission = Admission(timeout_s=1.5)
    with pytest.raises(DeadlineExceeded) as error:
        with admission.admit():
            raise DeadlineExceeded("waited too long")
    assert error.value.retry_after == 2 and admission.inside == 0


def test_admission_without_bounds_admits_all_and_sets_no_deadline():
    admission = Admission()
    with admission.admit() as deadline, admission.admit(), admission.admit():
        assert deadline is None and admission.inside == 3
    assert admission.retry_after == 1


def test_no_thread_is_stuck_after_a_burst_with_deadlines():
    """32 callers, 8 admitted at most, deadlines shorter than the work: every thread ends on its own."""
    admission = Admission(max_queue=8, timeout_s=0.15)
    batcher = Batcher(Recorder(delay=0.1), max_batch_size=4, timeout_s=0.01)
    outcomes = []

    def ask(i):
        try:
            with admission.admit() as deadline:
                outcomes.append(batcher.submit(i, deadline=deadline)[0] == 2 * i)
        except Overloaded as error:
            outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads) and len(outcomes) == 32
    assert set(outcomes) <= {True, "Overloaded", "DeadlineExceeded"} and True in outcomes
    assert "Overloaded" in outcomes and admission.inside == 0 and batcher.queue_depth() == 0


@pytest.mark.parametrize("limits, name", [
    ((-1, 100), "max_queue"), ((1.5, 100), "max_queue"), (("many", 100), "max_queue"),
    ((4, -5), "request_timeout_ms"), ((4, "inf"), "request_timeout_ms"), ((4, "soon"), "request_timeout_ms"),
])
def test_bad_limits_name_the_setting(limits, name):
    with pytest.raises(InputError, match=f"^{name} must be"):
        check_limits(*limits)


def test_limits_parse_and_zero_means_no_bound():
    assert check_limits("0", "0") == (0, 0.0) and check_limits(16, "5000") == (16, 5000.0)
