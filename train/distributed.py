"""Multi-worker training: ``tf.distribute.MultiWorkerMirroredStrategy`` from ``TF_CONFIG``.

``python -m train.run --multi-worker`` is started with the same command on every machine,
each with its own ``TF_CONFIG`` (the standard TensorFlow variable: the cluster's addresses
and which task this process is). Every worker runs the same program; the strategy keeps them
in lockstep (variables are created with the chief's values, gradients are summed over all
replicas with an all-reduce after every step). What differs is where files go:

* the **chief** (the ``chief`` task, or worker 0 when the cluster names no ``chief``)
  writes the run folder (checkpoints, histories, models, report), as a single process would;
* every other worker writes the same files into a scratch copy of the run folder in the
  system's temporary directory (``TMPDIR``), deleted when it exits: the standard Keras
  multi-worker pattern (non-chief workers save to temporary paths) applied to the whole run
  folder, so that nothing of a worker lands in ``runs/``, even after a crash;
* before training, the chief sends the workers what decides a resumed run (its config, its
  splits, finished folds' documents, unfinished folds' latest checkpoint: see
  :meth:`train.run_folder.RunFolder.resume_files`) and each protocol's splits, so every
  worker resumes from the chief's state and trains on the chief's splits; a fingerprint of
  the splits is compared across workers. Nothing here needs a shared filesystem: the files
  travel over the strategy's own collective ops (:meth:`Cluster.share`).

The global batch is the configured ``batch_size`` (as with ``--multi-gpu``): ``model.fit``
hands the ``tf.data`` pipeline to ``strategy.experimental_distribute_dataset``, whose
auto-sharding (policy ``AUTO``, which falls back to ``DATA`` for in-memory datasets) gives
each of the N replicas 1/N of every batch, the batch a single process would have drawn.

Example (a two-machine cluster; see docs/training.md for more):

    # machine A (chief)
    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
                "task": {"type": "worker", "index": 0}}' python -m train.run --multi-worker
    # machine B
    TF_CONFIG='{... same cluster ..., "task": {"type": "worker", "index": 1}}' \\
        python -m train.run --multi-worker

Pure-Python parts (reading ``TF_CONFIG``, packing files) import no TensorFlow:

    >>> role = read_tf_config({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, '
    ...                        '"task": {"type": "worker", "index": 1}}'})
    >>> role.workers, role.is_chief, str(role)
    (2, False, 'worker 1')
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

    from train.splits import Split

logger = logging.getLogger(__name__)

TF_CONFIG = "TF_CONFIG"
TRAINING_TASKS = ("chief", "worker")
"""The ``TF_CONFIG`` task types that train; ``ps`` and ``evaluator`` are not used here."""


class DistributedError(RuntimeError):
    """The cluster cannot run as configured; the message says what to fix."""


# --- who am I -----------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerRole:
    """This process's place in the cluster, as ``TF_CONFIG`` names it.

    Attributes:
        task_type: ``chief`` or ``worker``.
        task_index: the index among the tasks of that type.
        workers: how many processes train (chief + workers).
        is_chief: this process writes the run folder.
    """

    task_type: str
    task_index: int
    workers: int
    is_chief: bool

    def __str__(self) -> str:
        return f"{self.task_type} {self.task_index}"


def read_tf_config(environ: Mapping[str, str] | None = None) -> WorkerRole:
    """This process's role from ``TF_CONFIG`` (``os.environ`` unless ``environ`` is given).

    Raises:
        DistributedError: no ``TF_CONFIG``, not JSON, or a cluster/task this trainer cannot
            run (parameter servers, evaluators, two chiefs, an index outside the cluster).

    Example:
        >>> read_tf_config({"TF_CONFIG": '{"cluster": {"chief": ["a:1"], "worker": ["b:2"]},'
        ...                 ' "task": {"type": "worker", "index": 0}}'}).is_chief
        False
    """
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "")
    if not text.strip():
        raise DistributedError(
            f"--multi-worker needs the {TF_CONFIG} environment variable: the cluster's "
            'addresses and this task, e.g. {"cluster": {"worker": ["host1:12345", '
            '"host2:12345"]}, "task": {"type": "worker", "index": 0}} (docs/training.md)'
        )
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DistributedError(f"{TF_CONFIG} is not valid JSON: {error}") from None
    cluster = document.get("cluster") if isinstance(document, dict) else None
    task = document.get("task") if isinstance(document, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise DistributedError(f'{TF_CONFIG} needs a "cluster" and a "task" object')
    other = sorted(set(cluster) - set(TRAINING_TASKS))
    if other:
        raise DistributedError(
            f"{TF_CONFIG} names {', '.join(other)} tasks: MultiWorkerMirroredStrategy trains "
            "with chief and worker tasks only"
        )
    if len(cluster.get("chief", [])) > 1:
        raise DistributedError(f"{TF_CONFIG} names more than one chief")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in TRAINING_TASKS or not isinstance(index, int):
        raise DistributedError(f'{TF_CONFIG} task must be {{"type": "chief"|"worker", "index": n}}')
    if not 0 <= index < len(cluster.get(task_type, [])):
        raise DistributedError(
            f"{TF_CONFIG} task {task_type} {index} is not in the cluster "
            f"({len(cluster.get(task_type, []))} {task_type} address(es))"
        )
    return WorkerRole(
        task_type=task_type,
        task_index=index,
        workers=sum(len(cluster.get(kind, [])) for kind in TRAINING_TASKS),
        # TensorFlow's rule (multi_worker_util.is_chief): the chief task, or worker 0 when
        # there is none.
        is_chief=task_type == "chief" or (index == 0 and "chief" not in cluster),
    )


def scratch_dir(role: WorkerRole) -> Path:
    """A fresh folder in the temporary directory for a non-chief worker's copy of the run."""
    return Path(tempfile.mkdtemp(prefix=f"breakhis-{role.task_type}{role.task_index}-"))


# --- the strategy -------------------------------------------------------------------------
def create_strategy() -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``, with Keras made to run under it.

    Must be called before any other TensorFlow operation in the process: the strategy
    configures TensorFlow's collective ops, which TensorFlow accepts only at startup.

    Raises:
        DistributedError: TensorFlow had already started (the call came too late).
    """
    import tensorflow as tf

    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:  # "Collective ops must be configured at program startup"
        raise DistributedError(
            "MultiWorkerMirroredStrategy must be created before any other TensorFlow "
            f"operation of the process ({error}); start each worker as a fresh process "
            "(python -m train.run --multi-worker)"
        ) from error
    patch_keras_for_multi_worker()
    return strategy


def patch_keras_for_multi_worker() -> None:
    """Make Keras 3's ``fit``/``evaluate`` run under ``MultiWorkerMirroredStrategy``.

    Keras 3.15's TensorFlow trainer fails there (keras-team/keras#20585, open), in two
    places; both are replaced by versions that act only in multi-worker mode and otherwise
    call Keras's own code:

    * ``reduce_per_replica`` averages each step's metric values over the workers with
      ``strategy.reduce("MEAN", v, axis=0)``, which fails on scalars ("Invalid reduction
      dimension 0 for input with 0 dimensions"). Here: ``axis=None`` (the mean over
      replicas, which is what Keras does on one machine with several GPUs).
    * ``_maybe_symbolic_build`` draws one batch from the training iterator and passes the
      whole ``(x, y)`` tuple to ``strategy.reduce``, which fails ("Attempt to convert a
      value (PerReplica ...)"). Here: the symbolic build gets the dataset's element spec
      (shapes and dtypes are all it needs), so no batch is drawn and the training data
      follow the same order as in a single process.

    ``steps_per_execution > 1`` still fails under this strategy (its ``tf.while_loop`` over
    a distributed iterator: "You must feed a value for placeholder tensor"), so the config
    refuses that combination (:func:`train.config.validate`).
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_multi_worker_patched", False):
        return
    multi_worker = trainer._collective_all_reduce_multi_worker
    keras_reduce = trainer.reduce_per_replica
    keras_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values: Any, strategy: tf.distribute.Strategy, reduction: str) -> Any:
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        strategy = self._distribute_strategy
        if strategy is None or not multi_worker(strategy):
            return keras_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            data_batch = iterator.data_adapter.get_tf_dataset().element_spec
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer._multi_worker_patched = True
    logger.debug("Keras patched for MultiWorkerMirroredStrategy (%s)", tf.__version__)


# --- what the workers exchange ------------------------------------------------------------
class Cluster:
    """The workers of one run and what they exchange besides gradients.

    Every method is a collective operation: every worker must call it, in the same order
    (as the training code does, since every worker runs the same program).
    """

    def __init__(self, strategy: tf.distribute.Strategy, role: WorkerRole) -> None:
        self.strategy = strategy
        self.role = role
        resolver = strategy.cluster_resolver
        if (resolver.task_type, resolver.task_id) != (role.task_type, role.task_index):
            raise DistributedError(
                f"TensorFlow reads this task as {resolver.task_type} {resolver.task_id}, "
                f"{TF_CONFIG} as {role}"
            )

    def _sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over the workers of ``values`` (each worker's own)."""
        import tensorflow as tf

        calls: list[int] = []

        def on_replica(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
            # One contribution per worker, however many replicas (GPUs) it has.
            calls.append(1)
            return tf.constant(values if len(calls) == 1 else np.zeros_like(values))

        per_replica = self.strategy.experimental_distribute_values_from_function(on_replica)
        total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return np.asarray(total)

    def share(self, payload: bytes | None) -> bytes:
        """The chief's ``payload`` on every worker (the others pass ``None``).

        The bytes travel as a sum over the workers of float32 numbers (the chief's, everyone
        else's zeros), three bytes per number: float32 holds integers below 2**24 exactly.
        """
        data = (payload or b"") if self.role.is_chief else b""
        length = int(self._sum(np.array([len(data)], dtype=np.float64))[0])
        if length == 0:
            return b""
        words = _bytes_to_words(data) if self.role.is_chief else None
        if words is None:
            words = np.zeros(-(-length // 3), dtype=np.float32)
        return _words_to_bytes(self._sum(words), length)

    def count_failures(self, failed: bool) -> int:
        """How many workers report ``failed`` (the same answer on every worker, so all of
        them can stop together rather than leave the others waiting)."""
        return round(float(self._sum(np.array([float(failed)], dtype=np.float64))[0]))

    def agree(self, what: str, value: str) -> None:
        """Check that every worker holds the chief's ``value`` of ``what``.

        Raises:
            DistributedError: on every worker, when any differs.
        """
        chiefs = self.share(value.encode() if self.role.is_chief else None).decode()
        differing = self.count_failures(chiefs != value)
        if differing:
            raise DistributedError(
                f"{what} differ between the workers: {differing} of {self.role.workers} "
                f"hold another than the chief's ({chiefs!r}; this {self.role}: {value!r})"
            )
        logger.info("%s: the same on all %d workers (%s)", what, self.role.workers, value)


def _bytes_to_words(data: bytes) -> np.ndarray:
    padded = np.frombuffer(data + b"\0" * (-len(data) % 3), dtype=np.uint8)
    triples = padded.reshape(-1, 3).astype(np.uint32)
    return (triples[:, 0] | triples[:, 1] << 8 | triples[:, 2] << 16).astype(np.float32)


def _words_to_bytes(words: np.ndarray, length: int) -> bytes:
    numbers = np.rint(words).astype(np.uint32)
    triples = np.stack([numbers & 255, numbers >> 8 & 255, numbers >> 16 & 255], axis=1)
    return triples.astype(np.uint8).tobytes()[:length]


def pack_files(root: Path, paths: Iterable[Path]) -> bytes:
    """The files (inside ``root``) as one zip archive, named relative to ``root``.

    Example:
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.txt").write_text("hello")
        >>> copy = Path(tempfile.mkdtemp())
        >>> [p.name for p in unpack_files(pack_files(folder, [folder / "a.txt"]), copy)]
        ['a.txt']
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, Path(path).relative_to(root).as_posix())
    return buffer.getvalue()


def unpack_files(data: bytes, root: Path) -> list[Path]:
    """Write the files of a :func:`pack_files` archive under ``root``; their paths."""
    if not data:
        return []
    written = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise DistributedError(f"refusing to write {name!r} outside {root}")
            target = Path(root, *relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
            written.append(target)
    return written


def splits_fingerprint(splits: list[Split]) -> str:
    """Identifies a protocol's splits: every split's name and each part's image paths, in
    the order training reads them (the order decides the shuffled batches)."""
    digest = hashlib.sha256()
    for split in splits:
        digest.update(f"split {split.name}\n".encode())
        for part in ("train", "val", "test"):
            digest.update(f"{part}\n".encode())
            for path in split.part(part)["path"]:
                digest.update(f"{path}\n".encode())
    return digest.hexdigest()[:16]
