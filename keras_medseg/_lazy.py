"""Lazy re-exports for task subpackages: names load from their submodule on first access,
so importing a subpackage does not import Keras."""
import importlib


def lazy_exports(package, exports, namespace):
    """Return ``(__getattr__, __dir__, __all__)`` for ``package``.

    ``exports`` maps submodule name -> tuple of public names; ``namespace`` is the package's
    ``globals()`` (a loaded name is cached there, so later lookups are plain attributes).
    """
    where = {name: module for module, names in exports.items() for name in names}
    public = sorted(where)

    def __getattr__(name):
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__, public
