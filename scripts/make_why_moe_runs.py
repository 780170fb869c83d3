"""Make the stored training runs that notebook 12 (why a mixture of experts) plots.

    python scripts/make_why_moe_runs.py                 # writes notebooks/data/12_why_moe/
    python scripts/make_why_moe_runs.py --out /tmp/x    # somewhere else
    python scripts/make_why_moe_runs.py --steps 5 --seeds 0 --out /tmp/x   # a quick look

Three arms × three seeds (0, 1, 2) of the toy preset on the embedded corpus, through the package's
sweep runner (`grok_mini.explore.run_sweep`, the one behind `grok-mini explore` and the lab's stored
sweep), so the folder has the lab's format (`results.csv`, `expert_load.csv`, `runs/*.json`,
`tokenizer.model`) and `grok_mini.explore.read_results` reads it. The arms are
`grok_mini.teach.why_moe.arms()`:

    moe           the toy as it is: 8 experts of width 176, top-2
    dense-active  one expert of width 352 (num_experts=1, widening_factor 4.125): the MoE's active parameters
    dense-total   one expert of width 1408 (widening_factor 16.5): the MoE's total parameters

Every arm trains on the same tokens with the same batches, schedule and seeds (the lab's
`SWEEP_TRAINING`: 100 steps of 8 windows × 64 tokens, held-out loss every 10 steps on 16 windows);
only the model differs. The tokenizer is the lab sweep's (`notebooks/data/lab_sweep/tokenizer.model`,
copied when present, so these tokens are the lab's; otherwise the runner trains one on the training
split as the lab's sweep did). Everything is seeded (model initialisation and batch order by TrainConfig.seed). A
finished run is not redone: delete `runs/` to train again. 2 min 11 s on the 2-core development CPU
(Python 3.11.7, jax 0.10.2, 10–22 s a run); the folder holds 0.8 MB.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from grok_mini.explore import SWEEP_TRAINING, run_sweep  # noqa: E402
from grok_mini.teach.why_moe import ARM_NAMES, arms  # noqa: E402

OUT = ROOT / "notebooks" / "data" / "12_why_moe"
LAB_TOKENIZER = ROOT / "notebooks" / "data" / "lab_sweep" / "tokenizer.model"
SEEDS = (0, 1, 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=SWEEP_TRAINING.steps, help="optimiser steps a run")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--arms", nargs="+", choices=ARM_NAMES, default=list(ARM_NAMES))
    args = parser.parse_args(argv)

    training = dataclasses.replace(SWEEP_TRAINING, steps=args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    if LAB_TOKENIZER.exists() and not (args.out / "tokenizer.model").exists():
        shutil.copy(LAB_TOKENIZER, args.out / "tokenizer.model")
    experiments = [e for e in arms() if e.name in args.arms]
    start = time.perf_counter()
    results = run_sweep(args.out, experiments, seeds=tuple(args.seeds), training=training)
    for result in results:
        heldout = result["history"]["heldout_loss"][-1]
        print(f"{result['experiment']:<13} seed {result['seed']}: held-out loss {heldout:.3f} "
              f"({result['total_params']:,} parameters, {result['active_params']:,} active; {result['wall_s']:.0f} s)")
    print(f"{len(results)} runs in {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
