"""SAEs on disk in SAELens' format, so SAELens users can ``SAE.load_from_disk(folder)`` what
groklab trained, and groklab can read what SAELens (v6) saved.

A folder holds ``cfg.json`` (SAELens' ``SAEConfig.to_dict()``: ``d_in``, ``d_sae``, ``dtype``,
``device``, ``apply_b_dec_to_input``, ``normalize_activations``, ``reshape_activations``,
``architecture`` and its fields such as ``k``, and ``metadata`` with ``sae_lens_version``,
``model_name``, ``hook_name``, ``context_size``, ...) and ``sae_weights.safetensors``
(``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in], ``b_enc`` [d_sae], ``b_dec`` [d_in]; JumpReLU
adds ``threshold`` [d_sae]). The pre-v6 top-level names (``hook_name``, ``hook_layer``,
``model_name``, ``context_size``) are written too, for older readers.

What is written is SAELens' inference form: a TopK SAE trained with decoder-norm rescaling has
the norms folded in (unit decoder rows, ``rescale_acts_by_decoder_norm`` false), and a BatchTopK
SAE is saved as a JumpReLU with its global threshold on every feature, as SAELens does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from groklab.analysis.sae_train import SAEBank, SAEConfig

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
FORMAT_VERSION = "6.0.0"  # the SAELens config layout written (metadata block, v6 names)
ARCHITECTURE = {"standard": "standard", "topk": "topk", "batchtopk": "jumprelu",
                "jumprelu": "jumprelu"}


class SAEFormatError(ValueError):
    """A folder that is not a readable SAELens SAE."""


@torch.no_grad()
def member_weights(bank: SAEBank, h: int) -> dict[str, torch.Tensor]:
    """Member ``h`` of a bank in SAELens' inference form."""
    W_enc, b_enc = bank.W_enc[h].clone(), bank.b_enc[h].clone()
    W_dec, b_dec = bank.W_dec[h].clone(), bank.b_dec[h].clone()
    if bank.rescale:
        n = W_dec.norm(dim=-1).clamp_min(1e-8)
        W_enc, b_enc, W_dec = W_enc * n, b_enc * n, W_dec / n[:, None]
    out = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}
    if ARCHITECTURE[bank.cfg.kind] == "jumprelu":
        out["threshold"] = bank.threshold[h].clone()
    return {k: v.float().contiguous() for k, v in out.items()}


def save_sae(folder: Path, bank: SAEBank, h: int, *, hook_name: str, model_name: str,
             context_size: int, extra: dict | None = None) -> Path:
    """Write member ``h`` of ``bank`` as a SAELens folder; returns the folder."""
    from safetensors.torch import save_file

    from groklab.rundir import atomic_write_text

    cfg = bank.cfg
    arch = ARCHITECTURE[cfg.kind]
    layer = hook_name.split(".")[1] if hook_name.startswith("blocks.") else "0"
    meta = {"sae_lens_version": FORMAT_VERSION, "sae_lens_training_version": FORMAT_VERSION,
            "model_name": model_name, "hook_name": hook_name, "hook_head_index": None,
            "context_size": context_size, "prepend_bos": False, "seqpos_slice": [None],
            "dataset_path": None, "model_from_pretrained_kwargs": {},
            "groklab": {"kind": cfg.kind, "training": cfg.to_dict(), **(extra or {})}}
    body = {"d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none",
            "reshape_activations": "hook_z" if hook_name.endswith("hook_z") else "none",
            "architecture": arch, "metadata": meta,
            # pre-v6 readers look for these at the top level
            "model_name": model_name, "hook_name": hook_name,
            "hook_layer": int(layer) if layer.isdigit() else 0, "hook_head_index": None,
            "context_size": context_size}
    if arch == "topk":
        body.update(k=int(cfg.k), rescale_acts_by_decoder_norm=False)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(member_weights(bank, h), str(folder / WEIGHTS))
    atomic_write_text(folder / CFG, json.dumps(body, indent=1))
    return folder


def load_sae(folder: str | Path) -> tuple[SAEBank, dict]:
    """A SAELens SAE folder (standard, topk or jumprelu) as a one-member bank, and its
    cfg.json. Only tensors are read (safetensors): no code runs from the folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        cfg = json.loads((folder / CFG).read_text())
        w = load_file(str(folder / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as e:
        raise SAEFormatError(f"'{folder}' is not a SAELens SAE folder ({CFG} + {WEIGHTS}): "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                             ) from None
    arch = cfg.get("architecture", "standard")
    kinds = {"standard": "standard", "topk": "topk", "jumprelu": "jumprelu"}
    if arch not in kinds:
        raise SAEFormatError(f"'{folder}': architecture '{arch}' is not one groklab reads "
                             f"({', '.join(kinds)})")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise SAEFormatError(f"'{folder}': normalize_activations "
                             f"'{cfg['normalize_activations']}' is not supported (only none)")
    try:
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
        shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,),
                  "b_dec": (d_in,)}
        if arch == "jumprelu":
            shapes["threshold"] = (d_sae,)
        bad = {k: tuple(w[k].shape) for k, s in shapes.items() if tuple(w[k].shape) != s}
    except KeyError as e:
        raise SAEFormatError(f"'{folder}' lacks {e}") from None
    if bad:
        raise SAEFormatError(f"'{folder}': tensor shapes {bad} do not match d_in {d_in}, "
                             f"d_sae {d_sae}")
    k = cfg.get("k", 1) if arch == "topk" else 1
    bank = SAEBank(SAEConfig(kind=kinds[arch], d_in=d_in, d_sae=d_sae, k=k), 1)
    with torch.no_grad():
        for name in shapes:
            getattr(bank, name).copy_(w[name].float()[None])
    bank.rescale = arch == "topk" and bool(cfg.get("rescale_acts_by_decoder_norm", False))
    return bank.eval(), cfg
