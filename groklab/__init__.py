"""groklab: the science of grokking, from task generator to circuit.

    import groklab
    data = groklab.make_task("composition", entities=200, relations=20, out_degree=10, phi=9.0)
    summary = groklab.train("composition-small", out="runs/c1", steps=2000)
    run = groklab.load_run("runs/c1")
"""

from groklab.api import load_config, load_run, make_task, train

__version__ = "0.1.0"
__all__ = ["load_config", "load_run", "make_task", "train"]
