from pathlib import Path

import pytest

from features.errors import ConfigError
from features.settings import (
    CONFIG_DIR,
    GROUPS,
    PRESETS,
    MatchingConfig,
    load_settings,
    parse_override,
)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads(preset: str) -> None:
    cfg = load_settings(preset)
    assert cfg.data.preset == preset


def test_every_config_file_is_valid_yaml_and_used() -> None:
    for path in CONFIG_DIR.rglob("*.yaml"):
        group = path.parent.name
        assert group in GROUPS or group == "preset", f"{path} belongs to no settings group"
    for preset in PRESETS:
        load_settings(preset)


def test_presets_grow() -> None:
    tiny, small, full = (load_settings(p).data for p in PRESETS)
    assert tiny.n_creators < small.n_creators < full.n_creators
    assert full.n_creators == 3_500_000 and full.n_products == 10_000_000


def test_override_is_typed() -> None:
    cfg = load_settings("tiny", overrides=["data.seed=7", "data.label_share=0.05"])
    assert cfg.data.seed == 7 and cfg.data.label_share == 0.05


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="data.bogus"):
        load_settings("tiny", overrides=["data.bogus=1"])


def test_wrong_type_is_an_error() -> None:
    with pytest.raises(ConfigError, match="data.n_creators"):
        load_settings("tiny", overrides=["data.n_creators=many"])


def test_out_of_range_is_an_error() -> None:
    with pytest.raises(ConfigError, match="label_share"):
        load_settings("tiny", overrides=["data.label_share=1.5"])


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        load_settings("huge")


def test_config_file_overrides(tmp_path: Path) -> None:
    file = tmp_path / "exp.yaml"
    file.write_text("data:\n  seed: 11\n")
    assert load_settings("tiny", config_file=file).data.seed == 11
    with pytest.raises(ConfigError, match="not found"):
        load_settings("tiny", config_file=tmp_path / "missing.yaml")


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("no-equals-sign")
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


def test_validation_sample_grows_on_small_catalogs_only() -> None:
    cfg = MatchingConfig(val_creators=4000, val_scores=800_000_000)
    assert cfg.val_sample(200_000) == 4000  # small's catalog: the sample as set
    assert cfg.val_sample(10_000_000) == 4000  # never fewer than val_creators
    assert cfg.val_sample(12_101) == 66_110  # Beauty: more than its 22,363 creators = all
    assert MatchingConfig(val_creators=0).val_sample(12_101) == 0  # 0 stays "all"
    assert MatchingConfig(val_creators=500, val_scores=0).val_sample(100) == 500


def test_side_feature_schedule_applies_to_data_with_side_features_only() -> None:
    """`with_side_features` replaces patience and the refit for data with side features;
    an ID-only log keeps the general settings; a nested override reaches it."""
    cfg = load_settings("small").matching
    side = cfg.for_data(side_features=True)
    assert (side.patience, side.min_gain, side.refit_warm_epochs, side.heads) == (0, 0.003, 1, 1)
    assert cfg.for_data(side_features=False) == cfg
    assert (cfg.patience, cfg.min_gain, cfg.refit_warm_epochs, cfg.heads) == (1, 0.0, 0, 4)
    kept = load_settings("small", overrides=["matching.with_side_features.patience=3"])
    assert kept.matching.for_data(side_features=True).patience == 3
    with pytest.raises(ConfigError, match="with_side_features"):
        load_settings("small", overrides=["matching.with_side_features.lr=0.1"])


def test_product_lists_take_their_own_shard_size() -> None:
    cfg = load_settings("small", overrides=["batch.shard_size=700"])
    assert cfg.batch.shard_size_for("creator") == 700
    assert cfg.batch.shard_size_for("product") == cfg.batch.product_shard_size == 100_000
    other = load_settings("small", overrides=["batch.product_shard_size=300"])
    assert other.batch.shard_size_for("product") == 300
