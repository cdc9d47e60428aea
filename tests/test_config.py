import pytest
import yaml

from groklab.config import ConfigError, build_config, load_config, preset_names
from groklab.tasks import make_task


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips(name):
    cfg = load_config(name)
    again = build_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize("name", ["composition-small", "comparison-small", "composition-shared"])
def test_cpu_presets_build_their_task(name):
    cfg = load_config(name)
    data = make_task(cfg.task)
    assert len(data.train) > 1000 and {"test_id", "test_ood"} <= set(data.probes)


def test_paper_presets_match_the_paper():
    cfg = load_config("composition-paper")
    assert (cfg.task.entities, cfg.task.relations, cfg.task.out_degree, cfg.task.phi) == (
        2000, 200, 20, 7.2)
    assert (cfg.model.n_layers, cfg.model.d_model, cfg.model.n_heads) == (8, 768, 12)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.batch_size,
            cfg.train.warmup_steps) == (1e-4, 0.1, 512, 2000)
    assert load_config("composition-shared").model.n_loops == 2


def test_set_overrides_are_typed_and_layered(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {lr: 0.002, steps: 10}\n")
    cfg = load_config("composition-small", f, ["train.steps=20", "train.betas=[0.9, 0.98]",
                                                "model.normalization_type=null"])
    assert cfg.train.lr == 0.002 and cfg.train.steps == 20
    assert cfg.train.betas == (0.9, 0.98) and cfg.model.normalization_type is None
    assert cfg.task.entities == 200  # from the preset


def test_set_task_name_switches_task_keys():
    cfg = load_config("composition-small", None, ["task.name=comparison",
                                                   "task.attributes=5"])
    assert cfg.task.name == "comparison" and cfg.task.attributes == 5
    with pytest.raises(ConfigError, match="unknown key 'task.attributes'"):
        load_config("composition-small", None, ["task.attributes=5"])
