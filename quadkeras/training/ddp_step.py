"""Keras `fit` on torch with `torch.nn.parallel.DistributedDataParallel` (DDP).

Keras 3.15 has no `keras.distribution` for torch, and its torch trainer calls the model
directly, so DDP's gradient reducer would never be armed. `use_ddp(model)` wraps the
compiled Keras model (a `torch.nn.Module`) in DDP and gives the model a `train_step` — the
custom-`train_step` pattern of Keras' "customizing fit() with PyTorch" guide — whose forward
goes through the DDP wrapper: `loss.backward()` then averages the gradients over the
processes (DDP's bucketed all-reduce) before Keras' optimizer (clip, decay, momentum) runs,
identically on every process. DDP also broadcasts process 0's weights when it wraps.

Example (needs an initialised process group; `quadkeras.training.distribute` makes one):

>>> model = use_ddp(model, cuda=False)  # doctest: +SKIP
>>> model.fit(process_slice_of_each_global_batch)  # doctest: +SKIP
"""

import functools

import keras

from quadkeras.training.fast_step import train_step


def use_ddp(model, cuda):
    """Route `model`'s training forward through DDP; returns the model (still a Keras one)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.cuda.current_device()] if cuda else None
    # find_unused_parameters: a quantizer may leave a trainable parameter out of a step.
    ddp = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)
    # A partial, not an attribute holding DDP: torch would register DDP as a submodule.
    model.train_step = functools.partial(_ddp_train_step, model, ddp)
    return model


def _ddp_train_step(self, ddp, data):
    """Keras' torch `train_step` with the forward through `ddp` (which wraps `self`)."""
    return train_step(self, data, forward=ddp)


class GlobalEpochLogs(keras.callbacks.Callback):
    """Replace each process's epoch training metrics (loss, acc: means over its slice of
    every global batch) by their mean over the processes, i.e. the metrics of the global
    batches, so `history.csv` and the NaN check see what one device would log. Put it first.
    Validation metrics are left alone: every process evaluates the whole validation set."""

    def on_epoch_end(self, epoch, logs=None):
        import torch
        import torch.distributed as dist

        keys = sorted(k for k, v in (logs or {}).items()
                      if not k.startswith("val_") and isinstance(v, (int, float)))
        if not keys:
            return
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(values)
        for key, value in zip(keys, (values / dist.get_world_size()).tolist()):
            logs[key] = value
