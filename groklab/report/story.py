"""A run's story in words, from its ``summary.json``: when it memorized, when (and whether) it
generalized in and out of distribution, and how long the wait was."""

from __future__ import annotations


def _n(step: int) -> str:
    return f"{step:,}"


def story(summary: dict) -> list[str]:
    """Sentences, in order: memorization, ID generalization, OOD, the run itself."""
    if not summary:
        return ["The run has not logged an evaluation yet."]
    out = []
    mem = summary.get("memorization_step")
    best = summary.get("best", {})
    final = summary.get("final", {})
    fit = summary.get("thresholds", {}).get("train", {}).get("0.95")
    if mem is None and fit is not None:
        # Heavy weight decay can hold training accuracy just under 0.99 for good; the step where
        # it passed 0.95 is then the memorization step the delay is measured from.
        out.append(f"The model fit 95% of its training set at step {_n(fit)} but never reached "
                   f"0.99 (peak {best.get('train', 0.0):.3f}).")
        mem = fit
    elif mem is None:
        out.append(f"The model has not memorized its training set: train accuracy peaked at "
                   f"{best.get('train', 0.0):.3f} (memorization means \u2265 0.99).")
    elif summary.get("memorization_split", "train") != "train":
        split = summary["memorization_split"]
        whole = summary.get("thresholds", {}).get("train", {}).get("0.99")
        rest = (f"the whole train split, with its OOD atomic facts, at step {_n(whole)}" if whole
                else f"the whole train split, with its OOD atomic facts, peaked at "
                     f"{best.get('train', 0.0):.3f}")
        out.append(f"The model memorized its trained facts ({split} \u2265 0.99) at step "
                   f"{_n(mem)}; {rest}.")
    else:
        out.append(f"The model memorized its training set (train accuracy \u2265 0.99) at step "
                   f"{_n(mem)}.")
    for role, words in (("id", "in distribution"), ("ood", "out of distribution")):
        split = summary.get(f"{role}_split")
        if not split:
            continue
        th = summary.get("thresholds", {}).get(split, {})
        step = th.get("0.95")
        if step is None:
            half = th.get("0.5")
            reached = f"; it passed 0.5 at step {_n(half)}" if half else ""
            out.append(f"It has not generalized {words} ({split}): best accuracy "
                       f"{best.get(split, 0.0):.3f}, final {final.get(split, 0.0):.3f}{reached}.")
            continue
        if mem:
            ratio = step / mem
            what = "memorization" if mem == summary.get("memorization_step") else "95%-fit"
            when = (f", {ratio:.1f}\u00d7 the {what} step" if ratio >= 1.05 else
                    ", together with memorization" if ratio > 0.95 else
                    ", before it memorized")
        else:
            when = ""
        fin = final.get(split, 0.0) or 0.0
        held = "" if fin >= 0.95 else " (it did not stay there)"
        out.append(f"It generalized {words} ({split} \u2265 0.95) at step {_n(step)}{when}; "
                   f"final accuracy {fin:.3f}{held}.")
    steps, wall = summary.get("steps"), summary.get("wall_time_s")
    if steps is not None:
        status = summary.get("status", "completed")
        verb = {"running": "has trained", "diverged": "diverged after"}.get(status, "trained")
        rate = summary.get("steps_per_s")
        speed = f" ({rate:.1f} steps/s)" if rate else ""
        out.append(f"The run {verb} {_n(steps)} steps in {wall or 0:,.0f} s{speed} on "
                   f"{summary.get('device', 'an unknown device')}.")
    return out
