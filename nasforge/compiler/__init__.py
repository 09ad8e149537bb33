"""DSL graphs -> torch modules."""
from nasforge.compiler.cell_module import CompiledGraph, NasNetCell, set_relu_sharing
from nasforge.compiler.chain import ChainNetwork
from nasforge.compiler.network import (Network, NetworkConfig, buffers_restored, schedule,
                                       set_cell_recompute)

__all__ = ["ChainNetwork", "CompiledGraph", "NasNetCell", "Network", "NetworkConfig",
           "buffers_restored", "schedule", "set_cell_recompute", "set_relu_sharing"]
