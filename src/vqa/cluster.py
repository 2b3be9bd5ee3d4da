"""The cluster a worker belongs to: ``TF_CONFIG``, its timeout, and where each worker writes.

``vqa train --distribute multiworker`` runs the same command on every host that ``TF_CONFIG``
names. This module reads that configuration into a ``WorkerRole`` (checked, before anything is
written) and answers the questions that depend only on the role: how long to wait for the
other workers (``VQA_CLUSTER_TIMEOUT``), which folders this worker writes (only the chief
writes ``--out`` and ``--logdir``) and the seed every worker shuffles with. Forming the cluster
is ``vqa.distribute``'s job; its watchdog is ``vqa.watchdog``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from vqa import artifacts
from vqa.errors import InputError

TIMEOUT_ENV = "VQA_CLUSTER_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')
JOBS = ("chief", "worker")  # chief (if any) is rank 0, then the workers in order, as TensorFlow counts them


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a cluster: ``rank`` of ``num_workers``, and every worker's address."""

    rank: int = 0
    num_workers: int = 1
    addresses: tuple[str, ...] = ()

    @property
    def is_chief(self) -> bool:
        """Whether this worker writes the model directory, checkpoints, logs and history."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(index, count) for ``QuestionBatches(shard=...)``."""
        return self.rank, self.num_workers

    @property
    def name(self) -> str:
        return f"worker {self.rank} of {self.num_workers}"


SINGLE = WorkerRole()


# --------------------------------------------------------------------------- TF_CONFIG
def _address_error(address) -> str | None:
    """Why ``address`` is not a usable "host:port", or None."""
    if not isinstance(address, str) or ":" not in address:
        return f"{address!r} is not \"host:port\""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{address!r} is not \"host:port\" with a port in 1-65535"
    return None


def _cluster_addresses(cluster) -> list[str]:
    """Every worker's address in rank order (chief first), checked; InputError on a bad cluster."""
    if not isinstance(cluster, dict) or not cluster:
        raise InputError(f"TF_CONFIG: \"cluster\" must map job names to address lists, e.g. {TF_CONFIG_EXAMPLE}")
    unknown = sorted(set(cluster) - set(JOBS))
    if unknown:
        raise InputError(f"TF_CONFIG: job {unknown[0]!r} is not supported; name the hosts under \"worker\" "
                         "(and optionally one \"chief\")")
    addresses = []
    for job in JOBS:
        hosts = cluster.get(job, [])
        if not isinstance(hosts, list) or (job in cluster and not hosts):
            raise InputError(f"TF_CONFIG: cluster[{job!r}] must be a non-empty list of \"host:port\" strings")
        problems = [p for p in map(_address_error, hosts) if p]
        if problems:
            raise InputError(f"TF_CONFIG: cluster[{job!r}]: {problems[0]}")
        addresses += hosts
    if len(cluster.get("chief", [])) > 1:
        raise InputError("TF_CONFIG: at most one \"chief\"; list the other hosts under \"worker\"")
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise InputError(f"TF_CONFIG: {duplicates[0]} is listed twice; give every worker its own host:port")
    return addresses


def parse_tf_config(text: str | None) -> WorkerRole:
    """This worker's role from a ``TF_CONFIG`` JSON string.

    Args:
        text: the TF_CONFIG value, e.g. ``{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": 0}}``.
    Returns:
        WorkerRole (rank 0 is the chief: the "chief" job if present, else worker 0).
    Raises:
        InputError: one line naming what is missing, malformed, or outside the cluster.
    """
    if not text or not text.strip():
        raise InputError(f"--distribute multiworker needs TF_CONFIG naming the cluster and this worker, "
                         f"e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos}); "
                         f"e.g. {TF_CONFIG_EXAMPLE}") from None
    if not isinstance(spec, dict):
        raise InputError(f"TF_CONFIG must be a JSON object with \"cluster\" and \"task\", e.g. {TF_CONFIG_EXAMPLE}")
    addresses = _cluster_addresses(spec.get("cluster"))
    task = spec.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise InputError("TF_CONFIG: \"task\" must give this worker's \"type\" and \"index\", "
                         "e.g. {\"type\": \"worker\", \"index\": 0}")
    job, index = task["type"], task["index"]
    hosts = spec["cluster"].get(job) if isinstance(job, str) else None
    if not hosts:
        raise InputError(f"TF_CONFIG: task type {job!r} is not a job of the cluster "
                         f"({', '.join(sorted(spec['cluster']))})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(hosts):
        raise InputError(f"TF_CONFIG: task {job} {index!r} is outside the cluster ({len(hosts)} {job} "
                         f"address(es): index 0-{len(hosts) - 1})")
    offset = len(spec["cluster"].get("chief", [])) if job == "worker" else 0
    return WorkerRole(offset + index, len(addresses), tuple(addresses))


def cluster_role(name: str | None, environ=os.environ) -> WorkerRole:
    """This process's role for ``--distribute name``: ``multiworker`` reads ``TF_CONFIG``, anything else is SINGLE.

    ``name`` is a checked ``TrainConfig.distribute`` (``TrainConfig.validated`` refuses unknown strategies).
    """
    return parse_tf_config(environ.get("TF_CONFIG")) if name == "multiworker" else SINGLE


def cluster_timeout(environ=os.environ) -> float:
    """Seconds to wait for every worker to join (``VQA_CLUSTER_TIMEOUT``, default 300)."""
    text = environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InputError(f"{TIMEOUT_ENV}={text!r}: give the seconds to wait for the other workers, e.g. 300")
    return seconds


# --------------------------------------------------------------------------- what each worker writes and draws
def worker_paths(out_dir: Path, logdir: Path, role: WorkerRole, *, fresh: bool = False) -> tuple[Path, Path]:
    """(model directory, TensorBoard folder) this worker writes to.

    The chief writes the real ones. Another worker gets a temporary folder (removed when the
    process exits) holding a copy of the chief's config, history and BackupAndRestore state, so
    that a restarted cluster resumes every worker at the same epoch with the same weights and
    learning-rate schedule; with ``fresh`` (``--overwrite``: the chief starts again) nothing is copied.
    """
    if role.is_chief:
        return Path(out_dir), Path(logdir)
    scratch = Path(tempfile.mkdtemp(prefix=f"vqa-worker{role.rank}-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    backup = Path(out_dir) / artifacts.BACKUP_DIR
    if not fresh and backup.is_dir() and (Path(out_dir) / artifacts.CONFIG_JSON).is_file():
        shutil.copytree(backup, scratch / "out" / artifacts.BACKUP_DIR)
        shutil.copy2(Path(out_dir) / artifacts.CONFIG_JSON, scratch / "out" / artifacts.CONFIG_JSON)
        if (Path(out_dir) / artifacts.HISTORY_CSV).is_file():  # the plateau schedule resumes from it, as the chief's
            shutil.copy2(Path(out_dir) / artifacts.HISTORY_CSV, scratch / "out" / artifacts.HISTORY_CSV)
    return scratch / "out", scratch / "logs"


def shuffle_seed(seed: int | None, role: WorkerRole) -> int | None:
    """The shuffling seed: workers must draw the same global batches, so a cluster never shuffles unseeded."""
    if seed is not None or role.num_workers == 1:
        return seed
    return zlib.crc32(",".join(role.addresses).encode())
