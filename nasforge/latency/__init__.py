"""Latency as a measured objective: measure a model (``measure_latency``) and predict a cell
network's latency from a per-op table timed once per device (``build_table``,
``predict_latency_ms``; ProxylessNAS/FBNet-style lookup tables)."""
from nasforge.latency.measure import (BACKENDS, LatencyError, LatencyResult, device_name,
                                      measure_latency, run_backend)
from nasforge.latency.table import (LatencyTable, LatencyTableError, build_table, calibrate,
                                    latency_metric, load_table, network_parts,
                                    predict_latency_ms)

__all__ = ["BACKENDS", "LatencyError", "LatencyResult", "LatencyTable", "LatencyTableError",
           "build_table", "calibrate", "device_name", "latency_metric", "load_table",
           "measure_latency", "network_parts", "predict_latency_ms", "run_backend"]
