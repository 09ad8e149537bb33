"""NAS-Bench-201's network in the DSL against the published figures of the 200-epoch sample.

    python benchmarks/bench_nas_bench_201.py [--per-dataset K] [--json]

For every cell of ``nasforge.tables.load_sample(dataset)`` (or the first K of each data set)
it builds the DSL network (``search_spaces.nas_bench_201.network``), counts its parameters
(``nasforge.flops.count_params``) and multiply-adds (``count_mult_adds``: torch's FLOP counter /
2, convolutions and linear layers only), and reports: cells whose parameters differ from
``params_M`` at its 6 decimals; the largest difference ``flops_M`` - multiply-adds (absolute
and relative); and what remains of ``flops_M`` once multiply-adds and the extras of
NAS-Bench-201's counter in the cells (9 per output element of each 3x3 average pool, 3 per
output element of each ReLU-conv-BN edge) are taken off (one value per data set when the
decomposition holds). Also the unique-architecture counts over the 12-epoch table (nasforge's
canonical hash). Times in seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nasforge.compiler import ChainNetwork  # noqa: E402
from nasforge.flops import count_mult_adds, count_params  # noqa: E402
from nasforge.search_spaces.nas_bench_201 import (  # noqa: E402
    CELLS_PER_STAGE, DATASETS, NUM_STAGES, STEM_CHANNELS, cell_graph, network, parse_cell)
from nasforge.tables import load_sample, load_table  # noqa: E402

POOL_PER_ELEMENT = 9  # NAS-Bench-201's counter: kernel^2 per output element of a 3x3 pool
CONV_EDGE_PER_ELEMENT = 3  # read off the sample: per output element of a ReLU-conv-BN edge


def cell_extras(ops, dataset: str) -> int:
    size = DATASETS[dataset].input_size
    elements = sum(CELLS_PER_STAGE * STEM_CHANNELS * 2 ** k * (size // 2 ** k) ** 2
                   for k in range(NUM_STAGES))
    convs = sum(op in ("nor_conv_1x1", "nor_conv_3x3") for op in ops)
    return elements * (POOL_PER_ELEMENT * ops.count("avg_pool_3x3") + CONV_EDGE_PER_ELEMENT * convs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-dataset", type=int, help="first K cells of each data set")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    report = {"cells": 0, "params_mismatches": [], "largest_flops_difference_M": None,
              "largest_relative_flops_difference": 0.0, "flops_rest_M": {}}
    worst = 0.0
    for dataset in DATASETS:
        rows = list(load_sample(dataset))[:args.per_dataset]
        rest = set()
        for row in rows:
            cell = parse_cell(row["cell"])
            model = ChainNetwork(network(cell, dataset))
            params = count_params(model)
            mult_adds = count_mult_adds(model, DATASETS[dataset].input_size)[0]
            if round(params / 1e6, 6) != row["params_M"]:
                report["params_mismatches"].append((dataset, row["cell"], row["params_M"],
                                                    params / 1e6))
            difference = row["flops_M"] - mult_adds / 1e6
            if abs(difference) > abs(worst):
                worst = difference
                report["largest_flops_difference_M"] = {
                    "dataset": dataset, "cell": row["cell"], "flops_M": row["flops_M"],
                    "mult_adds_M": mult_adds / 1e6, "difference_M": round(difference, 6)}
            report["largest_relative_flops_difference"] = max(
                report["largest_relative_flops_difference"], abs(difference) / row["flops_M"])
            rest.add(round(row["flops_M"] - (mult_adds + cell_extras(cell.ops, dataset)) / 1e6,
                           6))
            report["cells"] += 1
        report["flops_rest_M"][dataset] = sorted(rest)
    report["network_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    report["unique_cells"] = len({cell_graph(parse_cell(r["cell"])).canonical_hash()
                                  for r in load_table()})
    report["hash_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0 if not report["params_mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())
