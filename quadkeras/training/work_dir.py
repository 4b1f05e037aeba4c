"""A training run's folder: read it (`Run`) and claim it (lock, fresh-or-resume checks, run marker).

`Run(work_dir)` (or `Run.of(path)` for a work_dir or a `.keras` file inside one) owns the
folder's layout for every app: `state.json` (parsed once), the run's training `config`, the
dataset it trained on, its model file (`best.keras`, else `last.keras`: `find_model_file`) and
the model config training built from (`run.model_config(...)`).

`open_run(config)` is called by `train()` before anything else is written. It takes the
folder's `RunLock` (a second run on the same work_dir fails at once), removes the `.tmp-*`
files a killed run left, then:

* fresh run: refuses a folder holding any run file (`state.json`, `best.keras`, ...), even one
  without `state.json`, and writes `state.json` (epoch 0, config) FIRST, so no checkpoint can
  ever exist in a folder without the marker of the run it belongs to;
* resume: compares the config with `state.json` (one-line error naming the keys, nothing
  written); a run killed before its first `last.keras` (state epoch 0) starts over.

A fresh run that fails before its first checkpoint (bad model file, oversized batch, NaN in
epoch 1, ...) removes what it wrote, down to the folders it created: a bad input leaves
nothing behind.

Example:

>>> import tempfile
>>> from quadkeras.training.config import resolve_config
>>> cfg = resolve_config({"dataset": "digits", "work_dir": tempfile.mkdtemp()})
>>> run = open_run(cfg)
>>> sorted(os.listdir(run.work_dir)), run.resumed
(['.lock', 'state.json'], False)
>>> run.close()
>>> Run.of(cfg["work_dir"]).config["dataset"]
'digits'
"""

import os
import shutil
import time

from quadkeras.training import checkpoint
from quadkeras.training.config import DEFAULTS, comparable_view, resume_view
from quadkeras.training.config import model_config as training_model_config
from quadkeras.training.lock import RunLock
from quadkeras.utils.safe_io import clean_temp_files

# Files a run that never finished its first epoch may leave besides state.json.
_FIRST_EPOCH_FILES = (checkpoint.BEST, checkpoint.BEST_META, checkpoint.HISTORY)
# The model a finished (or running) work_dir offers, in order of preference.
MODEL_FILES = (checkpoint.BEST, checkpoint.LAST)


def find_model_file(work_dir, flag="model"):
    """`work_dir`'s `best.keras`, else its `last.keras`; a one-line error naming `flag` if neither."""
    for name in MODEL_FILES:
        path = os.path.join(work_dir, name)
        if os.path.isfile(path):
            return path
    raise ValueError(f"Invalid {flag}={os.fspath(work_dir)!r}: work_dir has none of "
                     f"{', '.join(MODEL_FILES)}; train first or pass a .keras file.")


class Run:
    """A training run's folder, read side: files, `state`, `config`, `dataset`, model file/config."""

    def __init__(self, work_dir):
        self.work_dir = os.path.abspath(os.fspath(work_dir))
        self._state = None

    @classmethod
    def of(cls, source):
        """The run that wrote `source` (a work_dir, or a `.keras` file in one), else None."""
        if not isinstance(source, (str, os.PathLike)):
            return None
        source = os.fspath(source)
        if os.path.isdir(source):
            folder = source
        elif source.endswith(".keras"):
            folder = os.path.dirname(os.path.abspath(source))
        else:
            return None
        run = cls(folder)
        return run if os.path.isfile(run.path(checkpoint.STATE)) else None

    def path(self, name):
        return os.path.join(self.work_dir, name)

    @property
    def state(self):
        """`state.json`, read once."""
        if self._state is None:
            self._state = checkpoint.read_json(self.path(checkpoint.STATE))
        return self._state

    @property
    def config(self):
        """The run's training config: DEFAULTS for keys it did not save, `work_dir` set."""
        return {**DEFAULTS, **self.state.get("config", {}), "work_dir": self.work_dir}

    @property
    def dataset(self):
        return self.state.get("config", {}).get("dataset")

    def model_file(self, flag="model"):
        return find_model_file(self.work_dir, flag)

    def model_config(self, input_shape, num_classes):
        """The model config training built its model from (None for an `init_from` run)."""
        config = self.config
        return None if config["init_from"] else training_model_config(config, input_shape, num_classes)


class OpenRun:
    """A claimed work_dir: `work_dir`, `resumed`, and the lock released by `close()`."""

    def __init__(self, work_dir, lock, resumed, created=None):
        self.work_dir, self.lock, self.resumed = work_dir, lock, resumed
        self.created = created  # the top-most folder this run created, or None

    def close(self, failed=False):
        try:
            if failed and not self.resumed and not os.path.exists(
                    os.path.join(self.work_dir, checkpoint.LAST)):
                self._remove_unstarted_run()
        finally:
            self.lock.release()

    def _remove_unstarted_run(self):
        for name in (checkpoint.STATE, *_FIRST_EPOCH_FILES):
            path = os.path.join(self.work_dir, name)
            if os.path.exists(path):
                os.remove(path)
        shutil.rmtree(os.path.join(self.work_dir, checkpoint.TENSORBOARD), ignore_errors=True)
        if self.created is None:
            return
        if os.listdir(self.work_dir) == [os.path.basename(self.lock.path)]:
            os.remove(self.lock.path)
        folder = self.work_dir
        while os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
            if folder == self.created:
                break
            folder = os.path.dirname(folder)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(failed=exc_type is not None)


def _state_file(work_dir):
    return os.path.join(work_dir, checkpoint.STATE)


def write_marker(work_dir, config):
    """`state.json` of a run that has completed no epoch yet (the run marker)."""
    view = resume_view(config)
    checkpoint.write_json(_state_file(work_dir), {
        "epoch": 0, "best_metric": None, "monitor": "val_acc", "config": view,
        "config_hash": checkpoint.config_hash(view)})


def _epochs_recorded(work_dir):
    """The epochs `state.json` says the run completed, or None (absent or unreadable)."""
    try:
        epoch = checkpoint.read_json(_state_file(work_dir)).get("epoch")
    except (ValueError, AttributeError, OSError):
        return None
    return epoch if isinstance(epoch, int) else None


def _check_fresh(work_dir):
    found = checkpoint.existing_run_files(work_dir)
    if not found:
        return
    start_over = (f"to start over, remove the folder (rm -r {work_dir!r}) or choose another "
                  "--work_dir (nothing was overwritten)")
    if checkpoint.STATE not in found:
        raise ValueError(f"Invalid work_dir={work_dir!r}: it already holds a run ({', '.join(found)}) "
                         f"without its {checkpoint.STATE}, so it cannot be resumed; {start_over}.")
    epochs = _epochs_recorded(work_dir)
    what = ("a run" if epochs is None else "a run stopped before its first epoch finished"
            if epochs == 0 and checkpoint.LAST not in found else f"a run of {epochs} epoch(s)")
    raise ValueError(f"Invalid work_dir={work_dir!r}: it already holds {what} ({', '.join(found)}); "
                     f"to continue it, pass --resume with the same flags; {start_over}.")


def interrupted_run_line(work_dir, epochs):
    """The one line a Ctrl-C of a run on `work_dir` (`epochs` planned) ends with: what the
    work_dir kept and how to continue."""
    work_dir = os.path.abspath(os.fspath(work_dir))
    if not os.path.exists(os.path.join(work_dir, checkpoint.LAST)):
        return (f"training stopped by Ctrl-C before its first epoch finished; nothing was kept in "
                f"{work_dir!r}: run the same command again.")
    done = _epochs_recorded(work_dir)
    kept = f"after epoch {done} of {epochs}" if done is not None else "(last.keras kept)"
    return (f"training stopped by Ctrl-C {kept}; to continue, run the same command with --resume "
            f"(work_dir={work_dir!r}).")


def _check_resume(work_dir, config):
    if not os.path.exists(_state_file(work_dir)):
        raise ValueError(f"Invalid resume=True: no {checkpoint.STATE} in work_dir={work_dir!r}; "
                         "train without --resume first.")
    checkpoint.check_resumable(work_dir, resume_view(config), comparable_view)
    state = checkpoint.read_json(_state_file(work_dir))
    if os.path.exists(os.path.join(work_dir, checkpoint.LAST)):
        return True
    if state.get("epoch"):
        raise ValueError(f"Invalid resume=True: {checkpoint.STATE} in work_dir={work_dir!r} records "
                         f"{state['epoch']} epochs but {checkpoint.LAST} is missing; restore it or "
                         "start a new --work_dir.")
    for name in _FIRST_EPOCH_FILES:  # killed during epoch 1: start that run over
        if os.path.exists(os.path.join(work_dir, name)):
            os.remove(os.path.join(work_dir, name))
    return False


def open_run(config):
    """Claim `config['work_dir']` for training (see module doc); returns an `OpenRun`."""
    work_dir = os.path.abspath(config["work_dir"])
    if config["resume"] and not os.path.isdir(work_dir):
        raise ValueError(f"Invalid resume=True: work_dir={work_dir!r} does not exist; train without "
                         "--resume first.")
    created = _first_missing(work_dir)
    lock = RunLock(work_dir).acquire()
    try:
        if config["resume"]:
            resumed = _check_resume(work_dir, config)
        else:
            _check_fresh(work_dir)
            resumed = False
        clean_temp_files(work_dir)
        if not resumed:
            write_marker(work_dir, config)
    except BaseException:
        OpenRun(work_dir, lock, True).close()
        raise
    return OpenRun(work_dir, lock, resumed, created)


def stage_run_folder(base, resume, first_stage):
    """The folder of a multi-stage app run (quickstart: `<folder>/float`, `<folder>/qat`, ...).

    A new run gets a fresh `<base>/<timestamp>` (nothing earlier is overwritten). With
    `resume` it is the run to continue: `base` itself when `<base>/<first_stage>` holds a
    `state.json`, else the newest `<base>/<timestamp>` whose first stage does; a one-line
    ValueError when there is none.
    """
    base = os.path.abspath(os.fspath(base))
    if not resume:
        return os.path.join(base, time.strftime("%Y%m%d-%H%M%S"))
    if os.path.isfile(os.path.join(base, first_stage, checkpoint.STATE)):
        return base
    runs = sorted(name for name in (os.listdir(base) if os.path.isdir(base) else [])
                  if os.path.isfile(os.path.join(base, name, first_stage, checkpoint.STATE)))
    if not runs:
        raise ValueError(f"Invalid resume=True: work_dir={base!r} holds no earlier run (no "
                         f"<run>/{first_stage}/{checkpoint.STATE}); run without --resume first.")
    return os.path.join(base, runs[-1])


def _first_missing(folder):
    """The top-most ancestor of `folder` (or itself) that does not exist yet, else None."""
    missing = None
    while not os.path.exists(folder):
        missing, folder = folder, os.path.dirname(folder)
    return missing


def trim_history(path, epochs_done):
    """Keep the CSV header and the rows of epochs < epochs_done (a killed run may add one).

    The file keeps the line ending it was written with (Keras' CSVLogger writes `\\r\\n`), so
    a resumed run appends rows with the same ending.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        text = f.read()
    ending = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    kept = lines[:1] + [ln for ln in lines[1:] if ln and _epoch_of(ln) is not None
                        and _epoch_of(ln) < epochs_done]
    with open(path, "w", newline="") as f:
        f.write(ending.join(kept) + (ending if kept else ""))


def _epoch_of(line):
    try:
        return int(line.split(",")[0])
    except ValueError:
        return None  # a row cut by a kill mid-write
