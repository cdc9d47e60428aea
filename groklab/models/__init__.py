"""Models with TransformerLens hook names. ``build_model(cfg)`` picks one by ``architecture``."""

from groklab.models.aaren import AarenLM
from groklab.models.cache import ActivationCache
from groklab.models.config import ModelConfig
from groklab.models.dense import DenseMLP
from groklab.models.hooks import HookedRootModule, HookPoint, LensHandle, reads_only
from groklab.models.lens import FactoredMatrix, Output
from groklab.models.mlp import MLP, PairMLP
from groklab.models.names import get_act_name
from groklab.models.sequence import Conv1dNet, GRUNet
from groklab.models.sigma_gpt import SigmaGPT
from groklab.models.tl_convert import from_transformer_lens, to_transformer_lens
from groklab.models.transformer import HookedTransformer

MODELS = {"transformer": HookedTransformer, "pair_mlp": PairMLP, "mlp": MLP, "dense": DenseMLP,
          "cnn": Conv1dNet, "gru": GRUNet}
MODELS.update(aaren=AarenLM, sigma_gpt=SigmaGPT)


def build_model(cfg: ModelConfig):
    return MODELS[cfg.architecture](cfg)


__all__ = [
    "AarenLM",
    "SigmaGPT",
    "ActivationCache",
    "Conv1dNet",
    "FactoredMatrix",
    "GRUNet",
    "HookPoint",
    "HookedRootModule",
    "HookedTransformer",
    "LensHandle",
    "MLP",
    "DenseMLP",
    "ModelConfig",
    "Output",
    "PairMLP",
    "build_model",
    "from_transformer_lens",
    "get_act_name",
    "reads_only",
    "to_transformer_lens",
]
