"""Model configuration with TransformerLens field names.

``-1`` is TransformerLens's sentinel for "derive it": ``d_head = d_model // n_heads``,
``d_mlp = 4 * d_model``; ``d_vocab`` and ``n_ctx`` are filled from the task, ``d_vocab_out``
from ``d_vocab``. A run's ``config.yaml`` always holds the resolved numbers.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from groklab.validation import finite, no_bool_numbers

CONTINUOUS = ("dense", "cnn", "gru")  # architectures that read continuous inputs
ATTENTION = ("transformer", "aaren", "sigma_gpt")  # token models with heads and W_E


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # pair_mlp: the PAIR one-layer MLP on (a, b) with a factored, tied embedding (models/mlp.py);
    # mlp: a one-hidden-layer MLP on the concatenated one-hot tokens (sparse parity)
    # dense: an MLP on continuous inputs (flattened), n_layers hidden layers of width d_mlp
    # (n_layers 0: logistic regression), for the ``classify`` objective (models/dense.py);
    # cnn, gru: n_layers Conv1d layers of d_model channels / bidirectional GRU layers of hidden
    # size d_model on continuous sequences (models/sequence.py, MNIST-1D's baselines)
    # aaren: attention with a learned query as a prefix scan / RNN (models/aaren.py);
    # sigma_gpt: a transformer trained in a random order per row (models/sigma_gpt.py)
    architecture: Literal["transformer", "pair_mlp", "mlp", "dense", "cnn", "gru", "aaren",
                          "sigma_gpt"] = "transformer"
    n_layers: int = 4  # distinct blocks; with n_loops > 1 the stack runs n_loops times
    d_model: int = 128
    n_heads: int = 4
    d_head: int = -1
    d_mlp: int = -1  # also the hidden width of pair_mlp and mlp
    d_embed: int = -1  # pair_mlp: width of the factored embedding W_E (-1: d_model)
    d_vocab: int = -1
    d_vocab_out: int = -1
    n_ctx: int = -1
    d_input: int = -1  # dense, cnn, gru: input features per row (from the task)
    act_fn: Literal["gelu_new", "gelu", "relu"] = "gelu_new"
    normalization_type: Literal["LN"] | None = "LN"  # None: the no-LayerNorm model of Nanda et al.
    tie_word_embeddings: bool = True  # GPT-2 default, as in Wang et al.
    dropout: float = 0.0  # GPT-2 uses 0.1 (resid, embed, attn); CPU presets train without
    n_loops: int = 1  # cross-layer parameter sharing: Wang et al. App. E.2 loops 4 blocks twice
    init_mode: Literal["gpt2", "nanda"] = "gpt2"
    initializer_range: float = 0.02  # std of N(0, .) in gpt2 init
    init_scale: float = 1.0  # Omnigrok's alpha: every initial parameter multiplied by it
    # Positional scheme (models/positions.py): learned absolute rows, none (NoPE), rotary, or
    # Abacus (an index per digit within its number, with a random training offset).
    positional: Literal["learned", "none", "rotary", "abacus"] = "learned"
    rotary_base: float = 10000.0
    abacus_max_offset: int = 99  # training offset k ~ U{0..this} per forward pass (reference: 99)
    abacus_table: int = -1  # rows of the Abacus table (-1: n_ctx + abacus_max_offset + 1)
    abacus_digits: list[int] = []  # token ids that are digits; for_task: the task's numbers
    # batch: one offset per forward pass (the reference's); row: one per row (every row of a
    # step trains a different stretch of the table)
    abacus_offset: Literal["batch", "row"] = "batch"
    # normal: the table drawn like every matrix (the reference's); sinusoidal: digit rows start
    # as sines and cosines of the index (still learned; a deviation, models/positions.py)
    abacus_init: Literal["normal", "sinusoidal"] = "normal"
    # false: the sinusoidal table is frozen, its frequencies fixed (not set by the table's
    # size), so every index has the same geometry, trained or not (models/positions.py)
    abacus_learned: bool = True
    # an extra share of training rows (or passes) with offset 0, evaluation's, on top of the
    # uniform draw: P(k = 0) = p + (1 - p) / (abacus_max_offset + 1); 0: the uniform draw only
    abacus_zero_fraction: float = 0.0
    # Looped depth: before every pass of the stack after the first, the embedded input is
    # added to the residual stream again ("add", McLeish et al.'s input injection) or not.
    loop_injection: Literal["none", "add"] = "none"
    eval_loops: int = -1  # passes of the stack in eval mode (-1: n_loops); more for longer inputs
    # sigma_gpt: the order of each training row's answer (left_to_right: the same model trained
    # as a plain GPT) and whether the prompt is read in a random order too (tasks/any_order.py)
    order: Literal["random", "left_to_right"] = "random"
    order_prompt: Literal["shuffle", "keep"] = "shuffle"

    _no_bools = field_validator("*", mode="before")(no_bool_numbers)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        for f in ("d_model", "n_heads", "n_loops"):
            if getattr(self, f) <= 0:
                raise ValueError(f"model.{f} must be a positive integer, got {getattr(self, f)}")
        if self.n_layers < (0 if self.architecture == "dense" else 1):
            raise ValueError(f"model.n_layers must be >= 1 (>= 0 for dense), got {self.n_layers}")
        for f in ("d_head", "d_mlp", "d_embed", "d_vocab", "d_vocab_out", "n_ctx", "d_input"):
            if getattr(self, f) != -1 and getattr(self, f) <= 0:
                raise ValueError(f"model.{f} must be a positive integer (or -1: derived), got "
                                 f"{getattr(self, f)}")
        heads = self.architecture in ATTENTION  # the others have no attention heads
        if heads and self.d_head == -1 and self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model {self.d_model} is not divisible by model.n_heads {self.n_heads}; "
                "choose n_heads dividing d_model or set model.d_head"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not (finite(self.initializer_range) and self.initializer_range >= 0):
            raise ValueError(f"model.initializer_range must be >= 0 and finite, got "
                             f"{self.initializer_range}")
        if not (finite(self.init_scale) and self.init_scale > 0):
            raise ValueError(f"model.init_scale must be > 0 and finite, got {self.init_scale}")
        if self.eval_loops != -1 and self.eval_loops < self.n_loops:
            raise ValueError(f"model.eval_loops {self.eval_loops} is below model.n_loops "
                             f"{self.n_loops}; use -1 (= n_loops) or a value >= n_loops")
        if self.abacus_max_offset < 0:
            raise ValueError(f"model.abacus_max_offset must be >= 0, got {self.abacus_max_offset}")
        if self.abacus_table != -1 and self.abacus_table <= self.abacus_max_offset + 1:
            raise ValueError(f"model.abacus_table {self.abacus_table} leaves no row for a digit "
                             f"after model.abacus_max_offset {self.abacus_max_offset}; need "
                             "abacus_table > abacus_max_offset + 1 (or -1: derived)")
        if not (finite(self.abacus_zero_fraction) and 0.0 <= self.abacus_zero_fraction < 1.0):
            raise ValueError(f"model.abacus_zero_fraction must be in [0, 1), got "
                             f"{self.abacus_zero_fraction}")
        if not self.abacus_learned and self.abacus_init != "sinusoidal":
            raise ValueError("model.abacus_learned=false freezes the sinusoidal table: it needs "
                             f"model.abacus_init=sinusoidal, got {self.abacus_init}")
        if not (finite(self.rotary_base) and self.rotary_base > 1):
            raise ValueError(f"model.rotary_base must be > 1 and finite, got {self.rotary_base}")
        if self.architecture == "sigma_gpt" and self.d_model % 2:
            raise ValueError(f"model.d_model {self.d_model} is odd; sigma_gpt splits it into two "
                             "position halves: choose an even d_model")
        if self.architecture == "aaren" and self.n_loops != 1:
            raise ValueError("model.n_loops must be 1 for aaren (its blocks are not shared)")
        if self.architecture in ("aaren", "sigma_gpt") and self.positional != "learned":
            raise ValueError(f"model.positional={self.positional} is not implemented for "
                             f"{self.architecture}; it uses learned absolute positions (learned)")
        if self.architecture in ("aaren", "sigma_gpt") and (
                self.loop_injection != "none" or self.eval_loops not in (-1, self.n_loops)):
            raise ValueError(f"model.loop_injection and model.eval_loops are for transformer; "
                             f"{self.architecture} needs loop_injection none, eval_loops -1")
        return self

    def resolved(self, d_vocab: int, n_ctx: int) -> "ModelConfig":
        """A copy with every sentinel replaced by its value."""
        d = self.model_dump()
        d["d_vocab"] = d_vocab if self.d_vocab == -1 else self.d_vocab
        d["d_vocab_out"] = d["d_vocab"] if self.d_vocab_out == -1 else self.d_vocab_out
        d["n_ctx"] = n_ctx if self.n_ctx == -1 else self.n_ctx
        d["d_head"] = self.d_model // self.n_heads if self.d_head == -1 else self.d_head
        d["d_mlp"] = 4 * self.d_model if self.d_mlp == -1 else self.d_mlp
        d["d_embed"] = self.d_model if self.d_embed == -1 else self.d_embed
        d["eval_loops"] = self.n_loops if self.eval_loops == -1 else self.eval_loops
        if self.abacus_table == -1:  # no run of digits is longer than the context
            d["abacus_table"] = d["n_ctx"] + self.abacus_max_offset + 1
        tied = self.architecture in ATTENTION and self.tie_word_embeddings
        if tied and d["d_vocab_out"] != d["d_vocab"]:
            raise ValueError("model.tie_word_embeddings needs d_vocab_out == d_vocab")
        if d["n_ctx"] < n_ctx:
            raise ValueError(f"model.n_ctx {d['n_ctx']} is shorter than the task's {n_ctx} tokens")
        return ModelConfig(**d)

    def for_task(self, data) -> "ModelConfig":
        """Resolved for a task's data (``groklab.tasks.TaskData``): its vocabulary, sequence
        length or input shape, and a check that every target is a logit the model has."""
        if data.continuous:
            if self.architecture not in CONTINUOUS:
                raise ValueError(f"task '{data.name}' has continuous inputs: set "
                                 "model.architecture=dense, cnn or gru (transformers read tokens)")
            d = self.model_dump()
            d["d_input"] = math.prod(data.input_shape)
            d["d_vocab"] = d["d_vocab_out"] = data.objective.n_classes
            # cnn and gru read [channels, length] (a flat row is one channel): n_ctx = length
            n_ctx = 1 if self.architecture == "dense" else data.input_shape[-1]
            d["n_ctx"], d["tie_word_embeddings"] = n_ctx, False
            return ModelConfig(**d).resolved(d["d_vocab"], n_ctx)
        if self.architecture in CONTINUOUS:
            raise ValueError(f"model.architecture={self.architecture} needs continuous inputs; "
                             f"task '{data.name}' has tokens (use transformer, mlp or pair_mlp)")
        cfg = self.resolved(len(data.vocab), data.seq_len)
        if cfg.positional == "abacus":
            from groklab.models.positions import for_abacus

            cfg = for_abacus(cfg, data)
        top = max(int(s.targets.max()) for s in (data.train, *data.probes.values()) if len(s))
        if top >= cfg.d_vocab_out:
            raise ValueError(
                f"model.d_vocab_out {cfg.d_vocab_out} leaves out answer token {top} of task "
                f"'{data.name}'; set model.d_vocab_out >= {top + 1} (or -1 for the whole "
                "vocabulary)")
        return cfg

    @property
    def n_effective_layers(self) -> int:
        """Blocks with their own hook points: the deeper of the training and eval-mode stacks."""
        return self.n_layers * max(self.n_loops, self.eval_loops)

    def depth(self, training: bool) -> int:
        """Blocks a forward pass runs: n_loops passes in training, eval_loops in eval mode."""
        loops = self.n_loops if training or self.eval_loops == -1 else self.eval_loops
        return self.n_layers * loops
