"""Seeded synthetic tasks. Importing this package registers every task."""

from groklab.tasks import addition as _addition  # noqa: F401,E402
from groklab.tasks import comparison as _comparison  # noqa: F401,E402
from groklab.tasks import complex as _complex  # noqa: F401,E402

# Each module registers its tasks on import.
from groklab.tasks import composition as _composition  # noqa: F401,E402
from groklab.tasks import family as _family  # noqa: F401,E402
from groklab.tasks import markov as _markov  # noqa: F401,E402
from groklab.tasks import mnist1d as _mnist1d  # noqa: F401,E402
from groklab.tasks import modular as _modular  # noqa: F401,E402
from groklab.tasks import parity as _parity  # noqa: F401,E402
from groklab.tasks import stories as _stories  # noqa: F401,E402
from groklab.tasks import strings as _strings  # noqa: F401,E402
from groklab.tasks import teacher as _teacher  # noqa: F401,E402
from groklab.tasks.any_order import AnyOrder, objective_for
from groklab.tasks.base import TOKEN_TYPES, Split, TaskData, TaskError, Vocab
from groklab.tasks.objectives import IGNORE, OBJECTIVES, Objective
from groklab.tasks.registry import TASKS, TaskConfig, make_task, register, task_spec

__all__ = [
    "TOKEN_TYPES",
    "IGNORE",
    "OBJECTIVES",
    "Objective",
    "TASKS",
    "Split",
    "TaskConfig",
    "TaskData",
    "TaskError",
    "Vocab",
    "make_task",
    "register",
    "task_spec",
    "AnyOrder",
    "objective_for",
]
