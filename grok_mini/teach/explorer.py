"""Notebook 10's explorer: which experts each token goes to, how loaded they are, what a head looks at.

The data functions return numpy arrays (tested in tests/test_lab.py); `static_figure` draws one
selection; `show` builds an ipywidgets UI around it when ipywidgets is installed, and otherwise
just displays the static figure.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

import grok_mini
from grok_mini import moe

__all__ = ["record", "routing_table", "expert_load", "head_attention", "static_figure", "show"]


def _tokens(tokenizer, text: str) -> np.ndarray:
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError("the text encodes to no tokens")
    return np.asarray(ids, np.int32)[None, :]


def record(model, tokenizer, text: str) -> dict:
    """Run the model on `text`: pieces, router logits [L, T, E] and attention weights [L, H, T, S]."""
    tokens = _tokens(tokenizer, text)
    with grok_mini.recording(model, router=True, attention=True) as rec:
        model(tokens)
    layers = rec.state["decoder_layers"]
    router, attention = [], []
    for i in range(len(model.decoder_layers)):
        router.append(np.asarray(layers[i]["moe"]["router_logits"][...], np.float32)[0])  # [T, E]
        weights = np.asarray(layers[i]["multi_head_attention"]["attention_weights"][...], np.float32)[0]
        kv, g, t, s = weights.shape  # query head = kv·G + g
        attention.append(weights.reshape(kv * g, t, s))
    pieces = [tokenizer.id_to_piece(int(t)) for t in tokens[0]]
    return dict(pieces=pieces, router_logits=np.stack(router), attention=np.stack(attention),
                num_selected=model.config.num_selected_experts, num_experts=model.config.num_experts)


def routing_table(model, tokenizer, text: str) -> list[dict]:
    """One dict per (token, layer): position, piece, layer, the chosen experts and their gates (Grok-1's rule)."""
    data = record(model, tokenizer, text)
    variant = getattr(model.config, "variant", None)
    gates, ids = moe.route(data["router_logits"], data["num_selected"],
                           renormalize=bool(getattr(variant, "renormalize", False)))
    gates, ids = np.asarray(gates), np.asarray(ids)  # [L, T, k]
    return [dict(position=t, piece=data["pieces"][t], layer=layer, experts=ids[layer, t].tolist(),
                 gates=[float(x) for x in gates[layer, t]])
            for t in range(len(data["pieces"])) for layer in range(ids.shape[0])]


def expert_load(model, tokenizer, text: str) -> np.ndarray:
    """[L, E]: each expert's share of the layer's top-k assignments on `text` (each row sums to 1)."""
    data = record(model, tokenizer, text)
    _, ids = moe.route(data["router_logits"], data["num_selected"])
    ids = np.asarray(ids)  # [L, T, k]
    counts = np.stack([np.bincount(ids[layer].ravel(), minlength=data["num_experts"]) for layer in range(len(ids))])
    return counts / counts.sum(-1, keepdims=True)


def head_attention(model, tokenizer, text: str, layer: int, head: int) -> np.ndarray:
    """[T, T]: query head `head` of `layer`: row t is how position t's attention splits over 0..t."""
    return record(model, tokenizer, text)["attention"][layer, head]


def static_figure(model, tokenizer, text: str, layer: int = 0, head: int = 0, *, title: str = "") -> Figure:
    """Three panels for one layer: router probabilities with the chosen experts, expert load, one head's attention."""
    data = record(model, tokenizer, text)
    logits = data["router_logits"][layer]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    _, ids = moe.route(logits, data["num_selected"])
    ids = np.asarray(ids)
    pieces = [p.replace("▁", "·") for p in data["pieces"]]
    t, e = probs.shape
    load = np.bincount(ids.ravel(), minlength=e) / ids.size
    attention = data["attention"][layer, head]

    fig = Figure(figsize=(13, max(3.5, 0.28 * t + 1.5)), layout="constrained")
    ax_route, ax_load, ax_att = fig.subplots(1, 3, width_ratios=[e, 3, t])
    ax_route.imshow(probs, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for row in range(t):
        for rank, expert in enumerate(ids[row]):
            ax_route.add_patch(_box(expert, row, "tab:red" if rank == 0 else "tab:orange"))
    ax_route.set(xticks=range(e), yticks=range(t), xlabel="expert", title=f"layer {layer}: router probabilities")
    ax_route.set_yticklabels(pieces, fontsize=7)
    ax_load.barh(range(e), load, color="tab:blue")
    ax_load.axvline(1 / e, color="gray", ls=":", lw=1)
    ax_load.set(yticks=range(e), xlabel="share", ylabel="expert", title="load")
    ax_load.invert_yaxis()
    ax_att.imshow(attention, cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax_att.set(xticks=range(t), yticks=range(t), title=f"head {head}: attention (row: query)")
    ax_att.set_xticklabels(pieces, fontsize=7, rotation=90)
    ax_att.set_yticklabels(pieces, fontsize=7)
    busiest = int(load.argmax())
    fig.suptitle(title or f"Layer {layer}: expert {busiest} takes {load[busiest]:.0%} of the top-"
                 f"{data['num_selected']} choices; head {head} attends only to earlier tokens")
    return fig


def _box(x, y, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor=color, lw=1.5)


def show(models: dict, text: str, layer: int = 0, head: int = 0):
    """A live explorer: a Text box and dropdowns for model, layer and head redraw `static_figure`.

    Without ipywidgets it prints how to install it and displays the static figure instead.
    `models` maps a name to (model, tokenizer).
    """
    from IPython.display import display

    name = next(iter(models))
    try:
        import ipywidgets as widgets
    except ImportError:
        print("ipywidgets is not installed (pip install ipywidgets): showing a static figure")
        display(static_figure(*models[name], text, layer, head))
        return None
    model = models[name][0]
    text_box = widgets.Text(value=text, description="text", layout=widgets.Layout(width="60%"))
    model_box = widgets.Dropdown(options=list(models), value=name, description="model")
    layer_box = widgets.Dropdown(options=list(range(len(model.decoder_layers))), value=layer, description="layer")
    heads = model.config.num_q_heads
    head_box = widgets.Dropdown(options=list(range(heads)), value=head, description="head")
    output = widgets.Output()

    def redraw(*_):
        output.clear_output(wait=True)
        with output:
            try:
                display(static_figure(*models[model_box.value], text_box.value, layer_box.value, head_box.value))
            except ValueError as error:
                print(error)

    for box in (model_box, layer_box, head_box):
        box.observe(redraw, names="value")
    text_box.observe(redraw, names="value")
    ui = widgets.VBox([text_box, widgets.HBox([model_box, layer_box, head_box]), output])
    redraw()
    display(ui)
    return ui
