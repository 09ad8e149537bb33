"""``nasforge zoo``: the registered models, one row per model and setting."""
from __future__ import annotations

import json


def register(sub):
    p = sub.add_parser("zoo", help="list the model zoo with params and multiply-adds")
    p.add_argument("--setting", help="only this setting")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(run=run)


def zoo_rows(setting: str | None = None) -> list[dict]:
    from nasforge.api import model_info
    from nasforge.zoo import ZOO

    rows = []
    for name, entry in ZOO.items():
        for s in entry.settings:
            if setting and s != setting:
                continue
            info = model_info(name, s)
            rows.append({"name": name, "family": entry.family, "setting": s,
                         "N@P": f"{info['N']}@{info['penultimate']}" if "N" in info else "-",
                         "params": info["params"], "mult_adds": info["mult_adds"],
                         "input_size": info["input_size"]})
    return rows


def format_table(rows: list[dict]) -> str:
    header = ("name", "family", "setting", "N@P", "params", "mult-adds")
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(f"| {r['name']} | {r['family']} | {r['setting']} ({r['input_size']}px) | "
                     f"{r['N@P']} | {r['params'] / 1e6:.2f}M | {_human(r['mult_adds'])} |")
    return "\n".join(lines)


def _human(n: int) -> str:
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.0f}M"


def run(args) -> int:
    from nasforge.cli import UsageError
    from nasforge.zoo import CHAIN_SETTINGS, SETTINGS

    known = sorted({*SETTINGS, *CHAIN_SETTINGS})
    if args.setting and args.setting not in known:
        raise UsageError(f"zoo: unknown setting {args.setting!r} (expected one of "
                         f"{', '.join(known)})")
    rows = zoo_rows(args.setting)
    print(json.dumps(rows) if args.json else format_table(rows))
    return 0
