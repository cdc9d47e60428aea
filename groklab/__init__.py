"""groklab: the science of grokking, from task generator to circuit.

    import groklab
    data = groklab.make_task("composition", entities=200, relations=20, out_degree=10, phi=9.0)
    summary = groklab.train("composition-small", out="runs/c1", steps=2000)
    run = groklab.load_run("runs/c1")
"""

import groklab.report as report  # a callable package: groklab.report(run) -> report.html

# The subpackage groklab.train shares its name with the API function groklab.train: import it
# first, so that binding the function below is the last word (a later `import groklab.train.x`
# finds the package in sys.modules and leaves the attribute alone).
import groklab.train as _train_package  # noqa: F401,E402
from groklab.api import analyses, analyze, load_config, load_run, make_task, train
from groklab.version import __version__  # noqa: E402,F401

__all__ = ["analyses", "analyze", "load_config", "load_run", "make_task", "report", "train"]
