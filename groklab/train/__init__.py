"""Training: one schedule loop (loop.py) driving a step (steps.py: eager; cuda_graph.py; batched.py)."""

from groklab.rundir import RunDir, RunDirError
from groklab.train.loop import Interrupted, Run, TrainingDiverged, resume, train, train_runs

__all__ = ["Interrupted", "Run", "RunDir", "RunDirError", "TrainingDiverged", "resume", "train",
           "train_runs"]
