"""Settings shared by the studies' scales."""

from __future__ import annotations

# The test suite's training: a few steps, two evaluations and checkpoints, no log-spaced extras.
TINY_TRAIN = ("train.steps=40", "train.eval_every=20", "train.checkpoint_every=20",
              "train.resume_every=20", "train.eval_per_decade=0", "train.checkpoint_per_decade=0")

# The test suite's composition: a graph small enough to train in seconds (phi at most ~2.9).
TINY_COMPOSITION = ("task.entities=40", "task.relations=6", "task.out_degree=4",
                    "task.ood_fraction=0.2", "task.test_id_fraction=0.1", "task.phi=2.0",
                    "model.n_layers=2", "model.d_model=32", "model.n_heads=2",
                    "train.batch_size=128", *TINY_TRAIN)


def seeded(s: int) -> tuple[str, ...]:
    """Another seed: another graph or split (task.seed) and another init and batch order."""
    return (f"task.seed={s}", f"train.seed={s}")
