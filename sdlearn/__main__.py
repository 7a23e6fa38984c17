"""Command line: ``python -m sdlearn {generate,train,info} ...`` (``--help`` on each).

A user error (an unknown command or option, a bad value) prints the usage and one ``error:`` line
to stderr and exits with status 2, as argparse does; no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import sdlearn.train
from sdlearn.cli import MAX_SEED, finite_float, int_in, one_line

COMMANDS = ("generate", "train", "info")


def _trainers() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(sdlearn.train.__path__) if not m.name.startswith("_"))


class _OneLineParser(argparse.ArgumentParser):
    """A parser whose errors are the one ``error:`` line, without a usage (the trainer's usage is the real one)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _check_train_options(what: str, argv: list[str]) -> None:
    """Reject bad values of the options every trainer has (``--seed --steps --batch-size --lr``)
    before the trainer starts; its own parser checks everything else."""
    guard = _OneLineParser(prog=f"python -m sdlearn train {what}", add_help=False, allow_abbrev=False)
    guard.add_argument("--seed", type=int_in(0, MAX_SEED))
    guard.add_argument("--steps", type=int_in(1))
    guard.add_argument("--batch-size", type=int_in(1))
    guard.add_argument("--lr", type=finite_float(0.0, allow_low=False))
    guard.parse_known_args(argv)


def train(what: str, argv: list[str]) -> None:
    """Run ``sdlearn.train.<what>.main(argv)``; its ``ValueError``/``TypeError`` become one error line."""
    _check_train_options(what, argv)
    trainer = importlib.import_module(f"sdlearn.train.{what}")
    try:
        trainer.main(argv)
    except (ValueError, TypeError) as e:
        print(f"python -m sdlearn train {what}: error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    """Parse the command and hand the rest of the line to it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m sdlearn",
        description="sdlearn: Stable Diffusion built from scratch. Generate images with the bundled "
                    "tiny model, train its parts, or show what is installed.")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    info_parser = sub.add_parser("info", help="device, versions and the bundled model", description="Takes no options.")
    tr = sub.add_parser("train", help="train a part of the tiny model (train WHAT --help for options)",
                        add_help=False)
    tr.add_argument("what", nargs="?", choices=_trainers(), help="what to train")
    sub.add_parser("generate", help="text to image (generate --help for options)", add_help=False)
    if not argv:
        parser.print_help()
        return
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.error(f"unrecognized arguments: {' '.join(rest)}; give a command: {', '.join(COMMANDS)}")
    elif args.command == "train":
        if args.what is None:
            if rest and rest[0] not in ("-h", "--help"):
                tr.error(f"unrecognized arguments: {' '.join(rest)}; give what to train first: {', '.join(_trainers())}")
            tr.print_help()
            return
        train(args.what, rest)
    elif args.command == "generate":
        from sdlearn.cli import generate

        generate(rest)
    elif args.command == "info":
        if rest:
            info_parser.error(f"unrecognized arguments: {' '.join(rest)} (info takes no options)")
        from sdlearn.cli import info

        info()


if __name__ == "__main__":
    main()
