"""A package's names imported on first use (PEP 562's module ``__getattr__``): importing the package costs nothing
until a name is touched, so ``msb volume ls`` never loads the sandbox machinery, nor the VMM process the clients."""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def lazy_names(module: str, homes: Mapping[str, str], made: Mapping[str, Callable[[], object]] | None = None,
               ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``module``: a name of ``homes`` is imported from the module it maps to,
    one of ``made`` is what its function returns; either is kept in the module's globals, found directly next time.
    ``__dir__`` lists the globals and ``__all__``."""
    namespace = vars(sys.modules[module])

    def __getattr__(name: str) -> object:
        if name in homes:
            value = getattr(importlib.import_module(homes[name]), name)
        elif made is not None and name in made:
            value = made[name]()
        else:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
