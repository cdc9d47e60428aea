"""Sparse autoencoders: a bank recovers planted sparse features (TopK and L1), members of a bank
train independently, BatchTopK / JumpReLU / TopK keep their sparsity rules, SAELens-format
folders load back and match, and `groklab analyze --sae` runs on a tiny run and refuses bad
input in one line."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from groklab.analysis.sae_format import SAEFormatError, load_sae, save_sae
from groklab.analysis.sae_probe import probe_variable
from groklab.analysis.sae_train import SAEBank, SAEConfig, evaluate, train_bank
from groklab.cli import app


def planted(seed, n=6000, d=16, m=16, p=0.06):
    """Inputs that are sparse non-negative sums of m unit directions, plus an offset."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, d, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    on = (torch.rand(n, m, generator=g) < p).float()
    return (on * (0.5 + torch.rand(n, m, generator=g))) @ D + 0.2, D


def recovered(bank, h, D):
    W = bank.W_dec[h].detach()
    W = W / W.norm(dim=1, keepdim=True)
    return (D @ W.T).max(1).values  # best cosine of each planted direction


@pytest.mark.parametrize("kind, extra, steps", [("topk", {"k": 3}, 600),
                                               ("standard", {"l1": 0.2}, 300)])
def test_a_bank_recovers_the_planted_features_of_each_member(kind, extra, steps):
    (X0, D0), (X1, D1) = planted(0), planted(1)
    cfg = SAEConfig(kind=kind, d_sae=32, steps=steps, batch_size=128, lr=2e-2 if kind == "topk"
                    else 1e-2, **extra)
    bank, _ = train_bank(torch.stack([X0, X1]), cfg)
    ev = evaluate(bank, torch.stack([X0, X1]))
    for h, D in enumerate((D0, D1)):
        cos = recovered(bank, h, D)
        assert cos.median() > 0.97 and (cos > 0.9).float().mean() >= 0.85, (kind, h, cos)
        assert ev["explained_variance"][h] > 0.9
    # each member learnt its own dictionary, not the other's
    assert recovered(bank, 0, D1).median() < 0.7
    if kind == "topk":
        assert torch.all(ev["l0"] <= 3 + 1e-9)


def test_sparsity_rules_of_batchtopk_jumprelu_and_topk():
    X, _ = planted(2, n=2000, d=24, m=32)
    x = X[None, :64]
    bt = SAEBank(SAEConfig(kind="batchtopk", d_in=24, d_sae=48, k=2.5), 1)
    pre = bt.pre(x)
    f = bt.activate(pre, train=True)
    assert int((f > 0).sum()) == int(2.5 * 64)  # k per input on average over the batch
    assert ((f > 0).sum(-1) != (f > 0).sum(-1)[0, 0]).any()  # not k for every input
    tk = SAEBank(SAEConfig(kind="topk", d_in=24, d_sae=48, k=5), 2)
    assert int((tk.encode(x.expand(2, -1, -1)) > 0).sum(-1).max()) <= 5
    jr = SAEBank(SAEConfig(kind="jumprelu", d_in=24, d_sae=48, init_threshold=0.05), 1)
    loss, _, f = jr.loss(x, None)
    assert ((f == 0) | (jr.pre(x) > 0.05)).all()
    loss.backward()  # the straight-through estimator gives the threshold a gradient
    assert jr.threshold.grad is not None and jr.threshold.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="k=60 must be in 1..d_sae=48"):
        SAEConfig(kind="topk", d_in=24, d_sae=48, k=60).check()
    # a trained BatchTopK bank runs as a JumpReLU on its learnt threshold at inference
    trained, _ = train_bank(X[None], SAEConfig(kind="batchtopk", d_sae=48, k=3, steps=150,
                                               batch_size=64, lr=3e-3))
    th = trained.threshold[0]
    assert th.min() > 0 and torch.allclose(th, th[0].expand_as(th))
    assert 1.0 < float(evaluate(trained, X[None])["l0"][0]) < 3 * 3


def test_sparse_topk_loss_equals_the_dense_saelens_form():
    """Only the k picks enter the graph, yet loss and gradients are those of SAELens' dense
    form (ReLU(pre * n) decoded as f / n, plus AuxK on dead latents)."""
    X, _ = planted(4, n=300, d=24, m=32)
    bank = SAEBank(SAEConfig(kind="topk", d_in=24, d_sae=40, k=4), 2)
    with torch.no_grad():
        bank.W_dec.mul_(torch.rand(2, 40, 1) + 0.5)  # uneven decoder norms
        bank.b_enc.normal_()
    x = torch.stack([X[:128], X[128:256]])
    dead = torch.rand(2, 40) < 0.4
    grads = []
    for sparse in (True, False):
        if sparse:
            loss, fired, _ = bank.loss(x, dead)
        else:
            pre = bank.pre(x)
            f = bank.activate(pre, train=True)
            x_hat = bank.decode(f)
            loss = ((x_hat - x).pow(2).sum(-1).mean(-1)
                    + bank._aux_loss(x - x_hat.detach(), pre, dead)).sum()
            torch.testing.assert_close(fired, (f > 0).any(1))
        bank.zero_grad()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in bank.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["standard", "topk", "batchtopk", "jumprelu"])
def test_saelens_folders_round_trip(tmp_path, kind):
    X, _ = planted(3, n=3000, d=24, m=32)
    bank, _ = train_bank(torch.stack([X, X + 0.1]),
                         SAEConfig(kind=kind, d_sae=40, k=4, steps=60, batch_size=64, lr=3e-3))
    folder = save_sae(tmp_path / kind, bank, 1, hook_name="blocks.1.hook_resid_pre",
                      model_name="groklab/test", context_size=3)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == {"batchtopk": "jumprelu"}.get(kind, kind)
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_pre" == cfg["hook_name"]
    assert (cfg["d_in"], cfg["d_sae"], cfg["normalize_activations"]) == (24, 40, "none")
    loaded, _ = load_sae(folder)
    x = (X + 0.1)[None, :200]
    mine = bank.encode(x.expand(2, -1, -1))[1:]
    torch.testing.assert_close(loaded.encode(x), mine, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded(x), bank(x.expand(2, -1, -1))[1:], atol=1e-5, rtol=1e-5)
    if kind == "topk":  # decoder norms folded in, as SAELens' inference SAEs have them
        torch.testing.assert_close(loaded.W_dec[0].norm(dim=1), torch.ones(40))
    (folder / "sae_weights.safetensors").write_bytes(b"not tensors")
    with pytest.raises(SAEFormatError, match="is not a SAELens SAE folder"):
        load_sae(folder)


def test_a_feature_that_fires_for_one_value_is_found():
    labels = np.repeat(np.arange(8), 40)
    codes = torch.zeros(len(labels), 20)
    codes[labels == 5, 7] = 1.0  # feature 7 fires exactly when the variable is 5
    codes[:, 10:] = torch.rand(len(labels), 10)  # noise features, always on
    r = probe_variable(codes, torch.randn(len(labels), 6), labels)
    assert (r["best_feature"], r["best_value"], r["best_pair_f1"]) == (7, 5, 1.0)
    assert r["chance"] < 0.3


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from groklab.config import load_config
    from groklab.train import Run

    out = tmp_path_factory.mktemp("sae") / "run"
    sets = ["task.entities=40", "task.relations=6", "task.out_degree=3", "task.phi=2.0",
            "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "train.batch_size=128",
            "train.lr=3e-3", "train.steps=40", "train.checkpoint_every=20"]
    Run.start(load_config("composition", None, sets), out).train()
    return out


def test_analyze_sae_writes_metrics_and_saelens_folders(tiny_run):
    res = CliRunner().invoke(app, [
        "analyze", str(tiny_run), "--sae", "--opt", "sae.steps=60", "--opt", "sae.position=1",
        "--opt", "sae.hooks=blocks.1.hook_resid_pre,blocks.0.attn.hook_z",  # [pos, d], [pos,
        # heads, d_head]: both 32 wide, so one bank (per-head hooks flatten as SAELens' hook_z)
        "--opt", "sae.eval_rows=200"])
    assert res.exit_code == 0, res.output
    z = np.load(tiny_run / "analysis" / "sae.npz")
    assert z["l0"].shape == (1, 2) and (z["l0"] <= 16 + 1e-9).all()
    assert (z["ce_clean"] <= z["ce_zero"] + 1e-6).all()
    assert "probe/bridge.probe_acc" in z.files
    meta = json.loads((tiny_run / "analysis" / "sae.json").read_text())
    for rel in meta["saelens_folders"].values():
        bank, cfg = load_sae(tiny_run / rel)
        assert bank.W_enc.shape == (1, 32, 256) and cfg["architecture"] == "topk"
        assert cfg["reshape_activations"] == ("hook_z" if "hook_z" in rel else "none")
    assert "bridge" in res.output and "loss recovered" in res.output


@pytest.mark.parametrize("opts, message", [
    (["--opt", "sae.hooks=blocks.9.hook_resid_pre"], "no hook point ['blocks.9.hook_resid_pre']"),
    (["--opt", "sae.k=999"], "k=999 must be in 1..d_sae=256"),
    (["--opt", "sae.kind=gated"], "unknown SAE kind 'gated'"),
    (["--opt", "sae.position=7"], "position '7' is not answer, all or an index in 0..2"),
    (["--opt", "sae.width=3"], "sae.width: unknown key"),
    (["--opt", "sae.steps=many"], "expected an integer"),
    (["--opt", "llc.lr=1"], "given without --llc"),
])
def test_bad_sae_input_is_one_line_and_exit_2(tiny_run, opts, message):
    before = sorted(p.name for p in tiny_run.rglob("*"))
    res = CliRunner().invoke(app, ["analyze", str(tiny_run), "--sae", *opts])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert sorted(p.name for p in tiny_run.rglob("*")) == before
