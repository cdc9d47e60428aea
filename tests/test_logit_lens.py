"""Logit lens: the last layer is the model's own output, ranks are 0-based, MRR uses 1/(rank+1),
and a hand-built model's bridge state decodes where it is known to sit."""

import numpy as np
import torch
from circuit_models import POS, SLOT_A, hand_built_model, inputs

from groklab.analysis import logit_lens
from groklab.models import HookedTransformer, ModelConfig
from groklab.tasks import make_task


def test_final_layer_of_the_lens_equals_the_models_logits():
    model = HookedTransformer(ModelConfig(n_layers=3, d_model=32, n_heads=4)
                              .resolved(d_vocab=30, n_ctx=4)).eval()
    tokens = torch.randint(0, 30, (10, 4), generator=torch.Generator().manual_seed(0))
    names = {f"blocks.{l}.hook_resid_pre" for l in range(3)} | {"blocks.2.hook_resid_post"}
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    lens = model.unembed(cache.accumulated_resid(apply_ln=True))  # [4, batch, pos, vocab]
    assert lens.shape == (4, 10, 4, 30)
    torch.testing.assert_close(lens[-1], logits, atol=1e-5, rtol=1e-5)
    # lens_ranks at the final layer are the ranks in the model's own logits
    target = torch.randint(0, 30, (10, 1), generator=torch.Generator().manual_seed(1))
    ranks = logit_lens.lens_ranks(model, tokens, {"t": target.numpy()})["t"]
    assert ranks.shape == (4, 4, 10, 1)  # [layers + 1, pos, n, k]
    own = (logits > logits.gather(-1, target[:, None, :].expand(-1, 4, -1))).sum(-1)  # no ties
    np.testing.assert_array_equal(ranks[-1], own.permute(1, 0)[..., None].numpy())


def test_hand_built_circuit_decodes_where_the_copy_sits():
    model = hand_built_model()
    with torch.no_grad():  # unembed slot A as well as slot B; states without x say token 10
        for i in range(8):
            model.W_U_param[SLOT_A + i, i] = 10.0
        model.W_U_param[POS:POS + 3, 10] = 1.0
    clean, _ = inputs()
    x = clean[:, :1].numpy()
    ranks = logit_lens.lens_ranks(model, clean, {"x": x})["x"][..., 0]  # [L+1, pos, n]
    # S[1, 1] holds x (copied by layer 0); S[1, 0] too; S[0, *] and S[1, 2] do not.
    assert (ranks[1, 1] == 0).all() and (ranks[2, 2] == 0).all()
    assert (ranks[0, 1] > 0).all() and (ranks[1, 2] > 0).all()


def test_run_on_a_composition_model_gives_checkpoint_layer_position_arrays(tmp_path):
    task = make_task("composition", entities=40, relations=6, out_degree=3, phi=2.0)
    model = HookedTransformer(ModelConfig(n_layers=2, d_model=32, n_heads=2)
                              .resolved(d_vocab=len(task.vocab), n_ctx=3)).eval()
    res = logit_lens.run(model, task=task, n_examples=50, splits=["train_inferred", "test_ood"])
    assert set(res.targets) == {"bridge", "r2", "answer"}
    assert res.targets == {"bridge": 1, "r2": 2, "answer": 2}
    mrr = res.mrr("train_inferred", "bridge")
    assert mrr.shape == (1, 3, 3)  # [checkpoint, layer 0..2, position]
    r = res.ranks["train_inferred.bridge"]
    np.testing.assert_allclose(mrr, (1.0 / (r + 1.0)).mean(axis=(-2, -1)))
    paths = res.save(tmp_path)
    assert (tmp_path / "analysis" / "logit_lens.npz").exists()
    assert any(p.suffix == ".png" for p in paths)
    back = logit_lens.LogitLensResult.load(tmp_path)
    np.testing.assert_array_equal(back.mrr("test_ood", "answer"), res.mrr("test_ood", "answer"))


def test_comparison_targets_follow_the_format():
    task = make_task("comparison", entities=30, attributes=3, values=6, phi=2.0,
                     format="paper")
    ex = task.probes["train_inferred"].subset(np.arange(20))
    t = logit_lens.lens_targets(task, ex)
    assert {k: v[1] for k, v in t.items()} == {"v1": 2, "v2": 4, "labels": 0, "answer": 4}
    vals = task.vocab.ids_of_type("value")
    assert (t["v1"][0][:, 0] == vals[ex.meta["v1"]]).all()
    # per-attribute label tokens, and the answer is one of them
    assert (t["labels"][0] == ex.targets.numpy()[:, None]).any(1).all()
