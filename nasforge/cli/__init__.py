"""The ``nasforge`` command line. COMMANDS registers each subcommand: the one line that
``nasforge --help`` shows and the module that builds its options (``add_arguments``) and runs
it. That module is imported only when its subcommand is asked for, so ``nasforge --help`` never
imports torch, Ray or Optuna. The CLI owns printing, progress and exit codes (0 ok, 2 bad input,
1 failure)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from importlib import import_module

from nasforge.errors import NasforgeError

DESCRIPTION = ("nasforge: neural architecture search. Describe a network as cells in a graph "
               "language, search for cells (reinforcement learning, evolution, Optuna, or "
               "one-shot DARTS/ENAS/GDAS/SPOS), train and compare them on your data, and export "
               "the result as PyTorch, ONNX or TorchScript.")
EPILOG = "Run 'nasforge COMMAND --help' for a command's options."


@dataclass(frozen=True)
class Command:
    """A subcommand: ``module`` defines ``add_arguments(parser)``, which sets ``run``."""

    module: str  # imported when the subcommand is parsed, not for `nasforge --help`
    help: str  # its line in `nasforge --help`


COMMANDS: dict[str, Command] = {
    "info": Command("nasforge.cli.info", "params, multiply-adds and output shape of a model"),
    "zoo": Command("nasforge.cli.zoo", "list the model zoo with params and multiply-adds"),
    "bench": Command("nasforge.cli.bench", "benchmarks that need no GPU (searchers)"),
    "train": Command("nasforge.cli.train", "train a model with a named recipe"),
    "export": Command("nasforge.cli.export", "write an architecture as json, a drawing, "
                                             "PyTorch source, ONNX or TorchScript"),
    "search": Command("nasforge.cli.search",
                      "search architectures on Ray Tune (one trial per child)"),
    "compare": Command("nasforge.cli.compare",
                       "compare search runs (table + TensorBoard command)"),
    "transfer": Command("nasforge.cli.transfer",
                        "train a found cell on ImageNet-style data next to baselines "
                        "(data-parallel on Ray) and compare"),
    "latency": Command("nasforge.cli.latency",
                       "measured inference latency, or a per-op latency table"),
    "proxies": Command("nasforge.cli.proxies",
                       "zero-cost proxy scores (synflow, NASWOT, ...) of architectures at "
                       "initialization"),
}
GLOBAL_FLAGS = ("-v", "--verbose", "-h", "--help")  # nasforge's own options: none takes a value


class UsageError(NasforgeError):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage + error
        raise UsageError(f"{self.prog}: {message}")


def _command_in(argv: list[str]) -> str | None:
    """The subcommand argv asks for: its first word that is not one of nasforge's own flags."""
    for word in argv:
        if word not in GLOBAL_FLAGS:
            return word if word in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: every subcommand is listed, and only the one argv names (if
    any) imports its module and gets its options."""
    chosen = _command_in(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="nasforge", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        if name == chosen:
            import_module(command.module).add_arguments(p)
    return parser


def flags(options: tuple[str, ...]) -> str:
    """The CLI spelling of library parameters: argparse's dest rule read backwards."""
    return ", ".join("--" + option.replace("_", "-") for option in options)


def error_line(e: BaseException) -> str:
    """The one line the CLI prints for an error: its message and the options it is about."""
    options = getattr(e, "options", ())
    where = f" (option{'s' if len(options) > 1 else ''} {flags(options)})" if options else ""
    return f"nasforge: error: {e}{where}"


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser(argv)
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
            print(error_line(e), file=sys.stderr)
            return 2
        print(f"nasforge: internal error: {type(e).__name__}: {e} "
              "(set NASFORGE_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
