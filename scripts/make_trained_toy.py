"""Train the toy Grok the notebooks show trained, and store it in the repository.

    python scripts/make_trained_toy.py                 # → grok_mini/teach/data/toy_trained/
    python scripts/make_trained_toy.py --steps 100     # a quicker, weaker one elsewhere: --out DIR

Trains `preset("toy")` on the embedded corpus (a `grok-mini train` run in a temporary folder), then
writes what a notebook needs and nothing else: `model/`, the float32 weights as Hugging Face
safetensors (`grok_mini.load_hf` reads them: lossless for our float32 weights), `tokenizer.model`,
and `training.json` (the settings and the history). The notebooks load it with `grok_mini.teach.trained_toy()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax.numpy as jnp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grok_mini.hf import save_hf  # noqa: E402
from grok_mini.train import TrainConfig, prepare_run  # noqa: E402

# Longer than the demo's 120 steps, so that trained behaviour (sharp heads, specialised experts,
# grammatical samples) shows; 5-6 minutes on a 2-core CPU.
TRAINING = TrainConfig(steps=600, batch_size=8, seq_len=128, warmup_steps=30, eval_every=50)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "grok_mini" / "teach" / "data" / "toy_trained"))
    parser.add_argument("--steps", type=int, default=TRAINING.steps)
    args = parser.parse_args(argv)
    config = dataclasses.replace(TRAINING, steps=args.steps)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run:
        trainer, tokenizer = prepare_run(run, config=config)
        trainer.run()
        out = Path(args.out)
        save_hf(trainer.model, out / "model", dtype=jnp.float32)  # replaces an earlier export whole
        shutil.copy(Path(run) / "tokenizer.model", out / "tokenizer.model")
        (out / "training.json").write_text(json.dumps(dict(
            train_config=dataclasses.asdict(config), history=trainer.history,
            seconds=round(time.perf_counter() - start, 1)), indent=None))
    losses = trainer.history["heldout_loss"]
    print(f"{out}: held-out loss {losses[0]:.3f} → {losses[-1]:.3f} after {config.steps} steps, "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
