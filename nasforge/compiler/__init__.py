"""DSL graphs -> torch modules."""
from nasforge.compiler.cell_module import CompiledCell
from nasforge.compiler.network import Network, NetworkConfig, schedule

__all__ = ["CompiledCell", "Network", "NetworkConfig", "schedule"]
