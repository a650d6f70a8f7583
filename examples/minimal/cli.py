"""The command line of the minimal scripts: counts, learning rate, seed and output folder,
each checked before any work (a bad value exits with status 2 and a message naming it)."""
import argparse
from pathlib import Path

from examples.common.cli_checks import (prepare_output_folder, require_batches_fit, require_non_negative,
                                        require_positive, require_positive_number)

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "outputs" / "minimal"


def parse_args(doc, counts, argv=None):
    """``(args, out)``: `counts` maps each positive-integer flag (``n_train``) to its default;
    ``--lr`` (a positive finite number), ``--seed`` (>= 0) and ``--out`` (created, checked writable)
    come with every script; the batch must fit in the training points, as in rings.py."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in counts.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=default, help=f"default {default}")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's initial learning rate (cosine decay to 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the figure (default outputs/minimal)")
    args = parser.parse_args(argv)
    require_positive(parser, args, *counts)
    require_positive_number(parser, args, "lr")
    require_non_negative(parser, args, "seed")
    if "batch_size" in counts and "n_train" in counts:
        require_batches_fit(parser, args.n_train, {"batch size": args.batch_size}, "--n-train")
    return args, prepare_output_folder(parser, args.out, ["fm_samples.png", "nf_samples.png"])
