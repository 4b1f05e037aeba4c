"""Public names of a package that load their module on first access (PEP 562).

A package keeps `import <package>` light by naming, for each public name, the submodule that
defines it; the module is imported the first time the name is read.

Example:

>>> getattr_, dir_ = lazy_names("json", {"JSONDecoder": "decoder"})
>>> getattr_("JSONDecoder").__name__
'JSONDecoder'
>>> "JSONDecoder" in dir_()
True
"""

import importlib
import sys


def lazy_names(package, sources):
    """`(__getattr__, __dir__)` for `package` whose public names come from `sources`
    (name -> submodule). A loaded name is cached in the package's globals."""

    def __getattr__(name):
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{sources[name]}"), name)
        module = sys.modules.get(package)
        if module is not None:
            setattr(module, name, value)
        return value

    def __dir__():
        module = sys.modules.get(package)
        return sorted(set(vars(module) if module is not None else ()) | set(sources))

    return __getattr__, __dir__
