"""Convert UniNeXt weights between the notebook's ``.pdparams`` and ``.safetensors``.

    python -m uninext_paddle.convert work/model/best_model.pdparams              # -> best_model.safetensors
    python -m uninext_paddle.convert work/model/last.pdckpt work/model/resumed.safetensors
    python -m uninext_paddle.convert shared.safetensors shared.pdparams

The source is a weights file of either format or a training state (its model), read as every path of the
project reads it (``safe_load.py``: nothing in it runs; a file that needs more is refused) and checked to be the
weights of a UniNeXt variant. The destination's suffix picks the format; the class names beside the source
(``.classes.json``) are written beside the destination too. A ``.safetensors`` file holds arrays only, so it can
be shared and loaded anywhere without trusting its sender.
"""
from __future__ import annotations

import argparse
import os

from .checkpoint import (WEIGHTS_FORMATS, check_state_dict, infer_variant, load_class_names, model_state_of,
                         save_weights)
from .cli import ArgumentParser, fail, run_cli
from .model import create_model
from .safe_load import SAFETENSORS_SUFFIX, load_weights_file

__all__ = ["convert"]


def convert(source: str, destination: str) -> str:
    """Write the UniNeXt weights in ``source`` to ``destination`` in the format of its suffix; returns the variant.
    ``CheckpointError`` for a source that is refused, unreadable or not UniNeXt weights."""
    state = model_state_of(load_weights_file(source), source)
    variant, num_classes = infer_variant(state, source)
    check_state_dict(create_model(variant, num_classes=num_classes), state, source, variant)
    save_weights(state, destination, load_class_names(source, num_classes))
    return variant


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="\n".join(__doc__.splitlines()[1:5]))
    parser.add_argument("source", help="a .pdparams or .safetensors weights file, or a training state")
    parser.add_argument("destination", nargs="?", default=None,
                        help="the file to write (.pdparams or .safetensors); default: the source as .safetensors")
    args = parser.parse_args(argv)
    destination = args.destination or os.path.splitext(args.source)[0] + SAFETENSORS_SUFFIX
    if not destination.endswith(tuple(WEIGHTS_FORMATS.values())):
        fail(f"{destination}: the destination must end in {' or '.join(WEIGHTS_FORMATS.values())}")
    if os.path.abspath(destination) == os.path.abspath(args.source):
        fail(f"{destination} is the source itself: give another destination")
    variant = convert(args.source, destination)
    print(f"wrote {destination} (UniNeXt-{variant})")


if __name__ == "__main__":
    run_cli(main)
