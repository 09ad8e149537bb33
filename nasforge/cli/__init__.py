"""The ``nasforge`` command line. Each subcommand lives in its own module and registers itself
in COMMANDS; the CLI owns printing, progress and exit codes (0 ok, 2 bad input, 1 failure)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import import_module

from nasforge.errors import NasforgeError

# subcommand name -> module (imported lazily so `nasforge --help` stays fast)
COMMANDS: dict[str, str] = {
    "info": "nasforge.cli.info",
    "zoo": "nasforge.cli.zoo",
    "bench": "nasforge.cli.bench",
    "train": "nasforge.cli.train",
    "export": "nasforge.cli.export",
    "search": "nasforge.cli.search",
    "compare": "nasforge.cli.compare",
    "transfer": "nasforge.cli.transfer",
    "latency": "nasforge.cli.latency",
}


class UsageError(NasforgeError):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage + error
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nasforge", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in COMMANDS.items():
        import_module(module).register(sub)
    return parser


def flags(options: tuple[str, ...]) -> str:
    """The CLI spelling of library parameters: argparse's dest rule read backwards."""
    return ", ".join("--" + option.replace("_", "-") for option in options)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        if not getattr(args, "run", None):
            parser.print_help()
            return 2
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("nasforge: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the CLI never shows a traceback unless asked to
        if os.environ.get("NASFORGE_DEBUG"):
            raise
        if isinstance(e, (NasforgeError, FileNotFoundError)):
            options = getattr(e, "options", ())
            print(f"nasforge: error: {e}" + (f" ({flags(options)})" if options else ""),
                  file=sys.stderr)
            return 2
        print(f"nasforge: internal error: {type(e).__name__}: {e} "
              "(set NASFORGE_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
