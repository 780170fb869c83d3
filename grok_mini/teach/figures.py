"""Regenerate every PNG in `figures/` from the plotting code the notebooks call (`grok_mini.teach`).

`grok-mini figures` renders them all; `--only NAME` renders some; `--list` prints the registry and
`--markdown` the README gallery. Each figure is a function registered with `@figure(name, caption)`
that builds its inputs the way its notebook does (same presets, same seeds) and returns a
matplotlib Figure. To add one, append a registered function in the section of its notebook: the
test suite then checks it renders, and that figures/ holds exactly the registered PNGs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

from grok_mini.teach import (
    attention,
    embeddings,
    full_model,
    generation,
    instrument,
    real_weights,
    rope,
    routing,
    scale,
    tokenization,
    training,
)

__all__ = ["FIGURES", "FigureSpec", "figure", "render", "default_out_dir", "gallery_markdown"]


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    name: str  # the file is figures/<name>.png; start with the notebook number
    caption: str  # one line, shown in the README gallery
    build: Callable  # () -> matplotlib Figure


FIGURES: dict[str, FigureSpec] = {}


def figure(name: str, caption: str):
    """Register a figure builder under `name` (a decorator)."""

    def register(build: Callable) -> Callable:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = FigureSpec(name, caption, build)
        return build

    return register


def default_out_dir() -> Path:
    """figures/ of the checkout this package lives in, else ./figures."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout / "figures" if (checkout / "pyproject.toml").exists() else Path("figures")


def render(names: list[str] | None = None, out_dir: str | Path | None = None) -> list[Path]:
    """Render the named figures (all by default) as PNGs into out_dir; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, works without a display
    import matplotlib.pyplot as plt

    names = list(FIGURES) if names is None else names
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    out_dir = default_out_dir() if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        fig = FIGURES[name].build()
        path = out_dir / f"{name}.png"
        fig.savefig(path, metadata={"Software": None})  # no version stamp: regenerating changes nothing
        plt.close(fig)
        written.append(path)
    return written


def gallery_markdown(prefix: str = "figures/") -> str:
    """The README gallery: one image and its caption per registered figure, in registry order."""
    lines = []
    for spec in FIGURES.values():
        lines += [f"**{spec.name}**: {spec.caption}", "", f"![{spec.caption}]({prefix}{spec.name}.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- shared inputs: the notebooks build the same ones --------------------------------------------


@functools.cache
def _toy_model(num_layers: int | None = None):
    """The notebooks' toy Grok: preset 'toy', float32, nnx.Rngs(0), dense MoE (num_layers overrides its depth)."""
    import jax.numpy as jnp
    from flax import nnx

    from grok_mini import Grok, preset

    config = preset("toy")
    if num_layers is not None:
        config = dataclasses.replace(config, num_layers=num_layers)
    # The plain dense MoE, as the notebooks use: same numbers, compiles faster on a CPU.
    return Grok(config, dtype=jnp.float32, rngs=nnx.Rngs(0), dispatch="dense")


# A prompt of 12 ids right-padded with 4 pad tokens (id 0); notebook 04 uses the same.
ATTENTION_TOKENS = [[17, 42, 7, 99, 5, 23, 61, 8, 42, 7, 99, 31, 0, 0, 0, 0]]


# ==== 00 overview and scale =========================================================================


@figure("00_parameter_breakdown", "Where Grok-1's 315.7 B parameters live, and the 83.8 B one token uses.")
def _parameter_breakdown():
    from grok_mini import preset

    return scale.plot_parameter_breakdown(preset("grok-1"))


@figure("00_memory_per_gpu", "Weights plus one 8,192-token KV cache per GPU for 1, 2, 4 and 8 GPUs, "
        "bf16 versus int8, against an 80 GB card.")
def _memory_per_gpu():
    from grok_mini import preset

    return scale.plot_memory_per_gpu(preset("grok-1"))


# ==== 01 tokenization ===============================================================================


@functools.cache
def _toy_tokenizer_and_text():
    """Notebook 01's tokenizer: 2,048 BPE pieces trained on the embedded corpus's training split."""
    from grok_mini.data import embedded_corpus
    from grok_mini.tokenizer import train_tokenizer

    train_text, heldout_text = embedded_corpus().split()
    return train_tokenizer(train_text.splitlines(), 2048), train_text, heldout_text


@figure("01_vocabulary_layout", "The toy tokenizer's 2,048 ids: 4 special, 65 user-defined and 256 byte pieces "
        "fixed by the Grok-1 recipe, then learned merges and single characters.")
def _vocabulary_layout():

    return tokenization.plot_vocabulary_layout(_toy_tokenizer_and_text()[0], name="The toy tokenizer trained here")


TOKENIZED_TEXT = "def area(r):\n    return 3.14159 * r ** 2  # π r² 🧬"  # notebook 01 uses the same


@figure("01_tokenized_text", "A line of code cut into pieces: indentation is one piece, digits are split, "
        "characters without a piece fall back to UTF-8 bytes.")
def _tokenized_text():

    return tokenization.plot_tokenized_text(_toy_tokenizer_and_text()[0], TOKENIZED_TEXT)


@figure("01_compression", "Characters per token on held-out text for BPE vocabularies of 512 to 8,192 pieces.")
def _compression():

    _, train_text, heldout_text = _toy_tokenizer_and_text()
    sizes = (512, 1024, 2048, 4096, 8192)
    ratios = tokenization.compression_by_vocab_size(train_text.splitlines(), heldout_text, sizes)
    return tokenization.plot_compression(sizes, ratios)


# ==== 02 embeddings and RMSNorm =====================================================================


@figure("02_rmsnorm_eps", "RMSNorm maps every vector to RMS 1 unless it is smaller than √eps.")
def _rmsnorm_eps():

    return embeddings.plot_rmsnorm_eps()


SANDWICH_TOKENS = [list(range(5, 37))]  # 32 ids, no padding


@figure("02_sandwich_residual", "Residual-stream RMS per layer of the 4-layer toy Grok: with the post-norms, "
        "scaling the sublayers' output weights ×10 changes nothing.")
def _sandwich_residual():

    curves, expected = embeddings.sandwich_experiment(_toy_model(), SANDWICH_TOKENS)
    return embeddings.plot_sandwich_residual(curves, expected=expected)


# ==== 03 RoPE ========================================================================================


@figure("03_rope_wavelengths", "RoPE's 64 frequency pairs for head size 128: from a turn every 6.3 tokens "
        "to one every 54,000.")
def _rope_wavelengths():

    return rope.plot_rope_wavelengths(128)


@figure("03_rope_rotation", "Three dimension pairs of a unit vector rotated by RoPE at positions 0–47.")
def _rope_rotation():

    return rope.plot_rope_rotation(128)


@figure("03_rope_pairing", "Half-split (Grok-1) versus interleaved RoPE: which dimensions rotate together.")
def _rope_pairing():

    return rope.plot_rope_pairing(8)


@figure("03_rope_relative", "⟨RoPE(q, m), RoPE(k, n)⟩ depends only on n − m: constant along diagonals.")
def _rope_relative():
    import numpy as np


    q, k = np.random.default_rng(0).standard_normal((2, 128))  # notebook 03 uses the same pair
    return rope.plot_rope_relative(rope.rope_scores(q, k, np.arange(48)))


# ==== 04 attention and GQA ===========================================================================


@figure("04_gqa_groups", "Grok-1's 48 query heads in 8 contiguous groups of 6, each reading one K/V head.")
def _gqa_groups():

    return attention.plot_gqa_groups(48, 8)


@figure("04_kv_cache_memory", "KV cache of one sequence: GQA with 8 K/V heads needs 6× less than 48-head MHA.")
def _kv_cache_memory():
    from grok_mini import preset

    return attention.plot_kv_cache_memory(preset("grok-1"))


@figure("04_logit_cap", "The 30·tanh(x/30) attention-logit cap: identity near 0, bounded by ±30.")
def _logit_cap():

    return attention.plot_logit_cap()


@figure("04_masks", "Causal mask, padding mask and their AND for a right-padded prompt.")
def _masks():

    return attention.plot_masks(ATTENTION_TOKENS[0])


@figure("04_attention_patterns", "Attention weights of the random toy Grok's first layer, 4 query heads "
        "sharing 2 K/V heads, on a right-padded prompt.")
def _attention_patterns():

    weights = instrument.record_attention(_toy_model(), ATTENTION_TOKENS)  # [L, B, KV, G, T, S]
    return attention.plot_attention_patterns(weights[0, 0], ATTENTION_TOKENS[0],
                                       title="Random toy Grok, layer 0: each row sums to 1 over the visible keys")


# ==== 05 expert routing =============================================================================


@functools.cache
def _routing_inputs():
    """Notebook 05's inputs: the toy Grok's router logits [L, B, T, E] on 8 × 64 held-out tokens, and their pieces."""
    import numpy as np


    tokenizer, _, heldout_text = _toy_tokenizer_and_text()
    tokens = np.array(tokenizer.encode(heldout_text)[: 8 * 64]).reshape(8, 64)
    pieces = [tokenizer.id_to_piece(t).replace("\n", "\\n") for t in tokens[0]]
    return instrument.record_router_logits(_toy_model(), tokens), pieces


@figure("05_router_probs", "Router probabilities of the untrained toy Grok's first layer: a softmax over all 8 "
        "experts, the top 2 boxed (their gates are used as they are, not renormalised).")
def _router_probs():
    import jax
    import numpy as np


    logits, pieces = _routing_inputs()
    probs = np.asarray(jax.nn.softmax(logits[0, 0, :14], axis=-1))
    return routing.plot_router_probs(probs, np.argsort(-probs, axis=-1)[:, :2], labels=pieces[:14],
                                 title="Layer 0: softmax over all 8 experts; boxes: top-1 (red), top-2 (orange)")


@figure("05_expert_load", "Share of the top-2 assignments per expert and layer of the untrained toy Grok, with "
        "each layer's coefficient of variation and normalised entropy.")
def _expert_load():
    import numpy as np


    logits, _ = _routing_inputs()
    chosen = np.argsort(-logits, axis=-1)[..., :2]
    counts = np.stack([np.bincount(c.reshape(-1), minlength=logits.shape[-1]) for c in chosen])
    return routing.plot_expert_load(counts / counts.sum(-1, keepdims=True),
                                title=f"Untrained toy Grok: expert load on {chosen[0, ..., 0].size} held-out tokens")


@figure("05_balance_sweep", "One expert's logit given a growing head start: the load collapses onto it, CV rises, "
        "entropy falls, the Switch balance loss climbs from 1 towards E/k = 4.")
def _balance_sweep():
    import numpy as np


    logits, _ = _routing_inputs()
    sweep = routing.balance_sweep(logits[0].reshape(-1, logits.shape[-1]).astype(np.float64), favoured=3,
                              strengths=np.linspace(0, 6, 25))
    return routing.plot_balance_sweep(sweep)


# ==== 06 the full model =============================================================================


@figure("06_forward_statistics", "One forward pass of an untrained 8-layer toy Grok: residual-stream RMS, router "
        "and attention entropy per layer, and the log-probability of each actual next token.")
def _forward_statistics():
    import numpy as np


    tokenizer, _, heldout_text = _toy_tokenizer_and_text()
    tokens = np.array(tokenizer.encode(heldout_text)[: 4 * 64]).reshape(4, 64)  # notebook 06 uses the same
    stats = instrument.forward_statistics(_toy_model(num_layers=8), tokens)
    return full_model.plot_forward_statistics(
        stats, title="An untrained 8-layer toy Grok: one forward pass, layer by layer")


# ==== 07 training ===================================================================================


def _training_histories() -> dict:
    """The two stored runs of notebook 07 (made by `grok-mini train`; notebooks/data/07_training/README.md)."""
    import json

    folder = Path(__file__).resolve().parents[2] / "notebooks" / "data" / "07_training"
    return {label: json.loads((folder / run / "history.json").read_text())
            for label, run in (("with the balance loss", "balance"), ("without", "no-balance"))}


@figure("07_training_curves", "Two toy-Grok training runs, with and without the Switch balance loss: the same "
        "cross-entropy, very different balance loss.")
def _training_curves():

    return training.plot_training_curves(_training_histories())


@figure("07_load_evolution", "Expert load during training: without the balance loss the deeper layers settle with "
        "one expert taking 45 % of the assignments.")
def _load_evolution():

    return training.plot_load_evolution(_training_histories())


# ==== 08 generation =================================================================================


@figure("08_cache_fill", "KV-cache slots in use after the prefill of two right-padded prompts and after each "
        "decode step: each row continues from its own length.")
def _cache_fill():
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from grok_mini.generate import Sampler, decode_step, pad_prompts, prefill

    model = _toy_model(num_layers=2)
    tokenizer = _toy_tokenizer_and_text()[0]
    prompts = [tokenizer.encode("The if statement"), tokenizer.encode("Assignment statements are used to")]
    padded, lengths = pad_prompts(prompts, pad_token=model.config.pad_token, vocab_size=model.config.vocab_size)
    graphdef, state = nnx.split(model)  # the one inference path `generate` runs, greedy
    greedy = Sampler.argmax(2)
    token, cache = prefill(graphdef, state, jnp.asarray(padded), jnp.asarray(lengths),
                           model.init_cache(2, int(lengths.max()) + 8), greedy)
    masks = [np.asarray(cache[0].key_mask)]
    for step in range(1, 8):
        token, cache = decode_step(graphdef, state, token, cache, greedy, step)
        masks.append(np.asarray(cache[0].key_mask))
    return generation.plot_cache_fill(np.stack(masks), lengths)


@figure("08_sampling", "Temperature, top-k and the official top-p rule on a real next-token distribution "
        "(what follows 'must' in the training text).")
def _sampling():
    import numpy as np


    tokenizer, train_text, _ = _toy_tokenizer_and_text()
    logits = generation.bigram_logits(np.array(tokenizer.encode(train_text)), tokenizer.processor.piece_to_id("▁must"),
                               tokenizer.vocab_size)
    pieces = [tokenizer.id_to_piece(i).replace("\n", "\\n") for i in range(tokenizer.vocab_size)]
    return generation.plot_sampling(logits, pieces, top_k=5, top_p=0.75,
                                    title="Sampling filters on what follows '▁must'")


# ==== 09 the real weights ===========================================================================

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "grok1-toy-official"


@figure("09_release_order", "The 770 files of the Grok-1 release in file order: module names sort as strings, "
        "so layer 10's files come before layer 2's.")
def _release_order():
    from grok_mini import preset

    return real_weights.plot_release_order(preset("grok-1"))


@figure("09_block_scales", "One int8 matrix of the conformance fixture (an expert's down projection): bfloat16 "
        "scales per block of 22 input rows and output column, and its int8 values.")
def _block_scales():
    from grok_mini import GrokConfig
    from grok_mini.checkpoint import read_tensor, release_layout

    config = GrokConfig.from_json(FIXTURE / "config.json")
    tensor = next(t for t in release_layout(config) if t.path == "transformer/decoder_layer_0/moe/linear_1/w")
    value = read_tensor(FIXTURE / "ckpt-0" / tensor.filename)
    return real_weights.plot_block_scales(value.weight[0], value.scales[0], name="layer 0, expert 0, moe/linear_1")


SHARDED_PARAMS = {  # notebook 09 shows the same four
    "query/w (column parallel)": ("multi_head_attention", "query", "w"),
    "linear/w (row parallel)": ("multi_head_attention", "linear", "w"),
    "experts linear_1/w (expert 0)": ("moe", "experts", "linear_1", "w"),
    "router/w (copied)": ("moe", "router", "w"),
}


@figure("09_sharding", "How four matrices of a layer are split over 8 devices on the model axis (tensor "
        "parallelism, as the release): by columns, by rows, or copied.")
def _sharding():
    from grok_mini import GrokConfig
    from grok_mini.checkpoint import release_layout
    from grok_mini.sharding import partition_spec

    config = GrokConfig.from_json(FIXTURE / "config.json")
    shapes = {t.param: t.shape for t in release_layout(config)}
    axes = {"data": 1, "expert": 1, "model": 8}
    maps = {}
    for title, path in SHARDED_PARAMS.items():
        shape = shapes[("decoder_layers", 0, *path)]
        spec = partition_spec(("decoder_layers", 0, *path), shape, axes)
        maps[title] = (real_weights.spec_map(shape, spec, axes), shape, spec)
    return real_weights.plot_sharding(maps)
