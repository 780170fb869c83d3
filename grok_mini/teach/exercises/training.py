"""Notebook 07 (training): the next-token loss, and the learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np
import optax
import optax as _optax

from grok_mini.teach.exercises import ExerciseFailed, call, expect_close, run_check

__all__ = ["check_next_token_loss", "check_learning_rate", "SCHEDULES"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "next_token_loss": (
        "The loss at each position is minus the log of the probability the model gave the right next "
        "token.",
        "Take a numerically stable log-softmax over the vocabulary axis (shift by the maximum first), in "
        "natural log.",
        "Average over every position of every sequence; do not sum.",
    ),
    "learning_rate": (
        "Two phases: a linear warm-up from zero to the peak, then a decay over the rest of the run.",
        "The decay follows half a cosine from the peak down to a floor, and stays at the floor after the "
        "last step.",
        "The floor is the peak times final_fraction, not zero; at the end of the warm-up the rate is "
        "exactly the peak.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"next_token_loss": (_optax.softmax_cross_entropy_with_integer_labels,),
          "learning_rate": (_optax.warmup_cosine_decay_schedule,)}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def check_next_token_loss(next_token_loss) -> bool:
    """next_token_loss(logits [B, T, V], targets [B, T]) → mean cross-entropy in nats (one number)."""
    rng = np.random.default_rng(10)

    def check():
        for scale, shape in ((1.0, (2, 5, 11)), (60.0, (3, 4, 7))):  # ×60: large logits, where exp overflows float32
            logits = (rng.standard_normal(shape) * scale).astype(np.float32)
            targets = rng.integers(0, shape[-1], shape[:2])
            got = call(next_token_loss, logits.copy(), targets.copy())
            try:
                got = np.asarray(got, np.float64).reshape(())
            except (TypeError, ValueError):
                raise ExerciseFailed(f"next_token_loss should return one number, got {type(got).__name__} "
                                     f"of shape {np.shape(got)}") from None
            log_probs = _log_softmax(logits.astype(np.float64))
            picked = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]  # [B, T]
            expected = -picked.mean()
            shifted = -np.take_along_axis(log_probs[:, :-1], targets[:, 1:, None], -1).mean()
            mistakes = [
                (-picked.sum(), "average over the B·T positions (the loss is per token), do not sum."),
                (expected / np.log(2), "use the natural logarithm (nats): log2 gives bits."),
                (-np.take_along_axis(logits.astype(np.float64), targets[..., None], -1).mean(),
                 "the loss is −log softmax(logits)[target], not −logits[target]: subtract logsumexp(logits)."),
                (shifted, "the targets are already aligned with the logits (targets[:, t] is what logits[:, t] "
                          "predicts): do not shift them again."),
                (-picked.mean(0).sum(), "average over both the batch and the positions."),
            ]
            if not math.isfinite(float(got)):
                raise ExerciseFailed(f"next_token_loss(logits {list(shape)} ×{scale:g}) is {float(got)}: exp of a "
                                     "large logit overflows; use a numerically stable log-softmax "
                                     "(jax.nn.log_softmax, or subtract the maximum logit first).")
            expect_close(got, np.array(expected), what=f"next_token_loss(logits {list(shape)} ×{scale:g})",
                         rtol=1e-4, atol=1e-5, mistakes=mistakes)
        return "random logits, also large ones (a stable log-softmax), targets aligned with the logits"

    return run_check("next_token_loss", check, answer=next_token_loss,
                     hints=HINTS["next_token_loss"], refuse=REFUSE["next_token_loss"])


# (peak, warmup steps, total steps, final fraction): grok-mini's defaults and two others.
SCHEDULES = [(1e-2, 12, 120, 0.1), (3e-4, 100, 1000, 0.0), (1.0, 1, 10, 0.5)]


def check_learning_rate(learning_rate) -> bool:
    """learning_rate(step, peak, warmup, total, final_fraction) → linear warmup from 0, then cosine decay."""

    def check():
        for peak, warmup, total, final in SCHEDULES:
            schedule = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, peak * final)
            steps = np.unique(np.linspace(0, total + 5, 40).astype(int).tolist() + [0, warmup, total])
            got = np.array([float(call(learning_rate, int(s), peak, warmup, total, final)) for s in steps])
            expected = np.array([float(schedule(s)) for s in steps])
            progress = np.clip((steps - warmup) / max(total - warmup, 1), 0, 1)
            cosine = 0.5 * (1 + np.cos(np.pi * progress))
            warm = np.where(steps < warmup, peak * steps / warmup, 0)
            mistakes = [
                (np.where(steps < warmup, warm, peak * cosine),
                 "the cosine decays to final_fraction · peak, not to 0: lr = end + (peak − end)·½(1 + cos(π·p))."),
                (np.where(steps < warmup, warm, peak * (1 - (1 - final) * progress)),
                 "after the warmup the decay follows a cosine, not a straight line."),
                (np.where(steps < warmup, peak, expected), "warm up linearly from 0 to peak over the first "
                                                           "`warmup` steps."),
                (np.where(steps < warmup, warm, peak * final + (peak - peak * final) * 0.5 * (1 + np.cos(
                    np.pi * np.clip(steps / total, 0, 1)))),
                 "the cosine starts after the warmup: progress = (step − warmup) / (total − warmup)."),
            ]
            expect_close(got, expected, what=f"learning_rate(step, peak={peak:g}, warmup={warmup}, total={total}, "
                         f"final_fraction={final:g}) at steps {steps.tolist()[:4]}…", rtol=1e-4,
                         atol=1e-6 * peak, mistakes=mistakes)
        return "3 schedules, warmup, cosine and the steps past the end, as optax.warmup_cosine_decay_schedule"

    return run_check("learning_rate", check, answer=learning_rate,
                     hints=HINTS["learning_rate"], refuse=REFUSE["learning_rate"])
