"""groklab: the science of grokking, from task generator to circuit.

    import groklab
    data = groklab.make_task("composition", entities=200, relations=20, out_degree=10, phi=9.0)
    summary = groklab.train("composition-small", out="runs/c1", steps=2000)
    run = groklab.load_run("runs/c1")
"""

import groklab.report as report  # a callable package: groklab.report(run) -> report.html
from groklab.api import analyses, analyze, load_config, load_run, make_task, train

__version__ = "0.1.0"
__all__ = ["analyses", "analyze", "load_config", "load_run", "make_task", "report", "train"]
