from groklab.report.story import story


def _summary(mem, train95, id95):
    return {
        "memorization_step": mem, "id_split": "test_id", "ood_split": "test_ood",
        "thresholds": {"train": {"0.95": train95}, "test_id": {"0.95": id95, "0.5": 500},
                       "test_ood": {"0.95": None, "0.5": None}},
        "best": {"train": 0.987, "test_id": 1.0, "test_ood": 0.02},
        "final": {"train": 0.985, "test_id": 0.98, "test_ood": 0.0},
        "steps": 4000, "wall_time_s": 300.0, "steps_per_s": 13.3, "device": "cpu",
    }


def test_story_measures_the_delay_from_the_095_fit_when_train_never_reaches_099():
    lines = story(_summary(None, 1000, 3000))
    assert lines[0].startswith("The model fit 95% of its training set at step 1,000")
    assert "3.0\u00d7 the that step" not in lines[1] and "3.0\u00d7" in lines[1]
    assert "has not generalized out of distribution" in lines[2]


def test_story_with_memorization():
    lines = story(_summary(800, 700, 2400))
    assert "memorized its training set (train accuracy \u2265 0.99) at step 800" in lines[0]
    assert "3.0\u00d7 the memorization step" in lines[1]
