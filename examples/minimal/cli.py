"""The command line of the minimal scripts: counts, learning rate, seed and output folder,
each checked before any work (a bad value exits with status 2 and a message naming it)."""
import argparse
from pathlib import Path

from examples.common.cli_checks import prepare_output_folder, require_positive

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "outputs" / "minimal"


def parse_args(doc, counts, argv=None):
    """``(args, out)``: `counts` maps each positive-integer flag (``n_train``) to its default;
    ``--lr`` (>= 0), ``--seed`` and ``--out`` (created, checked writable) come with every script."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in counts.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=default, help=f"default {default}")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's initial learning rate (cosine decay to 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the figure (default outputs/minimal)")
    args = parser.parse_args(argv)
    require_positive(parser, args, *counts)
    if not args.lr >= 0:
        parser.error(f"--lr must be >= 0, got {args.lr}")
    return args, prepare_output_folder(parser, args.out)
