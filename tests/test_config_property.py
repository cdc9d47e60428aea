"""Every key of every config group refuses invalid values at config validation.

For each key of ``train.*``, ``model.*`` and the composition task's ``task.*``, hypothesis draws
values that key must refuse (wrong types, zero or negative where positive is required,
out-of-range / NaN / infinite floats, unknown literals) and runs
``groklab train composition --set KEY=VALUE --out DIR``: exit code 2, exactly one line, no DIR.

``Run.start`` is replaced by a tripwire: a value that gets past config validation would
otherwise generate the default 2000-entity graph and train for minutes, and the contract is that
bad values fail before any data is generated.

Not drawn, because they are only invalid against the generated task: ``task.phi`` above the
graph's feasible maximum, ``model.d_vocab`` / ``model.n_ctx`` smaller than the task's vocabulary
or sequence, ``model.d_vocab_out`` that leaves out answer tokens. Those fail in ``Run.start``
(tested in tests/test_cli.py and tests/test_tasks.py).
"""

import string
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import TrainConfig
from groklab.models.config import ModelConfig
from groklab.tasks import TASKS
from groklab.tasks.composition import CompositionConfig
from groklab.train import Run

runner = CliRunner()

# ------------------------------------------------------------------ strategies

LETTERS = string.ascii_letters + "_-./:"
BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "t", "f", "y", "n", "1", "0"}


def _is_number_text(s: str) -> bool:
    try:  # "nan", "inf", "Infinity" parse as floats; drawn on purpose elsewhere
        float(s)
        return True
    except ValueError:
        return False


words = st.text(alphabet=LETTERS, max_size=8).filter(lambda s: not _is_number_text(s))
lists = st.lists(st.integers(-5, 5), max_size=3)
mappings = st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=3),
                           st.integers(), min_size=1, max_size=2)
fractional = st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda x: not float(x).is_integer())
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf"), "nan", "-inf"])


def not_a_number(none_ok: bool = False):
    junk = [words, lists, mappings, st.booleans()]
    return st.one_of(*junk, *([] if none_ok else [st.none()]))


def ints_at_most(high: int, none_ok: bool = False):
    return st.one_of(st.integers(max_value=high), fractional, not_a_number(none_ok))


pos_int = ints_at_most(0)
nonneg_int = ints_at_most(-1)


def floats_where(bad, none_ok: bool = False):
    """Finite floats for which ``bad(x)`` holds, plus NaN, infinities and non-numbers."""
    # Wrapped so hypothesis cannot turn `x < 0` into the bound max_value=0, which admits -0.0.
    return st.one_of(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: bad(x)),
                     non_finite, not_a_number(none_ok))


pos_float = floats_where(lambda x: x <= 0)
nonneg_float = floats_where(lambda x: x < 0)
unit_open = floats_where(lambda x: not 0 <= x < 1)  # [0, 1)
unit_closed = floats_where(lambda x: not 0 <= x <= 1)  # [0, 1]
derived_int = st.one_of(st.integers(max_value=0).filter(lambda v: v != -1), fractional,
                        not_a_number())  # -1 or a positive integer


def literal(field, none_ok: bool = False):
    allowed = {a for a in typing.get_args(field.annotation) if a is not None}
    allowed |= {x for a in typing.get_args(field.annotation) for x in typing.get_args(a)}
    return st.one_of(words.filter(lambda s: s not in allowed), st.integers(), st.floats(),
                     st.booleans(), lists, mappings, *([] if none_ok else [st.none()]))


boolean = st.one_of(words.filter(lambda s: s.lower() not in BOOL_WORDS),
                    st.integers().filter(lambda v: v not in (0, 1)),
                    st.floats().filter(lambda v: v not in (0.0, 1.0)), lists, mappings, st.none())
betas = st.one_of(
    st.tuples(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not 0 <= x < 1),
              st.floats(0, 0.999)).map(list),
    st.lists(st.floats(0, 0.9), min_size=0, max_size=4).filter(lambda v: len(v) != 2),
    st.lists(st.sampled_from([0.9, True, float("nan"), "x"]), min_size=2, max_size=2).filter(
        lambda v: v[1] != 0.9),
    st.floats(0, 0.9), words, mappings, st.none(),
)
device = st.one_of(words.filter(lambda s: s not in ("auto", "cpu", "mps", "cuda")
                                and not s.startswith("cuda:")),
                   st.sampled_from(["gpu", "cuda:x", "cuda:-1", "meta", "CPU", ""]),
                   st.integers(), st.floats(), st.booleans(), lists, mappings, st.none())
task_name = st.one_of(words.filter(lambda s: s not in TASKS), st.integers(), st.floats(),
                      st.booleans(), lists, mappings, st.none())

T, M, C = TrainConfig.model_fields, ModelConfig.model_fields, CompositionConfig.model_fields
D_MODEL, N_HEADS = M["d_model"].default, M["n_heads"].default
RELATIONS, OUT_DEGREE = C["relations"].default, C["out_degree"].default

INVALID = {
    "train.steps": pos_int,
    "train.batch_size": nonneg_int,
    "train.lr": pos_float,
    "train.weight_decay": nonneg_float,
    "train.betas": betas,
    "train.eps": pos_float,
    "train.warmup_steps": nonneg_int,
    "train.lr_schedule": literal(T["lr_schedule"]),
    "train.min_lr_ratio": unit_closed,
    "train.grad_clip": nonneg_float,
    "train.precision": literal(T["precision"]),
    "train.cuda_graph": boolean,
    "train.loss_dtype": literal(T["loss_dtype"]),
    "train.seed": st.one_of(nonneg_int, st.integers(min_value=2**63)),
    "train.device": device,
    "train.eval_every": pos_int,
    "train.eval_per_decade": nonneg_int,
    "train.eval_batch_size": pos_int,
    "train.train_probe_size": pos_int,
    "train.checkpoint_every": nonneg_int,
    "train.checkpoint_per_decade": nonneg_int,
    "train.resume_every": pos_int,
    "train.tensorboard": boolean,
    "train.wandb": boolean,
    "train.optimizer": literal(T["optimizer"]),
    "train.loss": literal(T["loss"]),
    "train.grokfast": literal(T["grokfast"]),
    "train.grokfast_alpha": unit_open,
    "train.grokfast_lamb": floats_where(lambda x: x < 0, none_ok=True),  # null: the default
    "train.grokfast_window": pos_int,
    "train.weight_decay_warmup_steps": nonneg_int,
    "train.fixed_weight_norm": boolean,
    "train.curriculum": literal(T["curriculum"]),
    "train.curriculum_steps": pos_int,
    "train.curriculum_start": floats_where(lambda x: not 0 < x <= 1),  # (0, 1]
    "model.architecture": literal(M["architecture"]),
    "model.n_layers": pos_int,
    # positive but not a multiple of n_heads is invalid too, as is n_heads not dividing d_model
    "model.d_model": st.one_of(pos_int, st.integers(1, 10**6).filter(lambda v: v % N_HEADS)),
    "model.n_heads": st.one_of(pos_int, st.integers(1, 10**6).filter(lambda v: D_MODEL % v)),
    "model.d_head": derived_int,
    "model.d_mlp": derived_int,
    "model.d_embed": derived_int,
    "model.d_vocab": derived_int,
    "model.d_vocab_out": derived_int,
    "model.n_ctx": derived_int,
    "model.d_input": derived_int,
    "model.act_fn": literal(M["act_fn"]),
    "model.normalization_type": literal(M["normalization_type"], none_ok=True),
    "model.tie_word_embeddings": boolean,
    "model.dropout": unit_open,
    "model.n_loops": pos_int,
    "model.init_mode": literal(M["init_mode"]),
    "model.initializer_range": nonneg_float,
    "model.init_scale": pos_float,
    "model.positional": literal(M["positional"]),
    "model.rotary_base": floats_where(lambda x: x <= 1),
    "model.abacus_max_offset": nonneg_int,
    # -1 (derived) or more than abacus_max_offset + 1 rows (the default offset: 99)
    "model.abacus_table": st.one_of(st.integers(max_value=M["abacus_max_offset"].default + 1)
                                    .filter(lambda v: v != -1), fractional, not_a_number()),
    "model.abacus_digits": st.one_of(words, mappings, st.integers(), st.none(),
                                     st.lists(words.filter(bool), min_size=1, max_size=2)),
    "model.abacus_offset": literal(M["abacus_offset"]),
    "model.abacus_init": literal(M["abacus_init"]),
    "model.abacus_learned": boolean,
    "model.abacus_zero_fraction": unit_open,
    "model.loop_injection": literal(M["loop_injection"]),
    "model.eval_loops": derived_int,  # -1 or at least n_loops (1)
    "model.order": literal(M["order"]),
    "model.order_prompt": literal(M["order_prompt"]),
    "task.name": task_name,
    "task.seed": nonneg_int,
    "task.entities": pos_int,
    "task.relations": st.one_of(pos_int, st.integers(1, OUT_DEGREE - 1)),  # < out_degree
    "task.out_degree": st.one_of(pos_int, st.integers(RELATIONS + 1, 10**9)),  # > relations
    "task.phi": nonneg_float,
    "task.ood_fraction": unit_open,
    "task.test_id_fraction": unit_open,
    "task.probe_size": pos_int,
}
# No key is skipped: every one has wrong types at least, so every key has invalid values.


def yaml_text(value) -> str:
    """The --set text that parses back (yaml.safe_load) to ``value``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n...\n").strip()


# ------------------------------------------------------------------ the property


class Accepted(Exception):
    """An invalid value got past config validation."""


@pytest.fixture(scope="module", autouse=True)
def tripwire():
    def start(cls, cfg, out, **kw):
        raise Accepted(f"config validation accepted it: {cfg.to_dict()}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Run, "start", classmethod(start))
        yield


def test_every_key_has_a_strategy():
    keys = ({f"train.{k}" for k in T} | {f"model.{k}" for k in M}
            | {f"task.{k}" for k in C})
    assert keys == set(INVALID), "add invalid-value strategies for new config keys"


@pytest.mark.parametrize("key", sorted(INVALID))
def test_invalid_value_is_one_line_exit_2(key):
    @settings(max_examples=12, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(value=INVALID[key])
    def check(value):
        raw = yaml_text(value)
        assert "\n" not in raw
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            result = runner.invoke(app, ["train", "composition", "--set", f"{key}={raw}",
                                         "--out", str(out)])
            assert not isinstance(result.exception, Accepted), f"{key}={raw} was accepted"
            lines = [ln for ln in result.output.splitlines() if ln.strip()]
            assert result.exit_code == 2, (f"{key}={raw}", result.exception, result.output)
            assert len(lines) == 1 and lines[0].startswith("groklab: error:"), result.output
            assert not out.exists()

    check()


@pytest.mark.parametrize("key, raw", [
    ("train.lr", ".nan"), ("train.lr", "inf"), ("train.eps", "0"), ("train.min_lr_ratio", "2"),
    ("train.grokfast_lamb", ".nan"), ("train.weight_decay", ".inf"), ("train.seed", "-1"),
    ("train.device", "gpu"), ("model.d_head", "0"), ("model.init_scale", "0"),
    ("model.initializer_range", "-0.1"), ("model.n_layers", "true"), ("task.name", "[1]"),
    ("task.entities", "0"),
])
def test_values_that_used_to_slip_through(key, raw, tmp_path):
    # Each of these passed validation once (NaN compares false; unchecked keys; YAML true as 1;
    # an unhashable task name) and crashed or trained nonsense later.
    result = runner.invoke(app, ["train", "composition", "--set", f"{key}={raw}",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, (result.exception, result.output)
    assert key.split(".")[1] in result.output or "task" in result.output
    assert not (tmp_path / "run").exists()


def test_valid_values_still_pass():
    # The tripwire proves the property test is not passing because everything is refused.
    result = runner.invoke(app, ["train", "composition", "--set", "train.lr=3e-3",
                                 "--set", "model.d_head=-1", "--set", "train.device=cpu",
                                 "--set", "train.grokfast_lamb=null", "--out", "never"])
    assert isinstance(result.exception, Accepted)
