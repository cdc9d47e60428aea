"""Models with TransformerLens hook names. ``build_model(cfg)`` picks one by ``architecture``."""

from groklab.models.config import ModelConfig
from groklab.models.dense import DenseMLP
from groklab.models.hooks import ActivationCache, HookedRootModule, HookPoint, get_act_name
from groklab.models.mlp import MLP, PairMLP
from groklab.models.sequence import Conv1dNet, GRUNet
from groklab.models.transformer import HookedTransformer

MODELS = {"transformer": HookedTransformer, "pair_mlp": PairMLP, "mlp": MLP, "dense": DenseMLP,
          "cnn": Conv1dNet, "gru": GRUNet}


def build_model(cfg: ModelConfig):
    return MODELS[cfg.architecture](cfg)


__all__ = [
    "ActivationCache",
    "Conv1dNet",
    "GRUNet",
    "HookPoint",
    "HookedRootModule",
    "HookedTransformer",
    "MLP",
    "DenseMLP",
    "ModelConfig",
    "PairMLP",
    "build_model",
    "get_act_name",
]
