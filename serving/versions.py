"""Live model versions: the served Predictor behind a lease, swapped whole, and a model repository's watcher.

:class:`LiveModel` holds the Predictor that answers and its version. A request takes a lease on it
(:meth:`LiveModel.acquire`) and gives it back when it is answered; :meth:`LiveModel.serve` puts a new
one in its place at once, so requests that started on the old one finish on it, and the old one is
closed (its batcher threads end) when its last lease comes back.

:class:`VersionWatcher` serves a model repository (``vqa.repository``): at start-up the highest
complete version that loads, then, every ``poll_seconds`` on its own thread, a newer complete
version (unchanged for one poll) or, when the served one is removed, the highest one below it. It
loads the new version beside the old one and warms it (the ``load`` callable), then swaps it in; a
version that fails is refused, logged and listed by /readyz, and tried again only once its files
change. Each gunicorn worker runs its own watcher.

A plain model directory, packed file or URL is served as version ``"1"`` (PLAIN_VERSION), with no
watcher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from vqa.errors import VQAError
from vqa.repository import Version, check_repository, pick, scan

logger = logging.getLogger(__name__)

PLAIN_VERSION = "1"  # the version a plain model directory, packed file or URL is served as
MAX_REASON_CHARS = 300


class _Served:
    """One Predictor with its version and the number of requests that hold it."""

    def __init__(self, predictor, version: str):
        self.predictor, self.version = predictor, version
        self.leases, self.retired, self.keep_images = 0, False, False

    def close(self) -> None:
        self.predictor.close(keep_images=self.keep_images)


class LiveModel:
    """The served Predictor and its version, swapped atomically; the old one closes when its requests end."""

    def __init__(self):
        self._lock = threading.Lock()
        self._current: _Served | None = None
        self.refused: dict[str, str] = {}  # version -> why it was refused (replaced whole, read by /readyz)

    @property
    def current(self) -> _Served | None:
        """The served Predictor and its version (``.predictor``, ``.version``), or None before the first."""
        return self._current

    @property
    def version(self) -> str | None:
        """The version that answers new requests, or None before the first one is served."""
        current = self._current
        return current.version if current is not None else None

    @property
    def predictor(self):
        """The Predictor that answers new requests, or None."""
        current = self._current
        return current.predictor if current is not None else None

    def serve(self, predictor, version: str) -> None:
        """Answer new requests with ``predictor`` from now on; the previous one closes once it is free."""
        with self._lock:
            old, self._current = self._current, _Served(predictor, version)
            if old is not None:
                old.retired, old.keep_images = True, old.predictor.images is predictor.images
            free = old is not None and old.leases == 0
        if free:
            old.close()

    def acquire(self) -> _Served:
        """A lease on the current Predictor (``.predictor``, ``.version``); give it back with :meth:`release`."""
        with self._lock:
            self._current.leases += 1
            return self._current

    def release(self, served: _Served) -> None:
        """Give a lease back; the last one of a replaced Predictor closes it."""
        with self._lock:
            served.leases -= 1
            free = served.retired and served.leases == 0
        if free:
            served.close()


def one_line(error: BaseException) -> str:
    """An error as one short line (for the log and /readyz)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 3] + "..."


class VersionWatcher:
    """Serves a model repository's highest complete version and follows its updates and rollbacks.

    Args:
        repo: the repository folder.
        live: where the served Predictor is read from (and the refusals written to).
        load: a version -> its warmed-up Predictor (loaded beside the served one); raises if it cannot.
        serve: (Predictor, version name) -> None: swap it in (``LiveModel.serve`` plus metrics).
        checkpoint: the checkpoint each version folder must hold.
        poll_seconds: seconds between two scans.
    """

    def __init__(self, repo: Path, live: LiveModel, *, load: Callable[[Version], object],
                 serve: Callable[[object, str], None], checkpoint: str, poll_seconds: float):
        self.repo, self.live, self.load, self.serve = Path(repo), live, load, serve
        self.checkpoint, self.poll_seconds = checkpoint, poll_seconds
        self._previous: dict[int, tuple] = {}
        self._refused: dict[int, tuple] = {}  # version number -> the fingerprint it failed with
        self._warned_gone: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def serve_first(self) -> None:
        """At start-up: serve the highest complete version that loads, refusing (and logging) broken ones.

        Raises:
            VQAError: one line, when no version is complete (InputError) or none loads.
        """
        check_repository(self.repo, checkpoint=self.checkpoint)
        versions = scan(self.repo, checkpoint=self.checkpoint)
        while (version := pick(versions, current=None, refused=self._refused)) is not None:
            if self._swap_to(version):
                break
        else:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in self.live.refused.items())
            raise VQAError(f"{self.repo}: no model version could be served ({reasons})")
        self._previous = {v.number: v.fingerprint for v in versions}

    def poll(self) -> None:
        """One look at the repository: swap in a new (or, after a removal, the next lower) version if there is one."""
        versions = scan(self.repo, checkpoint=self.checkpoint)
        current = int(self.live.version)
        version = pick(versions, current=current, previous=self._previous, refused=self._refused)
        self._previous = {v.number: v.fingerprint for v in versions}
        self._forget_removed(versions)
        if version is not None:
            self._swap_to(version)
        elif current not in self._previous and self._warned_gone != current:
            self._warned_gone = current
            logger.warning("model version %s was removed from %s and no other complete version is there; "
                           "it keeps serving", current, self.repo)

    def _swap_to(self, version: Version) -> bool:
        """Load, warm and swap in ``version``; on failure refuse it (log, /readyz) and keep the served one."""
        before = self.live.version
        try:
            predictor = self.load(version)
        except Exception as error:  # noqa: BLE001 - any failure refuses the version, the served one stays
            self._refused[version.number] = version.fingerprint
            self.live.refused = {**self.live.refused, version.name: one_line(error)}
            logger.error("model version %s (%s) refused: %s; %s", version.name, version.path, one_line(error),
                         f"version {before} keeps serving" if before else "trying the next lower version")
            return False
        self.serve(predictor, version.name)
        self.live.refused = {name: why for name, why in self.live.refused.items() if name != version.name}
        logger.warning("model version %s (%s) is serving%s", version.name, version.path,
                       f" in place of version {before}" if before else "")
        return True

    def _forget_removed(self, versions: list[Version]) -> None:
        """Drop the refusals of versions no longer in the repository."""
        present = {v.number for v in versions}
        self._refused = {n: f for n, f in self._refused.items() if n in present}
        self.live.refused = {name: why for name, why in self.live.refused.items() if int(name) in present}

    def start(self) -> None:
        """Poll on a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="vqa-versions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (the served version stays)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a bad scan must not end the watching
                logger.exception("looking for new model versions in %s failed", self.repo)
