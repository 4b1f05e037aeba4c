"""Data-parallel training on the backends' own engines (`distribute="data_parallel"`).

`make_plan(config)` returns the run's `Plan`: what `train()` needs to run one Keras `fit`
over several devices or hosts, with the single-device guarantees kept.

- jax: `keras.distribution.DataParallel` over every visible device (GPUs, else CPUs);
  multi-host after `keras.distribution.initialize()` (reads `KERAS_DISTRIBUTION_*`).
- tensorflow: `tf.distribute.MirroredStrategy` over every visible GPU (else every logical
  CPU); `MultiWorkerMirroredStrategy` when `TF_CONFIG` names several workers.
- torch: `torch.distributed` + `DistributedDataParallel`, one process per device launched
  by `torchrun` (gloo on CPU, nccl on GPU); Keras' `keras.distribution` has no torch
  backend in 3.15. `fit` stays; the model's `train_step` routes its forward through DDP so
  the gradients are averaged by DDP's reducer before the optimizer step.

What holds: `batch_size` is the GLOBAL batch (each of R replicas gets `batch_size / R`
consecutive examples of it), so steps per epoch, the LR schedule (per global step) and the
data order are those of the single-device run. The global-norm clip and the coupled decay
see the global gradient (`CoupledDecaySGD`). BatchNorm, including the quadratic layers'
per-branch BN, uses global-batch statistics (`quadkeras.layers.replica_moments`), so the
moving statistics are the same on every replica. Quantizers take their first-batch values
from the whole first global batch, identically on every process. With several processes
only process 0 writes the work_dir; the others run the same code on a private scratch copy
(resumed from the work_dir's files), which is removed at the end: the work_dir must be on a
filesystem every host sees.

Example:

>>> plan = make_plan({"distribute": "", "batch_size": 64})
>>> plan.replicas, plan.is_writer, plan.run_config({"verbose": 2})
(1, True, {'verbose': 2})
"""

import contextlib
import json
import os
import shutil
import tempfile

import keras

from quadkeras.backend import active as active_backend
from quadkeras.data.array_batches import ArrayBatches
from quadkeras.training import checkpoint
from quadkeras.training.config import DISTRIBUTE
from quadkeras.training.ddp_step import GlobalEpochLogs, use_ddp
from quadkeras.training.work_dir import open_run


class Plan:
    """One device, one process: every hook is a no-op (the default run)."""

    name = "single device"
    replicas = 1  # devices sharing each global batch
    processes = 1  # hosts / launched processes
    rank = 0  # this process (0 writes the work_dir)

    @property
    def is_writer(self):
        return self.rank == 0

    def run_config(self, config):
        """The config this process trains with: quiet (verbose=0) except on process 0."""
        return config if self.is_writer else {**config, "verbose": 0}

    def scope(self):
        """Context in which the model, its optimizer and `fit` must live."""
        return contextlib.nullcontext()

    def prepare(self, model):
        """Hook after the model is compiled (or loaded); returns the model."""
        return model

    def check_data(self, config, data):
        """One-line ValueError if the loaded splits cannot be fed to this plan."""

    def callbacks(self):
        """Keras callbacks the run puts first (before the logs are checked or written)."""
        return []

    def process_batches(self, dataset):
        """The part of each global batch this process feeds to `fit` (all of it here)."""
        return dataset

    def barrier(self):
        """Wait for every process (no-op with one)."""

    def describe(self):
        return f"{self.name}: {self.replicas} replica(s), {self.processes} process(es)"


class JaxPlan(Plan):
    name = "jax DataParallel"

    def __init__(self):
        import jax

        if os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES") and not jax.distributed.is_initialized():
            keras.distribution.initialize()  # multi-host: before any JAX computation
        devices = keras.distribution.list_devices()  # GPUs, else CPUs
        self.distribution = keras.distribution.DataParallel(devices=devices)
        self.replicas = len(devices)
        self.processes, self.rank = jax.process_count(), jax.process_index()

    def scope(self):
        return self.distribution.scope()

    def check_data(self, config, data):
        # XLA shards every evaluation batch too, the last partial one included.
        eval_batch = config["eval_batch_size"]
        splits = [("max_test", config["max_test"], "test split", len(data.x_test))]
        if data.x_val is not None:
            splits.append(("val_fraction", config["val_fraction"], "validation split", len(data.x_val)))
        for flag, value, what, size in splits:
            if size >= eval_batch and eval_batch % self.replicas:
                flag, value, what, size = "eval_batch_size", eval_batch, "evaluation batch", eval_batch
            elif size % eval_batch % self.replicas:
                what = what if size < eval_batch else f"last batch of the {what}"
                size = size % eval_batch
            else:
                continue
            raise ValueError(
                f"Invalid {flag}={value!r}: jax DataParallel shards every evaluation batch over "
                f"{self.replicas} devices, but the {what} has {size} examples (not a multiple of "
                f"{self.replicas}); choose a {flag} that makes it one.")

    def barrier(self):
        if self.processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("quadkeras.training.distribute")


class TensorFlowPlan(Plan):
    def __init__(self):
        import tensorflow as tf

        if len(_tf_config_workers()) > 1:
            self.name = "tf MultiWorkerMirroredStrategy"
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
            resolver = self.strategy.cluster_resolver
            self.processes = len(_tf_config_workers())
            self.rank = _tf_worker_rank(resolver.task_type, resolver.task_id,
                                        resolver.cluster_spec().as_dict())
        else:
            self.name = "tf MirroredStrategy"
            gpus = tf.config.list_logical_devices("GPU")
            devices = gpus or tf.config.list_logical_devices("CPU")
            self.strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
        self.replicas = self.strategy.num_replicas_in_sync

    def scope(self):
        return self.strategy.scope()

    def barrier(self):
        if self.processes > 1:  # a collective every worker must join
            import tensorflow as tf

            self.strategy.reduce(tf.distribute.ReduceOp.SUM,
                                 self.strategy.run(lambda: tf.constant(1.0)), axis=None)


def tf_config():
    """`TF_CONFIG` as a dict ({} when unset), checked: a one-line ValueError naming it when it
    is not a JSON object, its `cluster` is not a mapping of address lists, or its `task` names
    a type / index the cluster does not have."""
    text = os.environ.get("TF_CONFIG") or ""
    if not text.strip():
        return {}
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        config = json.loads(text)
    except ValueError as err:
        raise ValueError(f"Invalid TF_CONFIG={shown!r}: not JSON ({err}); expected e.g. "
                         '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": '
                         '{"type": "worker", "index": 0}}.') from None
    cluster = config.get("cluster", {}) if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in cluster.values()):
        raise ValueError(f"Invalid TF_CONFIG={shown!r}: expected a JSON object whose 'cluster' maps "
                         "task types (chief, worker, ...) to lists of 'host:port' addresses.")
    task = config.get("task", {})
    if cluster and task:
        kind, index = (task.get("type"), task.get("index", 0)) if isinstance(task, dict) else (None, None)
        if not isinstance(kind, str) or kind not in cluster:
            raise ValueError(f"Invalid TF_CONFIG={shown!r}: task type {kind!r} is not in the cluster "
                             f"(expected one of {sorted(cluster)}).")
        size = len(cluster[kind])
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
            raise ValueError(f"Invalid TF_CONFIG={shown!r}: task index {index!r} is out of range for "
                             f"the {size} {kind!r} address(es) (expected 0..{size - 1}).")
    return config


def _tf_config_workers():
    cluster = tf_config().get("cluster", {})
    return cluster.get("chief", []) + cluster.get("worker", [])


def _tf_worker_rank(task_type, task_id, cluster):
    """0 for the chief (or worker 0 without a chief), as Keras' multi-worker guide picks."""
    if task_type == "chief":
        return 0
    return int(task_id) + (1 if "chief" in cluster else 0)


class TorchPlan(Plan):
    name = "torch DistributedDataParallel"

    def __init__(self):
        import torch
        import torch.distributed as dist

        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing and not dist.is_initialized():
            raise ValueError(
                "Invalid distribute='data_parallel' for backend 'torch': launch one process per "
                f"device with torchrun (e.g. torchrun --nproc_per_node=2 apps/train.py ...); "
                f"{', '.join(missing)} not set.")
        self.cuda = torch.cuda.is_available()
        if not dist.is_initialized():
            if self.cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group("nccl" if self.cuda else "gloo")
        self.replicas = self.processes = dist.get_world_size()
        self.rank = dist.get_rank()

    def prepare(self, model):
        return use_ddp(model, self.cuda)

    def callbacks(self):
        return [GlobalEpochLogs()]

    def process_batches(self, dataset):
        rank, share = self.rank, self.processes
        if isinstance(dataset, ArrayBatches):  # the NumPy pipeline (tf.data's shard differs)
            return dataset.shard(rank, share)

        def rank_slice(*batch):  # this rank's consecutive slice of the global batch
            import tensorflow as tf

            size = tf.shape(batch[0])[0] // share
            return tuple(t[rank * size:(rank + 1) * size] for t in batch)

        return dataset.map(rank_slice)

    def barrier(self):
        import torch.distributed as dist

        dist.barrier()


_PLANS = {"jax": JaxPlan, "tensorflow": TensorFlowPlan, "torch": TorchPlan}


def is_primary_process():
    """False only in a non-zero rank of a multi-process run (torchrun's RANK, jax's process
    index, the TF_CONFIG task): True in the process that writes the work_dir."""
    index = active_backend().process_index()
    if index is not None:
        return index == 0
    config = tf_config()
    task = config.get("task", {})
    return _tf_worker_rank(task.get("type", "chief"), task.get("index", 0), config.get("cluster", {})) == 0


def make_plan(config):
    """The `Plan` for `config["distribute"]` on the current backend; one-line ValueError on
    an unknown value, an unsupported backend or a batch the replicas cannot share."""
    mode = config.get("distribute", "")
    if mode not in DISTRIBUTE:
        raise ValueError(f"Invalid distribute={mode!r}: expected one of {DISTRIBUTE[1:]} or '' "
                         "(one device).")
    if not mode:
        return Plan()
    backend = keras.backend.backend()
    if backend not in _PLANS:
        raise ValueError(f"Invalid distribute={mode!r} for backend {backend!r}: expected backend "
                         f"one of {tuple(_PLANS)}.")
    plan = _PLANS[backend]()
    check_batch(config, plan.replicas)
    return plan


def check_batch(config, replicas):
    """One-line ValueError unless the global `batch_size` splits evenly over `replicas`."""
    if config["batch_size"] % replicas:
        raise ValueError(f"Invalid batch_size={config['batch_size']}: distribute="
                         f"{config['distribute']!r} splits each global batch over {replicas} "
                         f"replicas; expected a multiple of {replicas}.")


@contextlib.contextmanager
def open_plan_run(plan, config):
    """`open_run` for this process: process 0 claims the work_dir; the others (after it did)
    work on a private scratch copy of its run files, removed afterwards."""
    if plan.processes == 1:
        with open_run(config) as run:
            yield run
        return
    if plan.is_writer:
        with open_run(config) as run:
            plan.barrier()  # the work_dir is claimed (and cleaned)
            plan.barrier()  # every follower has copied it
            yield run
        return
    plan.barrier()
    scratch = tempfile.mkdtemp(prefix=f"quadkeras-rank{plan.rank}-")
    try:
        if config["resume"]:
            _copy_run_files(os.path.abspath(config["work_dir"]), scratch)
        plan.barrier()
        with open_run({**config, "work_dir": scratch}) as run:
            yield run
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _copy_run_files(source, target):
    for name in checkpoint.RUN_FILES:
        path = os.path.join(source, name)
        if os.path.exists(path):
            shutil.copy2(path, os.path.join(target, name))
