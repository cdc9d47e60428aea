"""Training: the loop, its schedules, the run directory and the grokking summary."""

from groklab.train.loop import Run, TrainingDiverged, evaluate, resume, train
from groklab.train.rundir import RunDir, RunDirError

__all__ = ["Run", "RunDir", "RunDirError", "TrainingDiverged", "evaluate", "resume", "train"]
