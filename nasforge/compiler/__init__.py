"""DSL graphs -> torch modules."""
from nasforge.compiler.cell_module import CompiledGraph, NasNetCell, set_relu_sharing
from nasforge.compiler.chain import ChainNetwork
from nasforge.compiler.network import Network, NetworkConfig, schedule

__all__ = ["ChainNetwork", "CompiledGraph", "NasNetCell", "Network", "NetworkConfig", "schedule",
           "set_relu_sharing"]
