"""The command-line apps, one module each, with a `main()` entry point (absl flags).

| console script           | module                       | checkout alias            |
|--------------------------|------------------------------|---------------------------|
| `quadkeras-train`        | `quadkeras.cli.train`        | `python apps/train.py`    |
| `quadkeras-export`       | `quadkeras.cli.export`       | `python apps/export.py`   |
| `quadkeras-convert`      | `quadkeras.cli.convert`      | `python apps/convert.py`  |
| `quadkeras-bsq`          | `quadkeras.cli.bsq`          | `python apps/bsq.py`      |
| `quadkeras-auto-build`   | `quadkeras.cli.auto_build`   | `python apps/auto_build.py` |
| `quadkeras-summary`      | `quadkeras.cli.summary`      | `python apps/summary.py`  |
| `quadkeras-quickstart`   | `quadkeras.cli.quickstart`   | `python apps/quickstart.py` |
| `quadkeras-quadratize`   | `quadkeras.cli.quadratize`   | `python apps/quadratize.py` |

`pip install .` (or the wheel) puts the console scripts on PATH; `python -m quadkeras.cli.<app>`
runs the same `main()`. Every app prints the package version with `--version`. The shared
flags live in `quadkeras.cli.flag_table`, the one-line error contract in `quadkeras.cli.common`.
The flagfiles (`configs/*.cfg`) ship with the wheel under `<prefix>/share/quadkeras/configs`
(`quadkeras.cli.common.configs_dir()`); they name model configs as `configs/models/...`, so run
them from the folder above `configs/` (a checkout's root, or a copy: `cp -r <dir> configs`).

Example:

>>> from quadkeras.cli.common import version_line
>>> version_line("quadkeras-train").split()[0]
'quadkeras-train'
"""
