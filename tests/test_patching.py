"""Batched activation patching: identities, the denoising convention, TL shapes, and agreement
with the per-cell loop."""

import pytest
import torch
from circuit_models import hand_built_model, inputs

from groklab.analysis.patching import (
    PASS_BYTES,
    base_residuals,
    default_max_rows,
    get_act_patch_attn_head_out_all_pos,
    get_act_patch_attn_head_out_by_pos,
    get_act_patch_attn_out,
    get_act_patch_block_every,
    get_act_patch_mlp_out,
    get_act_patch_resid_mid,
    get_act_patch_resid_pre,
    logit_diff_metric,
    patch_grid,
    patch_grid_looped,
)
from groklab.models import HookedTransformer, ModelConfig


def random_model(**kw) -> HookedTransformer:
    base = dict(n_layers=3, d_model=32, n_heads=4, d_mlp=48)
    base.update(kw)
    torch.manual_seed(0)
    model = HookedTransformer(ModelConfig(**base).resolved(d_vocab=20, n_ctx=4))
    with torch.no_grad():  # larger than GPT-2 init so patches move the logits visibly
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    return model.eval()


def two_runs(n=12):
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 20, (n, 4), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1] = (clean[:, 1] + 7) % 20
    return clean, corrupt


HOOKS = {  # hook -> mask of one cell: [pos] or [pos, head]
    "resid_pre": lambda P, H: torch.eye(P, dtype=torch.bool),
    "resid_mid": lambda P, H: torch.eye(P, dtype=torch.bool),
    "attn_out": lambda P, H: torch.eye(P, dtype=torch.bool),
    "mlp_out": lambda P, H: torch.eye(P, dtype=torch.bool),
    "z": lambda P, H: torch.eye(P * H, dtype=torch.bool).view(P * H, P, H),
    "q": lambda P, H: torch.eye(P * H, dtype=torch.bool).view(P * H, P, H),
    "k": lambda P, H: torch.eye(P * H, dtype=torch.bool).view(P * H, P, H),
    "v": lambda P, H: torch.eye(P * H, dtype=torch.bool)[::3].view(-1, P, H),
    "pattern": lambda P, H: torch.eye(H * P, dtype=torch.bool).view(H * P, H, P),  # [head, dest]
    "blocks.{l}.attn.hook_attn_scores": lambda P, H: torch.eye(H * P * P, dtype=torch.bool)[
        ::5].view(-1, H, P, P),  # single entries [head, dest, src]
}


@pytest.mark.parametrize("hook", list(HOOKS))
def test_patching_a_run_with_itself_changes_nothing(hook):
    model = random_model()
    clean, _ = two_runs()
    _, cache = model.run_with_cache(clean)
    masks = HOOKS[hook](4, 4)
    grid = patch_grid(model, clean, cache, hook, masks)  # [layers, cells, batch, pos, vocab]
    want = model(clean)
    assert grid.shape == (3, masks.shape[0], *want.shape)
    torch.testing.assert_close(grid, want.expand_as(grid), atol=1e-5, rtol=1e-5)


def test_patching_everything_with_the_corrupted_run_gives_the_corrupted_output():
    model = random_model()
    clean, corrupt = two_runs()
    _, cache = model.run_with_cache(corrupt)
    every_pos = torch.ones(1, 4, dtype=torch.bool)
    grid = patch_grid(model, clean, cache, "resid_pre", every_pos)  # at each layer in turn
    want = model(corrupt)
    for layer in range(3):
        torch.testing.assert_close(grid[layer, 0], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hook", list(HOOKS))
def test_batched_grid_equals_per_cell_loop(hook):
    model = random_model()
    clean, corrupt = two_runs()
    _, cache = model.run_with_cache(corrupt)
    masks = HOOKS[hook](4, 4)
    ap = torch.tensor([3, 2] * 6)
    kw = dict(answer_pos=ap, reduce=lambda x: x)
    batched = patch_grid(model, clean, cache, hook, masks, **kw)
    looped = patch_grid_looped(model, clean, cache, hook, masks, **kw)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-4)
    # chunked passes (max_rows) give the same numbers
    chunked = patch_grid(model, clean, cache, hook, masks, max_rows=25, **kw)
    torch.testing.assert_close(batched, chunked, atol=1e-5, rtol=1e-4)
    # the patches matter: not every cell equals the clean run
    assert (batched - model(clean, ap)).abs().max() > 1e-2


def test_per_cell_sources_and_looped_agree():
    model = random_model()
    clean, corrupt = two_runs()
    other = clean.clone()
    other[:, 2] = (clean[:, 2] + 3) % 20
    src = [base_residuals(model, t) for t in (corrupt, other)]
    masks = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)

    def source(l):
        return torch.stack([src[0][l], src[1][l]])

    a = patch_grid(model, clean, source, "resid_pre", masks)
    b = patch_grid_looped(model, clean, source, "resid_pre", masks)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_transformerlens_shapes_and_denoising_direction_on_the_known_circuit():
    model = hand_built_model()
    clean, corrupt = inputs()
    n = clean.shape[0]
    ap = torch.full((n,), 2)
    _, clean_cache = model.run_with_cache(clean)
    metric = logit_diff_metric(clean[:, 0], corrupt[:, 0])
    with torch.no_grad():
        m_clean = float(metric(model(clean, ap)))
        m_corrupt = float(metric(model(corrupt, ap)))
    assert m_clean > 5 and m_corrupt < -5

    grid = get_act_patch_resid_pre(model, corrupt, clean_cache, metric, answer_pos=ap)
    assert grid.shape == (2, 3)  # [n_layers, pos]
    # TL convention: corrupted run, clean patch -> the clean metric only where x is carried.
    want = torch.full((2, 3), m_corrupt)
    want[0, 0] = want[1, 1] = m_clean
    torch.testing.assert_close(grid, want, atol=1e-3, rtol=1e-4)

    heads = get_act_patch_attn_head_out_all_pos(model, corrupt, clean_cache, metric, answer_pos=ap)
    assert heads.shape == (2, 2)  # [n_layers, n_heads]
    # Head (0, 0) restores x at S[1, 1] and head (1, 0) copies it to the answer.
    want = torch.full((2, 2), m_corrupt)
    want[0, 0] = want[1, 0] = m_clean
    torch.testing.assert_close(heads, want, atol=1e-3, rtol=1e-4)

    by_pos = get_act_patch_attn_head_out_by_pos(model, corrupt, clean_cache, metric,
                                                answer_pos=ap)
    assert by_pos.shape == (2, 3, 2)  # [n_layers, pos, n_heads]
    want = torch.full((2, 3, 2), m_corrupt)
    want[0, 1, 0] = want[1, 2, 0] = m_clean  # the copy at pos 1, then at the answer position
    torch.testing.assert_close(by_pos, want, atol=1e-3, rtol=1e-4)

    assert get_act_patch_block_every(model, corrupt, clean_cache, metric,
                                     answer_pos=ap).shape == (3, 2, 3)
    for fn in (get_act_patch_attn_out, get_act_patch_mlp_out, get_act_patch_resid_mid):
        assert fn(model, corrupt, clean_cache, metric, answer_pos=ap).shape == (2, 3)
    mlp = get_act_patch_mlp_out(model, corrupt, clean_cache, metric, answer_pos=ap)
    torch.testing.assert_close(mlp, torch.full((2, 3), m_corrupt), atol=1e-3, rtol=1e-4)


def test_a_metric_with_one_value_per_row_raises():
    model = random_model()
    clean, corrupt = two_runs()
    _, cache = model.run_with_cache(clean)
    with pytest.raises(RuntimeError, match="one number per patched run"):
        get_act_patch_resid_pre(model, corrupt, cache, lambda logits: logits[:, -1, 0])


def test_default_passes_are_sized_by_memory():
    model = random_model()
    assert default_max_rows(model, 4) == PASS_BYTES // (4 * 4 * 96)  # 3 * d_model is widest
    clean, corrupt = two_runs()
    _, cache = model.run_with_cache(corrupt)
    masks = HOOKS["z"](4, 4)
    a = patch_grid(model, clean, cache, "z", masks)
    b = patch_grid(model, clean, cache, "z", masks, max_rows=12)  # one cell per pass
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_unknown_hook_is_one_clear_error():
    model = random_model()
    clean, _ = two_runs()
    with pytest.raises(KeyError, match="not a block activation"):
        patch_grid(model, clean, {}, "resid_typo", torch.eye(4, dtype=torch.bool))
