"""`grok-mini` command line: info, demo (the main job), train, generate, tokenize."""

from __future__ import annotations

import argparse
import sys

from grok_mini.config import ConfigError, GrokConfig, preset, shown

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
        ("weights int4 (experts, groups of 64)", _gib(config.weight_bytes("int4"))),
        *_per_gpu_rows(config),
        ("KV cache per token (bf16)", f"{config.kv_cache_bytes_per_token() / 2**10:,.0f} KiB"),
        (f"KV cache at {config.sequence_len:,} tokens", _gib(config.kv_cache_bytes_per_token() * config.sequence_len)),
    ]
    width = max(len(key) for key, _ in rows) + 2
    lines = [f"grok-mini info: {name}" if name else "grok-mini info"]
    for key, value in rows:
        lines.append(f"{key}" if not value else f"{key:<{width}}{value:>22}")
    return "\n".join(lines)


def _per_gpu_rows(config: GrokConfig, tokens: int = 8192) -> list[tuple[str, str]]:
    """Weights + one `tokens`-token KV cache per GPU, all GPUs on the model axis (the router and norms,
    float32, are copied to every GPU; everything else, the KV cache too, is split)."""
    counts = config.param_counts()
    copied = 4 * (counts["router"] + counts["norms"])
    cache = config.kv_cache_bytes_per_token() * tokens
    rows = [(f"per GPU, + {tokens:,}-token KV cache", "int8 / int4")]
    for gpus in (1, 2, 4, 8):
        if config.num_kv_heads % gpus or config.emb_size % gpus or config.ffn_size % gpus:
            continue
        per = [(config.weight_bytes(fmt) - copied + cache) / gpus + copied for fmt in ("int8", "int4")]
        rows.append((f"  {gpus} GPU{'s' if gpus > 1 else ''}", " / ".join(_gib(n) for n in per)))
    return rows


def _info(args) -> None:
    print(info_table(preset(args.preset), args.preset))



# ---- shared helpers -----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 1, like every other error here."""

    def error(self, message: str):
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(low: int, high: int):
    """An argparse type: an integer in [low, high], refused with the range (and a long value cut short)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or more digits than Python converts
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low:,} to {high:,}, got {shown(text, 40)}")
        return value
    parse.__name__ = "integer"
    return parse


COUNT = _integer(1, 1 << 31)  # steps, windows, tokens, samples
SEED = _integer(0, (1 << 63) - 1)  # what jax.random.key takes

DEMO_PROMPTS = ('The "while" statement', "A class definition", "When an exception")


def _model_config(args, default: str | None = "toy") -> GrokConfig | None:
    """--config JSON wins over --preset; None when neither is given and there is no default."""
    if getattr(args, "config", None):
        return GrokConfig.from_json(args.config)
    name = getattr(args, "preset", None) or default
    return preset(name) if name else None


def _train_overrides(args) -> dict:
    names = ("steps", "batch_size", "seq_len", "learning_rate", "warmup_steps", "balance_coef", "z_coef",
             "eval_every", "eval_windows", "checkpoint_every", "seed")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from grok_mini.train import TrainConfig

    d = TrainConfig()
    add = parser.add_argument
    add("--steps", type=COUNT, help=f"optimiser steps in all (default {d.steps})")
    add("--batch-size", type=COUNT, help=f"windows a step (default {d.batch_size})")
    add("--seq-len", type=COUNT, help=f"tokens a window (default {d.seq_len})")
    add("--learning-rate", type=float, help=f"peak AdamW learning rate (default {d.learning_rate})")
    add("--warmup-steps", type=_integer(0, 1 << 31),
        help=f"linear warmup before the cosine decay (default {d.warmup_steps})")
    add("--balance-coef", type=float, help=f"Switch load-balancing loss weight, 0 = off (default {d.balance_coef})")
    add("--z-coef", type=float, help=f"router z-loss weight, 0 = off (default {d.z_coef})")
    add("--eval-every", type=COUNT, help=f"held-out loss every N steps (default {d.eval_every})")
    add("--eval-windows", type=COUNT, help=f"held-out windows (default {d.eval_windows})")
    add("--checkpoint-every", type=_integer(0, 1 << 31),
        help="also checkpoint every N steps (default: only at the end)")
    add("--seed", type=SEED, help=f"model initialisation, batch order and sampling (default {d.seed})")
    add("--no-progress", action="store_true", help="no progress bar")


def _print_samples(model, tokenizer, prompts, *, max_new_tokens: int, temperature: float, top_k, top_p: float,
                   seed: int) -> list[str]:
    """Continue the prompts as one batch (of different lengths); print each, the generated part in ⟨⟩."""
    from grok_mini.generate import generate

    prompt_ids = [tokenizer.encode(prompt) for prompt in prompts]
    new = generate(model, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   seed=seed, eos_token=tokenizer.eos_id)
    texts = []
    for prompt, ids, row in zip(prompts, prompt_ids, new, strict=True):
        text = tokenizer.decode(ids + [int(i) for i in row])
        texts.append(text)
        shown = f"{prompt}⟨{text[len(prompt):]}⟩" if text.startswith(prompt) else text
        print("  " + shown.replace("\n", "\n  "))
    return texts


# ---- demo ---------------------------------------------------------------------------------------

def _save_plots(history: dict, out) -> list:
    """The run's loss and expert-load plots, when matplotlib (the teach extra) is installed."""
    try:
        from grok_mini.teach.training import save_plots
    except ImportError:
        print("(no plots: they need matplotlib; pip install 'grok-mini[teach]')")
        return []
    return save_plots(history, out)


def _demo(args) -> None:
    import time
    from pathlib import Path

    from grok_mini.train import TrainConfig, prepare_run

    start = time.perf_counter()
    out = Path(args.out)
    model_config = _model_config(args)
    config = TrainConfig(**_train_overrides(args))
    name = args.config or args.preset
    print(f"grok-mini demo: training the {name} Grok ({model_config.num_params:,} parameters, "
          f"{model_config.num_active_params:,} active a token: {model_config.num_selected_experts} of "
          f"{model_config.num_experts} experts in each of {model_config.num_layers} layers) on this CPU → {out}/")
    trainer, tokenizer = prepare_run(out, corpus=args.corpus, model_config=model_config, config=config,
                                     replace=True)
    print(f"tokenizer: SentencePiece BPE with Grok-1's recipe, {tokenizer.vocab_size} pieces → "
          f"{out / 'tokenizer.model'}")
    sampling = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, seed=config.seed)
    print(f"\nsamples before training (temperature {args.temperature}, top-k {args.top_k}, top-p {args.top_p}; "
          "generated text in ⟨⟩):")
    before = _print_samples(trainer.model, tokenizer, DEMO_PROMPTS, **sampling)
    print(f"\ntraining {config.steps} steps of {config.batch_size}×{config.seq_len} tokens (AdamW, warmup + "
          f"cosine; load-balancing loss ×{config.balance_coef}, router z-loss ×{config.z_coef}):")
    trainer.run(run_dir=out, progress=not args.no_progress)
    plots = _save_plots(trainer.history, out)
    history = trainer.history
    first, last = history["heldout_loss"][0], history["heldout_loss"][-1]
    print(f"held-out loss: {first:.3f} at step 0 → {last:.3f} at step {history['heldout_step'][-1]} "
          f"({1 - last / first:.0%} lower; nats per token)")
    print("\nsamples after training (same prompts, same seed):")
    after = _print_samples(trainer.model, tokenizer, DEMO_PROMPTS, **sampling)
    with open(out / "samples.txt", "w", encoding="utf-8") as file:
        for title, texts in (("before training", before), (f"after {trainer.step} steps", after)):
            file.write(f"# {title}\n\n" + "\n\n".join(texts) + "\n\n")
    print(f"\nwrote {', '.join(str(p) for p in [*plots, out / 'samples.txt'])} and the checkpoint "
          f"{out / 'checkpoints' / str(trainer.step)}")
    print(f"wall time {time.perf_counter() - start:.0f} s; training ran at {trainer.tokens_per_second:,.0f} "
          "tokens/s (compilation excluded)")
    print(f"next: grok-mini generate {out} --prompt 'The \"for\" statement'")


# ---- train --------------------------------------------------------------------------------------

def _train(args) -> None:
    import dataclasses
    from pathlib import Path

    from grok_mini.train import TrainConfig, prepare_run, read_run_files

    out = Path(args.out)
    overrides = _train_overrides(args)
    if args.resume:
        model_config, saved = read_run_files(out)
        config = dataclasses.replace(saved, **overrides)
    else:
        model_config, config = _model_config(args), TrainConfig(**overrides)
    trainer, _ = prepare_run(out, corpus=args.corpus, model_config=model_config, config=config, resume=args.resume)
    if args.until is not None and args.until <= trainer.step:
        raise ValueError(f"--until {args.until}: the run in {out} is already at step {trainer.step}")
    print(f"model: {model_config.num_params:,} parameters; training to step {args.until or config.steps} of "
          f"{config.steps} → {out}/")
    trainer.run(args.until, run_dir=out, progress=not args.no_progress)
    _save_plots(trainer.history, out)
    history = trainer.history
    print(f"step {trainer.step}: held-out loss {history['heldout_loss'][0]:.3f} at step "
          f"{history['heldout_step'][0]} → {history['heldout_loss'][-1]:.3f}; "
          f"{trainer.tokens_per_second:,.0f} tokens/s; checkpoint, loss.png, expert_load.png in {out}/")


# ---- generate -----------------------------------------------------------------------------------

def _load_for_generation(args):
    """(model, tokenizer or None) from a training run folder or a release checkpoint folder."""
    from pathlib import Path

    import jax.numpy as jnp

    from grok_mini.tokenizer import load_grok1_tokenizer, load_tokenizer

    if (args.checkpoint is None) == (args.checkpoint_option is None):
        raise ValueError("give the checkpoint folder once: `grok-mini generate DIR ...` or `--checkpoint DIR`")
    path = Path(args.checkpoint or args.checkpoint_option)
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, None: None}[args.dtype]
    if args.int8 and args.int4:
        raise ValueError("give --int8 or --int4, not both")
    if (path / "checkpoints").is_dir():  # a grok-mini training run
        from grok_mini.train import load_trained_model

        tokenizer = load_tokenizer(args.tokenizer or path / "tokenizer.model") if args.ids is None else None
        model = load_trained_model(path, dtype=dtype or jnp.float32)  # the tokenizer first: it is quick
        if args.int8 or args.int4:  # as a release user would have it: int8 by the release's recipe, int4 from that
            from grok_mini.load import quantize_model
            from grok_mini.quant import Int4

            model = quantize_model(model, Int4(args.group_size) if args.int4 else True)
        return model, tokenizer
    if (path / "ckpt-0").is_dir():  # the release format
        from grok_mini.load import load_checkpoint
        from grok_mini.memory import require_memory
        from grok_mini.quant import Int4

        config = _model_config(args, default=None)
        if config is None and (path / "config.json").exists():  # exists, not is_file: a FIFO is refused, not skipped
            config = GrokConfig.from_json(path / "config.json")
        if config is None:
            raise ConfigError(f"{path}: a release checkpoint needs --preset (e.g. grok-1) or --config JSON")
        dtype = dtype or jnp.bfloat16
        mesh = _mesh(args.mesh, config)
        fmt = "int8" if args.int8 else "int4" if args.int4 else "fp32" if dtype == jnp.float32 else "bf16"
        weights = config.weight_bytes(fmt, group_size=args.group_size)
        require_memory(weights, f"{path}: the model ({config.num_params:,} parameters)",
                       None if mesh is None else mesh.devices.flat)  # before minutes of loading
        tokenizer = None  # before the model: a bad tokenizer should not cost minutes of loading
        if args.ids is None:
            local = args.tokenizer or (path / "tokenizer.model" if (path / "tokenizer.model").exists() else None)
            tokenizer = load_tokenizer(local) if local else load_grok1_tokenizer()
        quantized = Int4(args.group_size) if args.int4 else args.int8
        # Generation only reads the embedding cast to dtype: held so, the logits are the same and a decode
        # step skips casting the whole [V, D] matrix (benchmarks/RESULTS.md).
        return load_checkpoint(path, config, dtype=dtype, quantized=quantized, mesh=mesh,
                               embedding_dtype=dtype), tokenizer
    raise OSError(f"{path}: neither a training run (checkpoints/) nor a release checkpoint (ckpt-0/)")


def _mesh(spec: str, config: GrokConfig):
    """--mesh: None (one device), or a grok_mini.make_mesh over the visible devices."""
    import jax

    from grok_mini.sharding import make_mesh

    if spec == "none" or (spec == "auto" and jax.device_count() == 1):
        return None
    if spec == "auto":
        return make_mesh(config=config)
    try:
        data, expert, model = (int(n) for n in spec.split(","))
    except ValueError:
        raise ValueError(f"--mesh: expected DATA,EXPERT,MODEL (e.g. 1,1,8), 'auto' or 'none', got {spec!r}") from None
    return make_mesh(data=data, expert=expert, model=model, config=config)


def _generate(args) -> None:
    from grok_mini.generate import check_sampling, generate, stream

    check_sampling(args.temperature, args.top_k, args.top_p)  # before the (slow) loading
    if (args.ids is None) == (args.prompt is None):
        raise ValueError("give either --prompt TEXT or --ids 1,2,3")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be ≥ 1, got {args.num_samples}")
    prompt = None
    if args.ids is not None:
        try:
            prompt = [int(i) for i in args.ids.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"--ids: expected integers separated by commas, got {shown(args.ids)}") from None
    model, tokenizer = _load_for_generation(args)
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} pieces, more than the model's "
                         f"vocab_size={model.config.vocab_size}")
    prompt = prompt if prompt is not None else tokenizer.encode(args.prompt)
    eos = None if args.no_eos else (tokenizer.eos_id if tokenizer else model.config.eos_token)
    settings = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, eos_token=eos)
    if args.num_samples > 1 or tokenizer is None:
        new = generate(model, [prompt] * args.num_samples, args.max_new_tokens, seed=args.seed, **settings)
        for i, row in enumerate(new):
            ids = [int(t) for t in row]
            if args.num_samples > 1:
                print(f"--- sample {i}")
            print(tokenizer.decode(prompt + ids) if tokenizer else " ".join(map(str, ids)))
        return
    # One sample: print the text as it is decoded, holding back an incomplete UTF-8 character.
    printed = tokenizer.decode(prompt)
    print(printed, end="", flush=True)
    ids = list(prompt)
    for step in stream(model, [prompt], args.max_new_tokens, seed=args.seed, **settings):
        if eos is not None and step[0] in (eos, model.config.pad_token):
            break
        ids.append(int(step[0]))
        text = tokenizer.decode(ids).rstrip("\ufffd")
        if text.startswith(printed) and len(text) > len(printed):
            print(text[len(printed):], end="", flush=True)
            printed = text
    print()


# ---- tokenize -----------------------------------------------------------------------------------

def _tokenize(args) -> None:
    from pathlib import Path

    from grok_mini.tokenizer import load_grok1_tokenizer, load_tokenizer

    if args.tokenizer is None:
        tokenizer = load_grok1_tokenizer()
    else:
        path = Path(args.tokenizer)
        tokenizer = load_tokenizer(path / "tokenizer.model" if path.is_dir() else path)
    ids = tokenizer.encode(args.text)
    print(f"{len(ids)} tokens ({tokenizer.source}, {tokenizer.vocab_size:,} pieces)")
    for token in ids:
        print(f"{token:>8}  {tokenizer.id_to_piece(token)!r}")
    print("ids:", ids)


def _explore(args) -> None:
    import time
    from pathlib import Path

    from grok_mini import explore

    experiments = explore.DEFAULT_SWEEP
    if args.only:
        known = {e.name: e for e in experiments}
        if unknown := [name for name in args.only if name not in known]:
            raise ValueError(f"unknown experiments {unknown}; choose from {', '.join(known)} (see --list)")
        experiments = tuple(known[name] for name in args.only)
    print(explore.describe(experiments))
    if args.list:
        return
    start = time.perf_counter()
    out = Path(args.out)
    results = explore.run_sweep(out, experiments, seeds=tuple(range(args.seeds)), corpus=args.corpus,
                                progress=not args.no_progress)
    print(f"\n{'experiment':<18}" + "".join(f"{'seed ' + str(s):>10}" for s in range(args.seeds)) + f"{'mean':>10}")
    for experiment in experiments:
        final = [r["history"]["heldout_loss"][-1] for r in results if r["experiment"] == experiment.name]
        print(f"{experiment.name:<18}" + "".join(f"{x:>10.3f}" for x in final) + f"{sum(final) / len(final):>10.3f}")
    print(f"\nheld-out loss (nats/token) after {explore.SWEEP_TRAINING.steps} steps; tables in {out}/results.csv "
          f"and {out}/expert_load.csv; {time.perf_counter() - start:.0f} s")


def _classroom(args) -> None:
    from grok_mini.teach import classroom

    if args.action == "student":
        for path in classroom.student_edition(args.source, args.out):
            print(path)
        return
    rows = classroom.grade(args.source, args.out, feedback=args.feedback, workdir=args.workdir)
    for student in sorted({r["student"] for r in rows}):
        mine = [r for r in rows if r["student"] == student]
        print(f"{student}: {sum(r['points'] for r in mine):g} / {sum(r['max_points'] for r in mine):g} points")
    print(f"one row per student and exercise in {args.out}")


def _figures(args) -> None:
    from grok_mini.teach import figures

    if args.list or args.markdown:
        print(figures.gallery_markdown() if args.markdown else
              "\n".join(f"{spec.name:<28} {spec.caption}" for spec in figures.FIGURES.values()))
        return
    for path in figures.render(args.only or None, args.out):
        print(path)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grok-mini", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="architecture, parameter counts and memory of a preset")
    info.add_argument("--preset", default="grok-1")
    info.set_defaults(run=_info)

    demo = commands.add_parser("demo", help="the main job: train the toy Grok on the embedded corpus, plot, sample")
    demo.add_argument("--out", default="runs/demo", help="output folder (a previous demo there is replaced)")
    demo.add_argument("--preset", default="toy")
    demo.add_argument("--config", help="a GrokConfig JSON file (instead of --preset)")
    demo.add_argument("--corpus", help="a text file or folder instead of the embedded corpus")
    demo.add_argument("--max-new-tokens", type=COUNT, default=40)
    demo.add_argument("--temperature", type=float, default=0.8)
    demo.add_argument("--top-k", type=COUNT, default=40)
    demo.add_argument("--top-p", type=float, default=0.95)
    _add_training_arguments(demo)
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="train a Grok preset on a corpus: checkpoints, plots, resume")
    train.add_argument("--corpus", help="a text file or a folder of .txt/.md/.rst (default: the embedded corpus)")
    train.add_argument("--preset", default="toy")
    train.add_argument("--config", help="a GrokConfig JSON file (instead of --preset)")
    train.add_argument("--out", default="runs/train", help="the run folder")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--until", type=COUNT, help="stop at this step (the schedule still spans --steps); "
                       "continue later with --resume")
    _add_training_arguments(train)
    train.set_defaults(run=_train)

    gen = commands.add_parser("generate", help="continue a prompt with a trained run or a release checkpoint")
    gen.add_argument("checkpoint", nargs="?",
                     help="a run folder (from grok-mini train or demo) or a folder holding ckpt-0/")
    gen.add_argument("--checkpoint", dest="checkpoint_option", metavar="DIR", help="the same, as an option")
    gen.add_argument("--prompt", help="text to continue")
    gen.add_argument("--ids", help="token ids to continue instead of --prompt, e.g. 422,3033,356")
    gen.add_argument("--max-new-tokens", type=COUNT, default=64)
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    gen.add_argument("--top-k", type=COUNT, default=None, help="keep the k most likely tokens (default: all)")
    gen.add_argument("--top-p", type=float, default=1.0,
                     help="nucleus: keep the most likely tokens whose probability mass exceeds p (1 = all)")
    gen.add_argument("--seed", type=SEED, default=0)
    gen.add_argument("--num-samples", type=COUNT, default=1)
    gen.add_argument("--no-eos", action="store_true", help="do not stop at the end-of-sequence token")
    gen.add_argument("--tokenizer", help="a tokenizer.model (default: the run's own; for a release checkpoint "
                     "its folder's tokenizer.model, else Grok-1's from the hub)")
    gen.add_argument("--preset", help="release checkpoints: the preset (e.g. grok-1)")
    gen.add_argument("--config", help="release checkpoints: a GrokConfig JSON file")
    gen.add_argument("--dtype", choices=["float32", "bfloat16"],
                     help="activations (default: float32 for a training run, bfloat16 for a release checkpoint)")
    gen.add_argument("--int8", action="store_true", help="keep the matrices int8 in memory (a training run's: "
                     "quantised by the release's recipe)")
    gen.add_argument("--int4", action="store_true",
                     help="re-quantise the expert matrices to int4 (half int8's memory and "
                          "decode reads; attention stays int8)")
    gen.add_argument("--group-size", type=_integer(2, 1 << 20), default=64,
                     help="--int4: input rows sharing one scale (default 64)")
    gen.add_argument("--mesh", default="auto",
                     help="release checkpoints: DATA,EXPERT,MODEL device counts, 'auto' (all devices on the model "
                          "axis when there are several) or 'none' (one device)")
    gen.set_defaults(run=_generate)

    tokenize = commands.add_parser("tokenize", help="show the pieces and ids of a text")
    tokenize.add_argument("text")
    tokenize.add_argument("--tokenizer", help="a tokenizer.model or a run folder (default: Grok-1's, from the hub)")
    tokenize.set_defaults(run=_tokenize)

    lab = commands.add_parser("explore", help="train variants of Grok-1's design on the toy, same data and seeds")
    lab.add_argument("--out", default="runs/explore", help="the sweep's folder (finished runs there are kept)")
    lab.add_argument("--only", nargs="+", metavar="NAME", help="run these experiments only (see --list)")
    lab.add_argument("--seeds", type=_integer(1, 16), default=2, help="seeds per experiment (default 2)")
    lab.add_argument("--corpus", help="a text file or folder instead of the embedded corpus")
    lab.add_argument("--list", action="store_true", help="list the experiments and what each changes")
    lab.add_argument("--no-progress", action="store_true", help="no progress bar")
    lab.set_defaults(run=_explore)

    room = commands.add_parser("classroom", help="teachers: a student edition of the notebooks, or grade submissions")
    room.add_argument("action", choices=["student", "grade"],
                      help="student: write the student edition of SOURCE's notebooks to OUT; grade: grade "
                           "SOURCE/<student>/NN_*.ipynb into the CSV file OUT")
    room.add_argument("source", help="the notebooks folder (student) or the submissions folder (grade)")
    room.add_argument("out", help="the folder for the student edition, or the grades CSV")
    room.add_argument("--feedback", metavar="FOLDER", help="grade: also write each executed notebook, with the "
                                                            "checkers' messages, to FOLDER/<student>/")
    room.add_argument("--workdir", metavar="FOLDER", help="grade: run every notebook in FOLDER (e.g. the student "
                                                          "edition, whose data/ the notebooks read; default: "
                                                          "each student's folder)")
    room.set_defaults(run=_classroom)

    figs = commands.add_parser("figures", help="regenerate the PNGs in figures/ from the notebooks' plotting code")
    figs.add_argument("--out", help="output folder (default: figures/ of this checkout)")
    figs.add_argument("--only", nargs="+", metavar="NAME", help="render these figures only (see --list)")
    figs.add_argument("--list", action="store_true", help="list the figures and their captions")
    figs.add_argument("--markdown", action="store_true", help="print the README gallery for the figures")
    figs.set_defaults(run=_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")  # plots go to files, never to a window
    except ImportError:  # the core alone: everything but the plots works
        pass
    try:
        args.run(args)
    except (ConfigError, ValueError, OSError) as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__  # one line, whatever the library wrote
        print(f"grok-mini {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
