"""Keras callback: every `prun_int` epochs re-quantize and adjust precision (BSQ).

At the start of epoch 0, prun_int, 2*prun_int, ... (as in BSQ's `cifar_prune_STE.py`) and
at the end of training, every BSQ layer (`BitPlanes`) is re-quantized (planes rounded to exact
binary, carries propagated; a layer whose values overflow its n bits gains one bit while
n < 8 unless `precision_increase=False`) and all-zero MSB / LSB planes are dropped; the optimizer's
slot variables (momentum) are then zeroed, as BSQ re-creates its optimizer.

With `epochs` (the run's total), the final step runs at the end of the last epoch instead of
in `on_train_end`: the training engine calls `fit` once per epoch, and every step depends only
on the epoch number, so a run resumed from any epoch's checkpoint takes the same steps as an
uninterrupted one. Put the callback before the checkpoint writer: the last checkpoint is then
the re-quantized model. Each epoch's logs get `avg_bits` (TensorBoard / history.csv).

Example:

>>> cb = BSQCallback(prun_int=50, epochs=350)
>>> cb.prun_int, cb.epochs
(50, 350)
"""

import keras

from quadkeras.bsq.convert import requantize_model
from quadkeras.bsq.report import average_bits
from quadkeras.utils.validation import check_positive_int


def reset_optimizer_slots(optimizer):
    """Zero the optimizer's per-variable state (keeps the iteration count and LR)."""
    if optimizer is None or not getattr(optimizer, "built", False):
        return
    keep = {id(optimizer.iterations)}
    lr = getattr(optimizer, "_learning_rate", None)
    if isinstance(lr, keras.Variable):
        keep.add(id(lr))
    for v in optimizer.variables:
        if id(v) not in keep:
            v.assign(keras.ops.zeros(v.shape, v.dtype))


class BSQCallback(keras.callbacks.Callback):
    """Re-quantization and precision adjustment every `prun_int` epochs.

    Args:
        prun_int: epochs between adjustments (BSQ's `--Prun_Int`, 50 in the paper).
        adjust: drop all-zero planes (False: only re-quantize).
        precision_increase: overflow adds one bit (n < 8, BSQ's default); False clips.
        verbose: print the scheme after each adjustment.
        epochs: total epochs of the run: final step after epoch `epochs - 1` (None: at
            `on_train_end`, for a single `fit` call).
    """

    def __init__(self, prun_int=50, adjust=True, precision_increase=True, verbose=0, epochs=None):
        super().__init__()
        self.prun_int = check_positive_int("prun_int", prun_int)
        self.epochs = None if epochs is None else check_positive_int("epochs", epochs)
        self.adjust = bool(adjust)
        self.precision_increase = bool(precision_increase)
        self.verbose = int(verbose)
        self.history = []

    def _step(self, epoch):
        scheme = requantize_model(self.model, adjust=self.adjust, increase=self.precision_increase)
        reset_optimizer_slots(getattr(self.model, "optimizer", None))
        self.history.append({"epoch": epoch, "scheme": scheme})
        if self.verbose:
            bits = list(scheme.values())
            print(f"BSQ epoch {epoch}: precision per layer {bits}, "
                  f"mean {sum(bits) / max(len(bits), 1):.2f}")

    def on_epoch_begin(self, epoch, logs=None):
        if epoch % self.prun_int == 0:
            self._step(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.epochs is not None and epoch + 1 == self.epochs:
            self._step("end")
        if logs is not None:
            logs["avg_bits"] = average_bits(self.model)

    def on_train_end(self, logs=None):
        if self.epochs is None:
            self._step("end")
