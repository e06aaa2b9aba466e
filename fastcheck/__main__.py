"""Command line: ``fastcheck demo`` (or ``python -m fastcheck demo``)."""

from __future__ import annotations

import argparse
import sys

from fastcheck import _demo


def main(argv: list[str] | None = None) -> int:
    """Run the command line interface; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="fastcheck",
        description="Fast, trustworthy numerical gradient checking.")
    commands = parser.add_subparsers(dest="command", metavar="command")
    demo = commands.add_parser(
        "demo", help="walk through gradient checks on built-in examples")
    demo.add_argument("--quick", action="store_true",
                      help="only the worked example and the demo network")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo.run(quick=args.quick)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
