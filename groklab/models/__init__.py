"""Models with TransformerLens hook names. ``build_model(cfg)`` picks one by ``architecture``."""

from groklab.models.config import ModelConfig
from groklab.models.hooks import ActivationCache, HookedRootModule, HookPoint, get_act_name
from groklab.models.transformer import HookedTransformer

MODELS = {"transformer": HookedTransformer}


def build_model(cfg: ModelConfig):
    return MODELS[cfg.architecture](cfg)


__all__ = [
    "ActivationCache",
    "HookPoint",
    "HookedRootModule",
    "HookedTransformer",
    "ModelConfig",
    "build_model",
    "get_act_name",
]
