"""Notebook 09 (the real weights): the release's file order, and int8 weights with block scales."""

from __future__ import annotations

import numpy as np

from grok_mini.checkpoint import release_layout
from grok_mini.quant import dequantize, quantize
from grok_mini.teach.exercises import ExerciseFailed, call, check_prediction, expect_close, expect_equal, run_check

__all__ = ["check_first_misordered", "check_layer_order", "check_dequantize_blocks"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "layer_order": (
        "The files follow the order of the parameter tree, and that tree is sorted by module name.",
        "Module names are strings, and strings sort character by character.",
        "Sort the layer numbers by their module names as strings, not by the numbers.",
    ),
    "dequantize_blocks": (
        "Each block of consecutive input rows shares one row of scales.",
        "The blocks are contiguous: the first in/blocks rows use scale row 0, the next ones row 1; they "
        "do not cycle.",
        "Convert to float32 before multiplying (an int8 product overflows) and return float32.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"layer_order": (release_layout,), "dequantize_blocks": (dequantize,)}


def _official_order(num_layers: int) -> list[int]:
    """Layers in the order their files appear: module paths 'decoder_layer_N' sorted as strings."""
    return sorted(range(num_layers), key=lambda layer: f"decoder_layer_{layer}")


def check_layer_order(layer_order) -> bool:
    """layer_order(num_layers) → the decoder layers in the order the release stores their files."""

    def check():
        for num_layers in (4, 12, 64, 105):
            got = call(layer_order, num_layers)
            try:
                got = [int(layer) for layer in got]
            except (TypeError, ValueError):
                raise ExerciseFailed(f"layer_order({num_layers}) should return a list of layer numbers, "
                                     f"got {got!r}") from None
            expected = _official_order(num_layers)
            mistakes = [
                (list(range(num_layers)), "that is numeric order; the release sorts module *names* as strings, "
                                          "so 'decoder_layer_10' comes before 'decoder_layer_2'."),
                (sorted(range(num_layers), key=str, reverse=True), "ascending string order: not descending, "
                                                                   "and not the numbers reversed."),
                (list(range(num_layers))[::-1], "ascending string order: not descending, and not the numbers "
                                                "reversed."),
            ]
            expect_equal(got, expected, what=f"layer_order({num_layers})", mistakes=mistakes)
        return "4, 12, 64 (Grok-1) and 105 layers: 0, 1, 10, 11, …, 19, 2, 20, …"

    return run_check("layer_order", check, answer=layer_order, hints=HINTS["layer_order"], refuse=REFUSE["layer_order"])


def check_dequantize_blocks(dequantize_blocks) -> bool:
    """dequantize_blocks(weight int8 [in, out], scales [blocks, out]) → float32 [in, out], as quant.dequantize."""
    rng = np.random.default_rng(11)

    def check():
        for size_in, size_out, blocks in ((16, 6, 1), (16, 6, 8), (24, 5, 4)):
            # rows of very different size per block, so that mixing up the blocks shows
            spread = np.repeat(np.geomspace(0.01, 10, blocks), size_in // blocks)[:, None]  # [in, 1]
            w = rng.standard_normal((size_in, size_out)) * spread
            q = quantize(w.astype(np.float32), blocks)
            scales = np.asarray(q.scales, np.float32)
            got = call(dequantize_blocks, np.asarray(q.weight), scales)
            expected = dequantize(q.weight, q.scales, np.float32)
            rows = size_in // blocks
            interleaved = q.weight.astype(np.float32) * scales[np.arange(size_in) % blocks]
            mistakes = [
                (q.weight.astype(np.float32) * scales[0],
                 "each block of in/blocks consecutive input rows has its own scale row: "
                 "scales[row // rows_per_block], not scales[0]."),
                (interleaved, "blocks are contiguous: rows 0 … in/blocks − 1 form block 0 (row // rows_per_block, "
                              "not row % blocks)."),
                (q.weight.astype(np.float32) * scales.mean(0), "do not average the block scales: each block keeps "
                                                               "its own."),
                (q.weight.astype(np.float32) / np.repeat(scales, rows, axis=0), "multiply by the scale (w ≈ int8 × "
                                                                                "scale), do not divide."),
            ]
            expect_close(got, expected, what=f"dequantize_blocks(weight [{size_in}, {size_out}], scales "
                         f"[{blocks}, {size_out}])", rtol=1e-6, atol=1e-7, mistakes=mistakes)
        return "1, 4 and 8 blocks, equal to quant.dequantize"

    return run_check("dequantize_blocks", check, answer=dequantize_blocks,
                     hints=HINTS["dequantize_blocks"], refuse=REFUSE["dequantize_blocks"])


def check_first_misordered(layers) -> bool:
    """Exercise 3 (predict): the fewest layers for which the release's file order differs from numeric order."""
    truth = next(n for n in range(1, 1000) if sorted(range(n), key=lambda i: f"decoder_layer_{i}") != list(range(n)))
    return check_prediction(
        "first_misordered", layers, truth, tolerance=0, variable="layers",
        why="layer 10 is the first two-digit name, and 'decoder_layer_10' sorts before 'decoder_layer_2'; so a loader "
            "tested on a model of 10 layers or fewer can never see the bug (the conformance fixture has 4)",
        mistakes=[(truth - 1, "with that many layers every name has one digit, and one-digit names sort like numbers"),
                  (20, "the first two-digit name already sorts before 'decoder_layer_2'"),
                  (64, "Grok-1 shows it, but much smaller models already do")],
        hints=("Strings sort character by character: where does the first name with two digits go?",
               "Which is the first layer number with two digits, and which names does it sort before?",
               "Count the layers of the smallest model that has that layer."))
