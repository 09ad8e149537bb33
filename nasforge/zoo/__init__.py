"""Named architectures. Importing this package registers every entry."""
from nasforge.zoo import nas_cells  # noqa: F401  (registration side effects)
from nasforge.zoo.registry import SETTINGS, ZOO, ZooEntry, get_entry, register_model

__all__ = ["ZOO", "SETTINGS", "ZooEntry", "get_entry", "register_model"]
