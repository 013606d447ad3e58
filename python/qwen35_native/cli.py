"""The ``qwen35`` command. Subcommands are registered by the modules that implement them (see ``_COMMANDS``)."""

from __future__ import annotations

import argparse
import sys


def _self_check(args: argparse.Namespace) -> int:
    """Runs every kernel family on every available backend against its reference (``self_check.py``)."""
    import qwen35_native as q35
    from qwen35_native.self_check import run_self_check

    info = q35.build_info()
    print(f"qwen35_native {info['version']}: CUDA kernels {'built' if info['with_cuda_kernels'] else 'not built'}, "
          f"emulator {'built' if info['with_emulator'] else 'not built'}, torch {info['torch']}, "
          f"CUDA device {'available' if info['cuda_available'] else 'not available'}")
    devices = (["cpu"] if info["with_emulator"] else []) + \
        (["cuda"] if info["cuda_available"] and info["with_cuda_kernels"] else [])
    if not devices:
        print("no backend to check: this build has neither the emulator nor CUDA kernels for an available device")
        return 1
    return 0 if run_self_check(devices, print_fn=lambda line: print(line, flush=True)) else 1


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="qwen35", description="Qwen3.5 on hand-written CUDA kernels.")
    parser.add_argument("--version", action="version", version=f"qwen35_native {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("self-check", help="run the kernels against their references on this machine")
    p.set_defaults(func=_self_check)
    from .cli_generate import add_generation_parsers
    from .cli_serve import add_serve_parser
    from .tiny import add_make_tiny_parser

    add_generation_parsers(sub)
    add_serve_parser(sub)
    add_make_tiny_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
