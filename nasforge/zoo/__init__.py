"""Named architectures. Importing this package registers every entry: each module of this
package (other than the registry and the cell data) registers its own models."""
import importlib as _importlib
import pkgutil as _pkgutil

from nasforge.zoo.registry import (CHAIN_SETTINGS, NB201_SETTINGS, SETTINGS, ZOO, ChainConfig,
                                   ZooEntry, get_entry, register_model, setting_names)

for _module in ["nas_cells"] + sorted(m.name for m in _pkgutil.iter_modules(__path__)
                                      if m.name not in ("nas_cells", "registry", "cells")):
    _importlib.import_module(f"{__name__}.{_module}")

__all__ = ["ZOO", "SETTINGS", "CHAIN_SETTINGS", "NB201_SETTINGS", "ChainConfig", "ZooEntry",
           "get_entry", "register_model", "setting_names"]
