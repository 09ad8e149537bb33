"""``nasforge info``: parameters, multiply-adds and output shape of a model, or a space's size."""
from __future__ import annotations

import json
import math

from nasforge.api import model_info
from nasforge.cli import UsageError
from nasforge.cli.options import add_dataset_option
from nasforge.search_spaces import get_space
from nasforge.zoo import setting_names


def add_arguments(p):
    p.add_argument("model", nargs="?", help="zoo name, cell-pair JSON file, NAS-Bench-201 "
                                            "cell string ('|nor_conv_3x3~0|+|...|') or DARTS "
                                            "genotype (\"Genotype(normal=[...], ...)\")")
    p.add_argument("--setting", choices=setting_names(),
                   help="default: the model's first setting (cifar for cell files, nb201 for "
                        "NAS-Bench-201 cells, darts for DARTS genotypes)")
    add_dataset_option(p, "for a NAS-Bench-201 cell, the network's classes and input size")
    p.add_argument("--N", type=int, help="normal cells per stack")
    p.add_argument("--filters", "-F", type=int, help="filters of the first stack (F)")
    p.add_argument("--penultimate", "-P", type=int, help="penultimate filters (P of N@P)")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-size", type=int, help="pixels (default: the setting's)")
    p.add_argument("--space", help="print the size of a search space instead (e.g. nasnet)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.space:
        try:
            space = get_space(args.space)
        except KeyError as e:
            raise UsageError(e.args[0]) from None
        size = space.size()
        info = {"space": args.space, "decisions": len(space.decisions()), "size": size,
                "log10_size": round(math.log10(size), 2)}
        print(json.dumps(info) if args.json else
              f"{args.space}: {info['decisions']} decisions, {size:.3e} architectures "
              f"(10^{info['log10_size']})")
        return 0
    if not args.model:
        raise UsageError("info: give a MODEL (zoo name, cell-pair JSON or NAS-Bench-201 cell "
                         "string) or --space NAME")
    info = model_info(args.model, args.setting, args.dataset, N=args.N, filters=args.filters,
                      penultimate=args.penultimate, num_classes=args.num_classes,
                      input_size=args.input_size)
    if args.json:
        print(json.dumps(info))
    else:
        notation = f", {info['N']}@{info['penultimate']}" if "N" in info else \
            f", {info['dataset']}" if "dataset" in info else ""
        print(f"{info['model']} ({info['setting']}{notation})\n"
              f"  params      {info['params']:,}\n"
              f"  mult-adds   {info['mult_adds']:,} at {info['input_size']}x"
              f"{info['input_size']}\n"
              f"  output      {tuple(info['output_shape'])}"
              + (f"\n  output stride {info['output_stride']}" if "output_stride" in info
                 else "")
              + (f"\n  arch_index  {info['arch_index']} (NAS-Bench-201)\n"
                 f"  12 epochs   {info['hp12_valid']:.2f}% val, {info['hp12_test']:.2f}% test "
                 f"on {info['dataset']} (NAS-Bench-201's table)" if "arch_index" in info
                 else ""))
    return 0
