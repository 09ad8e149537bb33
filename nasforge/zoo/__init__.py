"""Named architectures. Importing this package registers every entry."""
from nasforge.zoo import nas_cells, resnet  # noqa: F401  (registration side effects)
from nasforge.zoo.registry import (CHAIN_SETTINGS, SETTINGS, ZOO, ChainConfig, ZooEntry,
                                   get_entry, register_model)

__all__ = ["ZOO", "SETTINGS", "CHAIN_SETTINGS", "ChainConfig", "ZooEntry", "get_entry", "register_model"]
