"""The ``nasforge`` command line. Each subcommand lives in its own module and registers itself
in COMMANDS; the CLI owns printing, progress and exit codes (0 ok, 2 bad input, 1 failure)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import import_module

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


class UsageError(Exception):
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


def _input_errors() -> tuple[type[BaseException], ...]:
    from nasforge.api import ArchitectureError
    from nasforge.cluster import ClusterError
    from nasforge.data import DataError
    from nasforge.dsl import CellError
    from nasforge.oneshot import SupernetError
    from nasforge.safe_load import RefusedFileError
    from nasforge.search import SearchError

    return (UsageError, ArchitectureError, CellError, DataError, SearchError, ClusterError,
            RefusedFileError, SupernetError,
            FileNotFoundError)


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
        if isinstance(e, _input_errors()):
            print(f"nasforge: error: {e}", file=sys.stderr)
            return 2
        print(f"nasforge: internal error: {type(e).__name__}: {e} "
              "(set NASFORGE_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
