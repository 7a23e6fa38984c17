"""Command line: ``python -m sdlearn {generate,train,info} ...`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import sdlearn.train


def _trainers() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(sdlearn.train.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m sdlearn",
        description="sdlearn: Stable Diffusion built from scratch. Generate images with the bundled "
                    "tiny model, train its parts, or show what is installed.")
    sub = parser.add_subparsers(dest="command", metavar="{generate,train,info}")
    sub.add_parser("info", help="device, versions and the bundled model")
    tr = sub.add_parser("train", help="train a part of the tiny model (train WHAT --help for options)",
                        add_help=False)
    tr.add_argument("what", nargs="?", choices=_trainers(), help="what to train")
    sub.add_parser("generate", help="text to image (generate --help for options)", add_help=False)
    if not argv:
        parser.print_help()
        return
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        if args.what is None:
            tr.print_help()
            return
        importlib.import_module(f"sdlearn.train.{args.what}").main(rest)
    elif args.command == "generate":
        from sdlearn.cli import generate

        generate(rest)
    elif args.command == "info":
        from sdlearn.cli import info

        info()


if __name__ == "__main__":
    main()
