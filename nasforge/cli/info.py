"""``nasforge info``: parameters, multiply-adds and output shape of a model, or a space's size."""
from __future__ import annotations

import json
import math

from nasforge.api import model_info
from nasforge.cli import UsageError
from nasforge.search_spaces import get_space
from nasforge.zoo import CHAIN_SETTINGS, SETTINGS


def add_arguments(p):
    p.add_argument("model", nargs="?", help="zoo name or cell-pair JSON file")
    p.add_argument("--setting", choices=sorted({*SETTINGS, *CHAIN_SETTINGS}),
                   help="default: the model's first setting (cifar for cell files)")
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
        raise UsageError("info: give a MODEL (zoo name or cell-pair JSON) or --space NAME")
    info = model_info(args.model, args.setting, N=args.N, filters=args.filters,
                      penultimate=args.penultimate, num_classes=args.num_classes,
                      input_size=args.input_size)
    if args.json:
        print(json.dumps(info))
    else:
        notation = f", {info['N']}@{info['penultimate']}" if "N" in info else ""
        print(f"{info['model']} ({info['setting']}{notation})\n"
              f"  params      {info['params']:,}\n"
              f"  mult-adds   {info['mult_adds']:,} at {info['input_size']}x"
              f"{info['input_size']}\n"
              f"  output      {tuple(info['output_shape'])}"
              + (f"\n  output stride {info['output_stride']}" if "output_stride" in info
                 else ""))
    return 0
