"""groklab models as Hugging Face ``transformers`` GPT-2 directories, and back.

groklab's :class:`HookedTransformer` is GPT-2's architecture under TransformerLens names (pre-LN,
LayerNorm eps 1e-5, learned positions, attention scaled by 1/sqrt(d_head), ``gelu_new``), so a
model maps onto ``GPT2LMHeadModel`` weight for weight:

    W_E                      transformer.wte.weight          [d_vocab, d_model]
    W_pos                    transformer.wpe.weight          [n_ctx, d_model]
    blocks.i.ln1.w / b       transformer.h.i.ln_1.weight / bias
    blocks.i.attn.W_Q|K|V    transformer.h.i.attn.c_attn.weight   [d_model, 3 d_model]  (Conv1D:
                             x @ W; columns = Q heads, then K heads, then V heads)
    blocks.i.attn.W_O        transformer.h.i.attn.c_proj.weight   [d_model, d_model]
    blocks.i.ln2             transformer.h.i.ln_2
    blocks.i.mlp.W_in        transformer.h.i.mlp.c_fc.weight      [d_model, d_mlp]
    blocks.i.mlp.W_out       transformer.h.i.mlp.c_proj.weight    [d_mlp, d_model]
    ln_final                 transformer.ln_f
    W_U                      lm_head.weight = W_U.T (tied to wte unless tie_word_embeddings=False)

What GPT-2 cannot express is refused with a one-line :class:`ExportError`: cross-layer
parameter sharing (``n_loops`` > 1), no LayerNorm, ``n_heads * d_head != d_model``, and an
untied unembedding with a nonzero bias (GPT-2's ``lm_head`` has none).

The tokenizer is a ``tokenizers`` WordLevel model over the task's vocabulary, split on
whitespace: ``tok("<e_5> <r_3> <r_7>")`` gives the ids groklab uses. ``load_hf`` reads a GPT-2
directory back into a :class:`HookedTransformer` without needing ``transformers``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from groklab.models.config import ModelConfig
from groklab.models.transformer import HookedTransformer

ACT_TO_HF = {"gelu_new": "gelu_new", "gelu": "gelu", "relu": "relu"}
HF_TO_ACT = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
LN_EPS = 1e-5  # groklab.models.transformer.LayerNorm


class ExportError(ValueError):
    """A model that GPT-2 cannot express, or a missing library (one line)."""


# ----------------------------------------------------------------------------- weights


def check_exportable(model: HookedTransformer) -> None:
    cfg = model.cfg
    if cfg.architecture != "transformer" or not isinstance(model, HookedTransformer):
        raise ExportError(f"only transformer models export to GPT-2; this model's "
                          f"model.architecture is '{cfg.architecture}'")
    if cfg.n_loops > 1:
        raise ExportError(f"model.n_loops={cfg.n_loops} shares parameters across layers, which "
                          "GPT-2 cannot express; export a model with model.n_loops=1")
    if cfg.normalization_type != "LN":
        raise ExportError("model.normalization_type=None has no LayerNorm; GPT-2 always has one")
    if cfg.positional != "learned":
        raise ExportError(f"model.positional={cfg.positional}: GPT-2 has learned absolute "
                          "positions only; export a model with model.positional=learned")
    if cfg.n_heads * cfg.d_head != cfg.d_model:
        raise ExportError(f"GPT-2 needs n_heads * d_head == d_model; this model has "
                          f"{cfg.n_heads} x {cfg.d_head} != {cfg.d_model}")
    if cfg.d_vocab_out != cfg.d_vocab:
        raise ExportError(f"GPT-2 needs d_vocab_out == d_vocab; this model has "
                          f"{cfg.d_vocab_out} != {cfg.d_vocab}")
    if not cfg.tie_word_embeddings and bool(model.b_U.detach().abs().max() > 0):
        raise ExportError("this model's untied unembedding has a bias (max |b_U| = "
                          f"{float(model.b_U.detach().abs().max()):.3g}), which GPT-2's lm_head "
                          "cannot hold")


def to_gpt2_state_dict(model: HookedTransformer) -> dict[str, torch.Tensor]:
    """The model's weights under GPT2LMHeadModel names (see the module docstring)."""
    check_exportable(model)
    cfg = model.cfg
    d = cfg.d_model
    sd = {"transformer.wte.weight": model.W_E, "transformer.wpe.weight": model.W_pos}
    for i, blk in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        a = blk.attn
        sd[p + "ln_1.weight"], sd[p + "ln_1.bias"] = blk.ln1.w, blk.ln1.b
        sd[p + "attn.c_attn.weight"] = torch.cat([a.W_Q, a.W_K, a.W_V]).permute(1, 0, 2) \
            .reshape(d, 3 * d)
        sd[p + "attn.c_attn.bias"] = torch.cat([a.b_Q, a.b_K, a.b_V]).reshape(3 * d)
        sd[p + "attn.c_proj.weight"] = a.W_O.reshape(d, d)
        sd[p + "attn.c_proj.bias"] = a.b_O
        sd[p + "ln_2.weight"], sd[p + "ln_2.bias"] = blk.ln2.w, blk.ln2.b
        sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = blk.mlp.W_in, blk.mlp.b_in
        sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = blk.mlp.W_out, blk.mlp.b_out
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = model.ln_final.w, model.ln_final.b
    if not cfg.tie_word_embeddings:
        sd["lm_head.weight"] = model.W_U_param.T
    return {k: v.detach().float().cpu().contiguous() for k, v in sd.items()}


def gpt2_config(cfg: ModelConfig) -> dict:
    """GPT2Config fields for a groklab model config."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.d_vocab,
        "n_positions": cfg.n_ctx,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_mlp,
        "activation_function": ACT_TO_HF[cfg.act_fn],
        "layer_norm_epsilon": LN_EPS,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "initializer_range": cfg.initializer_range,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": None,
        "eos_token_id": None,
        "use_cache": True,
    }


# ----------------------------------------------------------------------------- export


def _require_transformers():
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise ExportError("export --format hf needs transformers: pip install 'groklab[hf]'") \
            from None


def write_tokenizer(vocab, out_dir: Path) -> None:
    """A WordLevel tokenizer over the task tokens, split on whitespace, saved the HF way."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate(vocab.tokens)}
    special = [t for t, ty in zip(vocab.tokens, vocab.types) if ty == "special"]
    unk = "<unk>" if "<unk>" in ids else None
    tok = Tokenizer(WordLevel(ids, unk_token=unk) if unk else WordLevel(ids))
    tok.pre_tokenizer = WhitespaceSplit()
    kwargs = {"tokenizer_object": tok, "model_max_length": None}
    if "<pad>" in ids:
        kwargs["pad_token"] = "<pad>"
    if unk:
        kwargs["unk_token"] = unk
    fast = PreTrainedTokenizerFast(**kwargs)
    if special:
        fast.add_special_tokens({"additional_special_tokens": [t for t in special
                                                               if t not in ("<pad>", "<unk>")]})
    fast.save_pretrained(str(out_dir))


def export_model(model: HookedTransformer, vocab, out_dir: str | Path, *,
                 extra: dict | None = None) -> Path:
    """Write ``model`` (+ a tokenizer over ``vocab``) as a transformers GPT-2 directory.

    Built under a temporary name beside ``out_dir`` and renamed at the end: an interrupted
    export leaves nothing behind."""
    check_exportable(model)
    _require_transformers()
    from transformers import GPT2Config

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"--out '{out_dir}' exists and is not an empty directory; "
                          "choose a new --out")
    if len(vocab) != model.cfg.d_vocab:
        raise ExportError(f"the vocabulary has {len(vocab)} tokens but the model "
                          f"{model.cfg.d_vocab}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        fields = gpt2_config(model.cfg)
        GPT2Config(**{k: v for k, v in fields.items() if k != "model_type"}).save_pretrained(
            str(tmp))
        save_file(to_gpt2_state_dict(model), str(tmp / "model.safetensors"), {"format": "pt"})
        write_tokenizer(vocab, tmp)
        info = {"exported_by": "groklab", "token_types": vocab.types, **(extra or {})}
        (tmp / "groklab.json").write_text(json.dumps(info, indent=1) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():  # some writers create 0600 files; publish ordinary ones
            os.chmod(f, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_hf(run, out_dir: str | Path, *, step: int | None = None) -> Path:
    """Export a run's model (last checkpoint unless ``step``) to ``out_dir``."""
    from groklab.rundir import LoadedRun, load_run

    run = run if isinstance(run, LoadedRun) else load_run(run)
    cfg = run.config.model
    if cfg.architecture != "transformer":
        raise ExportError(f"only transformer models export to GPT-2; this run's "
                          f"model.architecture is '{cfg.architecture}'")
    if cfg.n_loops > 1:  # refuse before regenerating the task
        raise ExportError(f"model.n_loops={cfg.n_loops} shares parameters across layers, which "
                          "GPT-2 cannot express; export a run with model.n_loops=1")
    steps = run.checkpoint_steps
    if not steps:
        raise ExportError(f"no checkpoints in '{run.path}'")
    if step is not None and step not in steps:
        raise ExportError(f"no checkpoint at step {step} in '{run.path}'; have {steps}")
    step = steps[-1] if step is None else step
    model = run.model(step)
    extra = {"run": str(Path(run.path).resolve()), "step": step,
             "task": run.config.task.model_dump(mode="json")}
    return export_model(model, run.task.vocab, out_dir, extra=extra)


# ----------------------------------------------------------------------------- load


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    single = path / "model.safetensors"
    if single.exists():
        sd = load_file(str(single))
    else:
        index = path / "model.safetensors.index.json"
        if not index.exists():
            raise ExportError(f"'{path}' has no model.safetensors (nor an index of shards)")
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        sd = {}
        for f in files:
            sd.update(load_file(str(path / f)))
    # GPT2LMHeadModel saves "transformer.*"; a bare GPT2Model saves without the prefix.
    return {(k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"): v
            for k, v in sd.items()}


def load_hf(path: str | Path) -> HookedTransformer:
    """A transformers GPT-2 directory (config.json + safetensors) as a HookedTransformer, in
    eval mode; needs only groklab's own dependencies."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise ExportError(f"'{path}' is not a Hugging Face model directory (no config.json)")
    c = json.loads(cfg_path.read_text())
    if c.get("model_type") != "gpt2":
        raise ExportError(f"'{path}' holds a '{c.get('model_type')}' model; load_hf reads gpt2")
    act = c.get("activation_function", "gelu_new")
    if act not in HF_TO_ACT:
        raise ExportError(f"activation '{act}' is not one groklab has ({', '.join(HF_TO_ACT)})")
    if abs(c.get("layer_norm_epsilon", LN_EPS) - LN_EPS) > 1e-12:
        raise ExportError(f"layer_norm_epsilon {c['layer_norm_epsilon']} differs from groklab's "
                          f"{LN_EPS}")
    if c.get("scale_attn_by_inverse_layer_idx") or not c.get("scale_attn_weights", True):
        raise ExportError("only GPT-2 attention scaled by 1/sqrt(d_head) is supported")
    d, h = c["n_embd"], c["n_head"]
    cfg = ModelConfig(
        n_layers=c["n_layer"], d_model=d, n_heads=h, d_head=d // h,
        d_mlp=c.get("n_inner") or 4 * d, d_vocab=c["vocab_size"], d_vocab_out=c["vocab_size"],
        n_ctx=c["n_positions"], act_fn=HF_TO_ACT[act], normalization_type="LN",
        tie_word_embeddings=c.get("tie_word_embeddings", True),
        dropout=c.get("resid_pdrop", 0.0), initializer_range=c.get("initializer_range", 0.02),
    )
    sd = _read_weights(path)
    model = HookedTransformer(cfg)
    dh = d // h

    def heads(w: torch.Tensor) -> torch.Tensor:  # [d, h*dh] -> [h, d, dh]
        return w.reshape(d, h, dh).permute(1, 0, 2)

    ours = {"W_E": sd["transformer.wte.weight"], "W_pos": sd["transformer.wpe.weight"],
            "ln_final.w": sd["transformer.ln_f.weight"], "ln_final.b": sd["transformer.ln_f.bias"]}
    for i in range(cfg.n_layers):
        p, q = f"transformer.h.{i}.", f"blocks.{i}."
        W = sd[p + "attn.c_attn.weight"]
        b = sd[p + "attn.c_attn.bias"]
        ours.update({
            q + "ln1.w": sd[p + "ln_1.weight"], q + "ln1.b": sd[p + "ln_1.bias"],
            q + "attn.W_Q": heads(W[:, :d]), q + "attn.W_K": heads(W[:, d:2 * d]),
            q + "attn.W_V": heads(W[:, 2 * d:]),
            q + "attn.b_Q": b[:d].reshape(h, dh), q + "attn.b_K": b[d:2 * d].reshape(h, dh),
            q + "attn.b_V": b[2 * d:].reshape(h, dh),
            q + "attn.W_O": sd[p + "attn.c_proj.weight"].reshape(h, dh, d),
            q + "attn.b_O": sd[p + "attn.c_proj.bias"],
            q + "ln2.w": sd[p + "ln_2.weight"], q + "ln2.b": sd[p + "ln_2.bias"],
            q + "mlp.W_in": sd[p + "mlp.c_fc.weight"], q + "mlp.b_in": sd[p + "mlp.c_fc.bias"],
            q + "mlp.W_out": sd[p + "mlp.c_proj.weight"],
            q + "mlp.b_out": sd[p + "mlp.c_proj.bias"],
        })
    if not cfg.tie_word_embeddings:
        ours["W_U_param"] = sd["lm_head.weight"].T
        ours["b_U"] = torch.zeros(cfg.d_vocab_out)
    model.load_unique_state_dict(ours)
    return model.eval()
