"""Reference solutions for notebook 09 (the real weights). Checked by grok_mini.teach.exercises.real_weights."""

import numpy as np


def layer_order(num_layers):
    # The official loader sorts module paths as strings: "decoder_layer_10" < "decoder_layer_2".
    return sorted(range(num_layers), key=lambda layer: f"decoder_layer_{layer}")


def dequantize_blocks(weight, scales):
    rows_per_block = weight.shape[0] // scales.shape[0]
    per_row = np.repeat(np.asarray(scales, np.float32), rows_per_block, axis=0)  # [in, out]: row r uses block r // rows
    return weight.astype(np.float32) * per_row
