"""Notebook 10's routing explorer: which experts each token goes to, how loaded they are, what a head reads.

    rec = explorer.record(model, tokenizer, "The king said")   # one forward pass, recorded
    explorer.routing_table(rec)        # per (token, layer): the chosen experts and their gates
    explorer.expert_load(rec)          # [L, E] share of each layer's top-k assignments
    explorer.head_attention(rec, 1, 3) # [T, T] what query head 3 of layer 1 attends to
    explorer.static_figure(rec, layer=1, head=3)
    explorer.show("The king said")     # the live explorer (ipywidgets), over the static figure

The data functions are plain numpy (tests/test_lab.py checks them without a browser). `show`
draws the static figure as an ordinary cell output and lets the widgets replace it in place, so
where no widget frontend runs (nbval, an exported HTML page) the figure of the first selection is
what one sees.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from matplotlib.figure import Figure

from grok_mini.teach.style import _STYLE, BLUE, GREEN, GREY, ORANGE, PURPLE, RED, SKY, YELLOW

__all__ = ["Recorded", "record", "routing_table", "expert_load", "head_attention", "static_figure", "show",
           "default_models", "SAMPLE_TEXTS"]

SAMPLE_TEXTS = (
    "The king said to the queen that the night was long",
    'The "for" statement is used to iterate over the elements of a sequence',
    "def area(r):\n    return 3.14159 * r ** 2",
    "x = [i * i for i in range(10) if i % 2 == 0]",
)
_EXPERT_COLOURS = (BLUE, ORANGE, GREEN, RED, PURPLE, SKY, YELLOW, GREY)  # expert e: colour e mod 8


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One forward pass over a text: what the explorer shows, as numpy arrays."""

    pieces: list[str]           # [T] the tokenizer's pieces
    router_logits: np.ndarray   # [L, T, E] float32
    attention: np.ndarray       # [L, H, T, T] float32, query head h = kv·G + g
    num_selected: int           # k
    router: str                 # the variant's routing rule ("softmax_topk" is Grok-1's)
    renormalize: bool

    @property
    def num_experts(self) -> int:
        return self.router_logits.shape[-1]


def record(model, tokenizer, text: str) -> Recorded:
    """Run `model` on `text` inside `grok_mini.recording`: router logits and attention of every layer."""
    from grok_mini.model import recording

    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError("the text encodes to no tokens; type some text")
    tokens = np.asarray(ids, np.int32)[None, :]  # [1, T]
    with recording(model, router=True, attention=True) as recorded:
        model(tokens)
    layers = recorded.state["decoder_layers"]
    router, attention = [], []
    for i in range(len(model.decoder_layers)):
        router.append(np.asarray(layers[i]["moe"]["router_logits"][...], np.float32)[0])  # [T, E]
        weights = np.asarray(layers[i]["multi_head_attention"]["attention_weights"][...], np.float32)[0]
        kv, g, t, s = weights.shape  # [KV, G, T, S]
        attention.append(weights.reshape(kv * g, t, s))  # [H, T, S]: head kv·G + g
    variant = model.config.variant
    return Recorded(pieces=[tokenizer.id_to_piece(i) for i in ids], router_logits=np.stack(router),
                    attention=np.stack(attention), num_selected=model.config.num_selected_experts,
                    router=variant.router, renormalize=variant.renormalize)


def _route(rec: Recorded) -> tuple[np.ndarray, np.ndarray]:
    """(gates [L, T, k], ids [L, T, k]) by the model's own rule (moe.route, the one the model runs)."""
    from grok_mini.moe import route

    gates, ids = route(rec.router_logits, rec.num_selected, order=rec.router, renormalize=rec.renormalize)
    return np.asarray(gates), np.asarray(ids)


def routing_table(rec: Recorded) -> list[dict]:
    """One dict per (token, layer): position, piece, layer, the chosen experts (best first) and their gates."""
    gates, ids = _route(rec)
    return [dict(position=t, piece=piece, layer=layer, experts=ids[layer, t].tolist(),
                 gates=[float(g) for g in gates[layer, t]])
            for t, piece in enumerate(rec.pieces) for layer in range(ids.shape[0])]


def expert_load(rec: Recorded) -> np.ndarray:
    """[L, E]: each expert's share of the layer's T·k assignments on this text (each row sums to 1)."""
    _, ids = _route(rec)  # [L, T, k]
    counts = np.stack([np.bincount(layer.ravel(), minlength=rec.num_experts) for layer in ids])  # [L, E]
    return counts / counts.sum(-1, keepdims=True)


def head_attention(rec: Recorded, layer: int, head: int) -> np.ndarray:
    """[T, T]: row t is how query position t of `head` in `layer` splits its attention over keys 0..t."""
    return rec.attention[layer, head]


def _shown(piece: str) -> str:
    return piece.replace("▁", "·").replace("\n", "⏎")


def static_figure(rec: Recorded, layer: int = 0, head: int = 0, *, name: str = "") -> Figure:
    """Three panels: each token's experts and gates in every layer, the load per expert, one head's attention.

    A plain Figure, not a pyplot one: the widgets redraw from callbacks, and pyplot would keep those
    figures and show them again under the next cell that runs.
    """
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        return _draw(rec, layer, head, name)


def _draw(rec: Recorded, layer: int, head: int, name: str) -> Figure:
    gates, ids = _route(rec)  # [L, T, k]
    load = expert_load(rec)  # [L, E]
    attention = head_attention(rec, layer, head)  # [T, T]
    num_layers, t, k = ids.shape
    pieces = [_shown(p) for p in rec.pieces]
    fig = Figure(figsize=(15.0, max(3.8, 0.3 * t + 1.8)), layout="constrained")
    ax_route, ax_load, ax_att = fig.subplots(1, 3, width_ratios=[1.6 * num_layers, 4, max(t / 2, 2)])

    # Routing: one row per token, one column per layer; the cell's colour is the first expert's,
    # its text every chosen expert with its gate.
    ax_route.imshow(ids[..., 0].T, cmap=_expert_cmap(rec.num_experts), vmin=-0.5, vmax=rec.num_experts - 0.5,
                    aspect="auto", alpha=0.45)
    for (i, j), _ in np.ndenumerate(ids[..., 0].T):  # i: token, j: layer
        text = "  ".join(f"{ids[j, i, r]}:{gates[j, i, r]:.2f}" for r in range(k))
        ax_route.text(j, i, text, ha="center", va="center", fontsize=7)
    ax_route.set_xticks(range(num_layers), [f"layer {j}" for j in range(num_layers)])
    ax_route.set_yticks(range(t), pieces, fontsize=7)
    ax_route.grid(False)
    ax_route.set_title("expert:gate per token and layer", fontsize=10)

    image = ax_load.imshow(load, cmap="RdBu_r", vmin=0, vmax=2 / rec.num_experts, aspect="auto")
    fair = 1 / rec.num_experts
    for (i, j), value in np.ndenumerate(load):
        ax_load.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                     color="white" if abs(value - fair) > 0.6 * fair else "black")
    ax_load.set_xticks(range(rec.num_experts))
    ax_load.set_yticks(range(num_layers))
    ax_load.set(xlabel="expert", ylabel="layer")
    ax_load.grid(False)
    ax_load.set_title(f"load (fair share 1/{rec.num_experts})", fontsize=10)
    fig.colorbar(image, ax=ax_load, shrink=0.8)

    ax_att.imshow(attention, cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax_att.set_xticks(range(t), pieces, fontsize=7, rotation=90)
    ax_att.set_yticks(range(t), pieces, fontsize=7)
    ax_att.set(xlabel="key", ylabel="query")
    ax_att.grid(False)
    ax_att.set_title(f"layer {layer}, head {head}: attention", fontsize=10)

    busiest = int(load[layer].argmax())
    previous = float(np.diagonal(attention, -1).mean()) if t > 1 else 0.0  # query t's weight on key t − 1
    fig.suptitle(f"{name + ': ' if name else ''}in layer {layer} expert {busiest} takes {load[layer, busiest]:.0%} of "
                 f"the top-{k} choices; head {head} gives the previous token {previous:.0%} of its attention",
                 fontweight="bold")
    return fig


def _expert_cmap(num_experts: int):
    from matplotlib.colors import ListedColormap

    return ListedColormap([_EXPERT_COLOURS[e % len(_EXPERT_COLOURS)] for e in range(num_experts)])


def default_models(extra: dict | None = None) -> dict:
    """{name: (model, tokenizer)}: the trained toy, an untrained toy (random weights, seed 0), then `extra`."""
    import jax.numpy as jnp
    from flax import nnx

    from grok_mini.config import preset
    from grok_mini.model import Grok
    from grok_mini.teach import trained_toy

    model, tokenizer = trained_toy()
    untrained = Grok(preset("toy"), dtype=jnp.float32, rngs=nnx.Rngs(0))
    return {"trained toy": (model, tokenizer), "untrained toy": (untrained, tokenizer), **(extra or {})}


def show(text: str = SAMPLE_TEXTS[0], models: dict | None = None, *, layer: int = 0, head: int = 0):
    """The live explorer: type or pick a text, pick a model, a layer and a head; the figure below redraws.

    `models` maps a name to (model, tokenizer) and defaults to `default_models()`. The figure is a
    plain cell output (so exported pages and nbval see it) that the widgets update in place; without
    ipywidgets only the figure is shown. Returns the controls (or None).
    """
    from IPython.display import display

    models = default_models() if models is None else models
    recordings: dict[tuple[str, str], Recorded] = {}  # one forward pass per (model, text)

    def figure(name, text, layer, head):
        if (name, text) not in recordings:
            recordings[name, text] = record(*models[name], text)
        return static_figure(recordings[name, text], layer, head, name=name)

    name = next(iter(models))
    try:
        import ipywidgets as widgets
    except ImportError:
        print("(pip install ipywidgets for the live explorer; here is the static figure)")
        display(figure(name, text, layer, head))
        return None
    first = models[name][0].config
    text_box = widgets.Combobox(value=text, options=list(SAMPLE_TEXTS), description="text", ensure_option=False,
                                continuous_update=False, layout=widgets.Layout(width="70%"))
    model_box = widgets.Dropdown(options=list(models), value=name, description="model")
    layer_box = widgets.Dropdown(options=list(range(first.num_layers)), value=layer, description="layer")
    head_box = widgets.Dropdown(options=list(range(first.num_q_heads)), value=head, description="head")
    message = widgets.Label()
    controls = widgets.VBox([text_box, widgets.HBox([model_box, layer_box, head_box]), message])
    display(controls)
    shown = display(figure(name, text, layer, head), display_id=True)  # a plain output, updated in place

    def redraw(_change=None):
        config = models[model_box.value][0].config  # another model may have other layers or heads
        for box, count in ((layer_box, config.num_layers), (head_box, config.num_q_heads)):
            if len(box.options) != count:  # (setting options fires this callback again: only when needed)
                box.options = list(range(count))
        try:
            shown.update(figure(model_box.value, text_box.value, layer_box.value or 0, head_box.value or 0))
            message.value = ""
        except ValueError as error:
            message.value = str(error)

    for box in (text_box, model_box, layer_box, head_box):
        box.observe(redraw, names="value")
    return controls
