"""`grok-mini` command line: info, demo (the main job), and more subcommands as they land."""

from __future__ import annotations

import argparse
import sys

from grok_mini.config import ConfigError, GrokConfig, preset

__all__ = ["main", "info_table"]


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


def info_table(config: GrokConfig, name: str = "") -> str:
    """A readable table of the architecture, the parameter counts and the memory figures."""
    counts = config.param_counts()
    rows = [
        ("architecture", ""),
        ("vocab_size", f"{config.vocab_size:,}"),
        ("emb_size", f"{config.emb_size:,}"),
        ("num_layers", f"{config.num_layers}"),
        ("heads (query / key-value)", f"{config.num_q_heads} / {config.num_kv_heads} of size {config.key_size}"),
        ("experts (selected / total)", f"{config.num_selected_experts} / {config.num_experts}"),
        ("ffn_size (per expert)", f"{config.ffn_size:,}"),
        ("sequence_len", f"{config.sequence_len:,}"),
        ("parameters", ""),
        *[(f"  {part}", f"{count:,}") for part, count in counts.items()],
        ("total", f"{config.num_params:,}"),
        (f"active ({config.num_selected_experts} of {config.num_experts} experts)", f"{config.num_active_params:,}"),
        ("memory", ""),
        ("weights bf16", _gib(config.weight_bytes("bf16"))),
        ("weights int8 (release format)", _gib(config.weight_bytes("int8"))),
        ("KV cache per token (bf16)", f"{config.kv_cache_bytes_per_token() / 2**10:,.0f} KiB"),
        (f"KV cache at {config.sequence_len:,} tokens", _gib(config.kv_cache_bytes_per_token() * config.sequence_len)),
    ]
    width = max(len(key) for key, _ in rows) + 2
    lines = [f"grok-mini info: {name}" if name else "grok-mini info"]
    for key, value in rows:
        lines.append(f"{key}" if not value else f"{key:<{width}}{value:>22}")
    return "\n".join(lines)


def _info(args) -> None:
    print(info_table(preset(args.preset), args.preset))


def _demo(args) -> None:
    import jax.numpy as jnp
    from flax import nnx

    from grok_mini.generate import generate
    from grok_mini.model import Grok

    config = preset(args.preset)
    model = Grok(config, dtype=jnp.float32, rngs=nnx.Rngs(args.seed))
    prompt = [[5, 6, 7, 8, 9]]
    print(f"built a random {args.preset} Grok ({config.num_params:,} parameters)")
    print("prompt ids:", prompt[0])
    print("greedy continuation ids:", generate(model, prompt, args.max_new_tokens)[0].tolist())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grok-mini", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="architecture, parameter counts and memory of a preset")
    info.add_argument("--preset", default="grok-1")
    info.set_defaults(run=_info)

    demo = commands.add_parser("demo", help="the main job: build the toy model on CPU and generate")
    demo.add_argument("--preset", default="toy")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--max-new-tokens", type=int, default=16)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ConfigError, ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"grok-mini {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
