"""Typed settings: YAML files under `configs/`, grouped by concern, plus `--set` overrides.

Resolution order (later wins): each group's `default.yaml`, the group files a preset
selects, the preset's own overrides, a user `--config FILE`, then `--set key=value`.
Unknown keys and wrong types are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from features.errors import ConfigError
from features.strict_model import StrictModel
from features.synthetic.params import DataConfig


def _config_dir() -> Path:
    """`HAOWU_CONFIG_DIR`, else the source tree's `configs/` (a checkout or an editable
    install), else the copy a wheel installs under `PREFIX/share/haowu/configs`."""
    if "HAOWU_CONFIG_DIR" in os.environ:
        return Path(os.environ["HAOWU_CONFIG_DIR"])
    source = Path(__file__).resolve().parents[1] / "configs"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "haowu" / "configs"


CONFIG_DIR = _config_dir()
PRESETS = ("tiny", "small", "full")


class RegistryConfig(StrictModel):
    """Champion/challenger gate: a challenger must not be worse on these metrics."""

    champion_alias: str = "champion"
    tolerance: float = Field(0.005, ge=0, description="absolute slack allowed per gate metric")
    gates: dict[str, dict[str, Literal["higher", "lower"]]] = Field(
        default={"haowu-tier": {"qwk": "higher"}, "haowu-matching": {"recall@50": "higher"}}
    )


# a half-life in goods (0 = the history is a mean), or "auto": chosen on the validation
HalfLife = Annotated[float, Field(ge=0)] | Literal["auto"]


class SideFeatureSchedule(StrictModel):
    """What replaces the training schedule on data with side features (the platform's own
    tables, not an ID-only log); None keeps the general setting."""

    patience: int | None = Field(None, ge=0)
    min_gain: float | None = Field(None, ge=0)
    refit_warm_epochs: int | None = Field(None, ge=0)
    history_dropout: float | None = Field(None, ge=0, lt=1)
    history_half_life: HalfLife | None = None
    heads: int | None = Field(None, ge=1)


class MatchingConfig(StrictModel):
    """Two-tower matching, its baselines and evaluation protocols (`haowu train-matching`)."""

    # towers
    id_dim: int = Field(64, gt=0, description="ID embedding width (row 0 is the OOV bucket)")
    side_dim: int = Field(16, gt=0, description="embedding width of each categorical side feature")
    hidden: list[int] = Field(default=[256], description="MLP hidden widths of each tower")
    id_only_hidden: list[int] | None = Field(
        None, description="MLP hidden widths of a tower without side features (None: hidden)"
    )
    out_dim: int = Field(64, gt=0, description="output embedding width (L2-normalised)")
    heads: int = Field(
        1, ge=1, description="independent towers trained side by side; served as one vector"
    )
    temperature: float = Field(0.05, gt=0, le=1)
    learn_temperature: bool = False
    id_dropout: float = Field(
        0.1, ge=0, le=1, description="share of IDs replaced by OOV in training"
    )
    min_id_count: int = Field(
        1, ge=1, description="IDs with fewer training pairs share the OOV row"
    )
    creator_history: bool = Field(
        True, description="the creator tower reads the mean embedding of its training goods"
    )
    history_replaces_creator_id: bool = Field(
        True, description="a creator tower without side features reads its history, not its ID"
    )
    history_max_items: int = Field(
        100, ge=0, description="random sample of a longer history (0 = all)"
    )
    history_pooling: Literal["mean", "idf"] = Field(
        "mean", description="mean of the history's goods, or weighted by their rarity (IDF)"
    )
    # 0 here, "auto" in configs/matching/default.yaml: a model saved before the setting
    # existed read a mean, and a saved model's settings hold the half-life it trained with
    history_half_life: HalfLife = Field(
        0.0,
        description="> 0, where pairs have times: a creator is ranked from its history "
        "weighted 0.5 ** (goods taken since / half_life) and trained on the goods taken "
        "before each target, weighted back from it; auto: 0 or one of "
        "history_half_life_candidates, whichever an item-kNN probe scores best on the "
        "validation",
    )
    history_half_life_candidates: list[Annotated[float, Field(gt=0)]] = Field(
        default=[2.0, 8.0], description="the half-lives `auto` tries against 0"
    )
    history_half_life_min_gain: float = Field(
        0.02,
        ge=0,
        description="auto keeps 0 unless a half-life lifts the probe's validation score by "
        "this share",
    )
    # 0 here, 0.25 in configs/matching/default.yaml: a model saved before the setting
    # existed trained without it, and its fine-tune reads its saved settings
    history_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of a training bag's goods left out at random each batch "
        "(denoising: the tower learns to place a creator from part of its history)",
    )
    tie_history: bool = Field(
        False, description="the history reads the product tower's ID rows, not its own table"
    )
    creator_categorical: list[str] = Field(default=["category_pref", "price_band", "region"])
    creator_numeric: list[str] = Field(
        default=["followers", "fans_female_share", "account_age_days"]
    )
    product_categorical: list[str] = Field(
        default=[
            "category_l1",
            "category_l2",
            "category_l3",
            "price_band",
            "merchant_id",
            "is_official_brand",
            "tier",
        ]
    )
    product_numeric: list[str] = Field(
        default=[
            "price",
            "commission_rate",
            "tier_score",
            "brand_awareness",
            "price_index",
            "price_vs_platform_low",
            "positive_review_rate",
            "refund_rate",
            "ship_48h_rate",
        ]
    )
    # training
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate of the MLPs")
    embedding_lr: float = Field(
        0.05, gt=0, description="row-wise Adagrad learning rate of embeddings"
    )
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay of the MLPs")
    embedding_weight_decay: float = Field(
        0.0, ge=0, description="L2 on the embedding rows a batch touches"
    )
    id_only_dropout: float = Field(
        0.2, ge=0, lt=1, description="dropout on the MLP input of a tower without side features"
    )
    batch_size: int = Field(2048, gt=1)
    epochs: int = Field(20, gt=0)
    patience: int = Field(2, ge=0, description="epochs without val improvement before stopping")
    min_gain: float = Field(
        0.0, ge=0, lt=1, description="a val gain below this counts as no improvement for patience"
    )
    logq: bool = True
    extra_negatives: int = Field(0, ge=0, description="uniformly sampled negatives per batch")
    loss: Literal["softmax", "cosine_contrastive"] = Field(
        "softmax", description="in-batch sampled softmax, or SimpleX's cosine contrastive loss"
    )
    margin: float = Field(
        0.9, ge=-1, lt=1, description="cosine_contrastive: negatives below it cost nothing"
    )
    neg_weight: float = Field(
        1.0, gt=0, description="cosine_contrastive: weight of the mean negative term"
    )
    full_softmax_max_products: int = Field(
        0, ge=0, description="softmax over every good when the catalog has at most this many"
    )
    in_batch_negatives: bool = Field(
        True,
        description="cosine_contrastive: false = the uniform extra negatives alone (SimpleX)",
    )
    max_train_pairs: int = Field(0, ge=0, description="sample this many training pairs (0 = all)")
    refit_all: bool = Field(True, description="refit the served model on every pair")
    refit_warm_epochs: int = Field(
        0,
        ge=0,
        description="0: the refit trains from scratch for the best epoch count; n: n epochs "
        "from the first protocol's model (warm start)",
    )
    refit_warm_lr_scale: float = Field(
        1.0, gt=0, le=1, description="warm refit: the learning rates times this"
    )
    with_side_features: SideFeatureSchedule = Field(default_factory=SideFeatureSchedule)
    # evaluation
    eval_k: list[int] = Field(default=[10, 20, 50, 100])
    early_stop_k: int = Field(50, gt=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    time_test_days: float = Field(14, gt=0, description="protocol (b): the last days are the test")
    time_val_days: float = Field(7, ge=0)
    protocols: list[Literal["random", "time"]] = Field(default=["random", "time"])
    eval_creators: int = Field(20000, ge=0, description="creators scored per test (0 = all)")
    val_creators: int = Field(4000, ge=0, description="creators scored per early-stop check")
    val_scores: int = Field(
        800_000_000,
        ge=0,
        description="creator x good scores a check may spend: small catalogs check more creators",
    )
    eval_batch: int = Field(1024, gt=0)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where the two-tower trains and embeds: auto = cuda when present"
    )
    threads: int = Field(2, gt=0)
    adaptive_threads: bool = Field(
        True, description="before each epoch, fit the thread count to the cores left free"
    )
    # baselines
    baselines: list[Literal["pop", "als", "ease", "itemknn"]] = Field(
        default=["pop", "als", "ease"]
    )
    als_factors: int = Field(128, gt=0)
    als_regularization: float = Field(50.0, ge=0)
    als_alpha: float = Field(30.0, gt=0)
    als_iterations: int = Field(15, gt=0)
    ease_lambda: float = Field(500.0, gt=0)
    ease_max_products: int = Field(20000, gt=0, description="larger catalogs use ItemKNN")
    itemknn_neighbors: int = Field(100, gt=0)

    def val_sample(self, n_products: int) -> int:
        """Creators per validation check (0 = all): `val_creators`, or more while the
        check costs at most `val_scores` scores. A sampled check's noise moves the early
        stop: on Amazon Beauty's 12,101 goods, 4,000 sampled creators stopped at epoch 8
        (best 6, Hit@10 0.0513) where every creator stopped at 10 (best 8, 0.0547)."""
        if not self.val_creators:
            return 0
        return max(self.val_creators, self.val_scores // max(n_products, 1))

    def for_data(self, side_features: bool) -> MatchingConfig:
        """These settings for data with or without side features (`with_side_features`)."""
        if not side_features:
            return self
        update = self.with_side_features.model_dump(exclude_none=True)
        return self.model_copy(update=update) if update else self

    @model_validator(mode="after")
    def _negatives_exist(self) -> MatchingConfig:
        if not self.in_batch_negatives and self.extra_negatives == 0:
            raise ValueError("in_batch_negatives=false needs extra_negatives > 0")
        return self


class FloatRange(StrictModel):
    """A float setting drawn from [low, high], log-uniform when `log`."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False


class IntRange(StrictModel):
    """An int setting drawn from low..high (by `step`, or log-uniform when `log`)."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, gt=0)
    log: bool = False


class Choice(StrictModel):
    """A setting drawn from a list of values (numbers, names, lists)."""

    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)


Distribution = Annotated[FloatRange | IntRange | Choice, Field(discriminator="type")]


class TuneConfig(StrictModel):
    """`haowu tune`: the budget, the sampler's seed, the pruner and the search spaces.
    Every key of a space is a `matching.*` setting (checked before any training)."""

    trials: int = Field(20, gt=0, description="trials per model unless --trials/--minutes")
    seed: int = 42
    startup_trials: int = Field(3, ge=0, description="trials never pruned (median needs some)")
    warmup_epochs: int = Field(2, ge=0, description="first epochs of a trial, never pruned")
    two_tower: dict[str, Distribution] = Field(default_factory=dict)
    als: dict[str, Distribution] = Field(default_factory=dict)
    ease: dict[str, Distribution] = Field(default_factory=dict)


class TunedOn(StrictModel):
    """What a `haowu tune` YAML was tuned on: `train-matching` refuses it for a data set
    whose side-feature columns differ (the towers it tuned would not be the same)."""

    data: str
    fingerprint: str | None = None
    columns: dict[str, list[str]]
    metric: str
    value: float
    trials: int


class BrokersConfig(StrictModel):
    """Broker matchmaking (`haowu match-brokers`): capacities, solver, expected value.
    Exclusions are the policy's (`policy.exclude_tiers`, `policy.exclude_flagged`)."""

    max_goods_per_creator: int = Field(10, gt=0, description="a (median) creator's goods")
    max_creators_per_product: int = Field(3, gt=0)
    capacity_followers_exponent: float = Field(
        0.0, ge=0, le=2, description="creator cap scales as (followers / median) ** this"
    )
    creator_capacity_limit: int = Field(30, gt=0, description="bound of a follower-scaled cap")
    exact_max_pairs: int = Field(400_000, ge=0, description="above: greedy instead of the LP")
    measure_greedy_gap: bool = True
    affinity_normalisation: Literal["catalog", "broker"] = "catalog"
    normaliser_sample: int = Field(4096, gt=0)
    conversion_weight: float = Field(1.0, ge=0)
    commission_weight: float = Field(0.5, ge=0)
    reach_weight: float = Field(0.0, ge=0)
    conversion_prior_strength: float = Field(5.0, ge=0)
    random_repeats: int = Field(3, gt=0)
    seed: int = 42


class IndexConfig(StrictModel):
    """Retrieval index over embeddings (models/retrieval/index.py); configs/index/default.yaml."""

    kind: Literal["auto", "flat", "ivf_flat", "ivf_sq8", "ivf_pq_refine"] = "auto"
    flat_max_items: int = Field(50_000, ge=0)
    ivf_flat_max_items: int = Field(1_000_000, ge=0)
    nlist_per_sqrt: float = Field(4.0, gt=0)
    min_nlist: int = Field(64, gt=0)
    max_nlist: int = Field(4096, gt=0)
    train_points_per_list: int = Field(40, ge=39)
    norm_augment: bool = True
    norm_augment_min_spread: float = Field(0.001, ge=0)
    coarse_quantizer: Literal["flat", "hnsw"] = "flat"
    hnsw_m: int = Field(32, gt=1)
    hnsw_ef_search: int = Field(64, gt=0)
    pq_dims_per_code: int = Field(1, gt=0)
    refine_k_factor: float = Field(2.0, ge=1)
    max_refine_k_factor: float = Field(8.0, ge=1)
    default_nprobe: int = Field(16, gt=0)
    target_recall: float = Field(0.95, gt=0, le=1)
    tune_margin: float = Field(0.01, ge=0, lt=1)
    tune_k: int = Field(100, gt=0)
    tune_queries: int = Field(1000, gt=0)
    add_batch: int = Field(1_000_000, gt=0)
    threads: int = Field(2, gt=0)
    seed: int = 0


class PolicyConfig(StrictModel):
    """Filters, Selected Goods boost and diversity (models/retrieval/policy.py)."""

    overfetch: float = Field(2.0, ge=1)
    max_ann_fetch: int = Field(2000, gt=0)
    exclude_seen: bool = True
    exclude_tiers: list[int] = Field(default=[0])
    exclude_flagged: bool = True
    selected_tier: int = Field(5, ge=0, le=5)
    selected_boost: float = Field(0.5, ge=0)
    min_selected_share: float = Field(0.1, ge=0, le=1)
    diversity_method: Literal["mmr_sort", "mmr", "cap", "none"] = "mmr_sort"
    diversity_level: Literal["category_l1", "category_l2", "category_l3"] = "category_l3"
    category_cap_share: float = Field(0.1, gt=0, le=1)
    mmr_lambda: float = Field(0.75, ge=0, le=1)


class ServeConfig(StrictModel):
    """The online lookup service (`haowu serve`); see configs/serve/default.yaml."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    threads: int = Field(1, ge=1, description="torch / FAISS threads per worker")
    default_k: int = Field(20, ge=1, le=500)
    use_batch_lists: bool = True
    use_product_lists: bool = True
    max_body_bytes: int = Field(65536, gt=0)
    body_timeout_s: float = Field(10.0, gt=0, description="a body not sent by then is a 408")
    admin_token_env: str = "HAOWU_ADMIN_TOKEN"
    api_key_env: str = "HAOWU_API_KEY"
    protect_metrics: bool = False
    reload_on_sighup: bool = True
    load_timeout_s: float = Field(600, gt=0)
    access_log: bool = True
    tune_index: bool = True
    index_cache_dir: Path | None = None
    model_cache_dir: Path | None = None


class TierModelParams(StrictModel):
    """The tier model's knobs; saved beside the booster, so loading rebuilds the same model."""

    ordinal: Literal["cumulative", "regression"] = Field(
        "cumulative",
        description="cumulative: one binary booster per P(tier > k), score = sum of the "
        "probabilities; regression: one booster on the label",
    )
    interactions: Literal["dimension", "free"] = Field(
        "dimension", description="dimension: each tree splits on one dimension's indicators"
    )
    num_boost_round: int = Field(3000, gt=0)
    early_stopping_rounds: int = Field(100, gt=0)
    cold_augment_share: float = Field(
        0.3, ge=0, le=1, description="training rows copied with sales history masked"
    )
    cut_rounds: int = Field(4, ge=0)
    cut_candidates: int = Field(64, gt=1)
    l5_target_precision: float = Field(0.9, gt=0, le=1)
    l5_min_support: int = Field(20, gt=0)
    train_threads: int = Field(1, gt=0)
    score_threads: int = Field(2, gt=0)
    explain_block_rows: int = Field(65536, gt=0)
    max_table_cells: int = Field(
        4_000_000, gt=0, description="largest per-dimension lookup table compiled for scoring"
    )
    lightgbm: dict[str, Any] = Field(
        default={"objective": "regression", "learning_rate": 0.1, "num_leaves": 15},
        description="passed to lightgbm.train; constraints are set by the model",
    )


class SelectedGoodsParams(StrictModel):
    """The Selected Goods campaign pool (`haowu selected-goods`)."""

    category_column: str = "category_l1"
    quota_per_category: int = Field(0, ge=0, description="0: no quota")
    min_commission: float = Field(0.0, ge=0, le=1)


class TierBenchParams(StrictModel):
    """`haowu bench tier`: synthetic indicator rows scored in chunks."""

    rows: int = Field(10_000_000, gt=0)
    chunk_rows: int = Field(1_000_000, gt=0)
    fit_rows: int = Field(20_000, gt=0)
    missing_share: float = Field(0.04, ge=0, lt=1)
    no_history_share: float = Field(0.03, ge=0, lt=1)
    seed: int = 7


class TierConfig(StrictModel):
    """Five-dimension product tiering (`haowu train-tier`)."""

    seed: int = 42
    valid_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    min_labels_per_tier: int = Field(5, ge=3)
    chunk_rows: int = Field(1_000_000, gt=0)
    scaler_grid_points: int = Field(1001, gt=1)
    sample_rows: int = Field(1000, ge=0)
    input_example_rows: int = Field(5, gt=0)
    plot_dpi: int = Field(110, gt=0)
    model: TierModelParams = TierModelParams()
    selected_goods: SelectedGoodsParams = SelectedGoodsParams()
    bench: TierBenchParams = TierBenchParams()


class BatchBenchParams(StrictModel):
    """`haowu bench batch`: synthetic world and the sample compared with exact search."""

    k: int = Field(100, gt=0)
    eval_queries: int = Field(1000, gt=0, description="sampled queries: ANN recall and exact q/s")
    seen_per_creator: int = Field(0, ge=0, description="0: interactions / creators of the preset")
    seed: int = 11


class BatchConfig(StrictModel):
    """The batch job's runner (serving/batch/shards.py): parts, engine and parallelism."""

    shard_size: int = Field(5_000, gt=0, description="queries per part-NNNNN.parquet")
    product_shard_size: int = Field(
        100_000, gt=0, description="the same for product lists (creators for each good)"
    )
    engine: Literal["local", "ray"] = "local"
    workers: int = Field(2, gt=0, description="processes (local) or actors (ray)")
    cores: int = Field(
        0, ge=0, description="cores split among workers; 0: all this process may use"
    )
    bench: BatchBenchParams = BatchBenchParams()

    def shard_size_for(self, direction: str) -> int:
        """Queries per part: product lists take larger parts, since the creators index
        answers a call faster when many of its queries share lists (models/retrieval/index.py)."""
        return self.product_shard_size if direction == "product" else self.shard_size


class FineTuneConfig(StrictModel):
    """`haowu fine-tune` / `haowu refresh --fine-tune`: the champion trained on from where it
    stood, on a delta's new pairs plus a replay of older ones (training/matching/fine_tune.py)."""

    epochs: int = Field(1, gt=0, description="passes over the new pairs and their replay")
    replay_share: float = Field(
        1.0, ge=0, le=1, description="share of the older pairs replayed, against forgetting"
    )
    holdout_fraction: float = Field(
        0.3, gt=0, lt=1, description="latest share of the new pairs kept out, to judge on"
    )
    lr_scale: float = Field(
        1.0, gt=0, le=1, description="learning rates of the champion's settings times this"
    )
    min_new_pairs: int = Field(
        100, gt=0, description="fewer new pairs than this: nothing to learn from, refused"
    )
    carry_optimizer: bool = Field(
        False, description="go on with the champion's optimiser state (when it saved one)"
    )
    start_from: Literal["trained", "current"] = Field(
        "trained", description="fine-tune the model train-matching made, or DIR's model"
    )


class RefreshBenchParams(StrictModel):
    """`haowu bench refresh`: the replayed days and the retrain arm's one fit."""

    epochs: int = Field(3, gt=0, description="train-matching's one fit (start and daily retrain)")
    k: int = Field(50, gt=0, description="recall@k of the creator lists on each day's new pairs")
    seed: int = Field(0, description="which merchant is flagged each day")


class RefreshConfig(StrictModel):
    """`haowu refresh` (serving/refresh/): when an updated index is rebuilt, not patched;
    how the champion is fine-tuned on the new interactions (`--fine-tune`)."""

    probe_queries: int = Field(
        200, gt=0, description="fixed sample of creator vectors probing recall vs exact"
    )
    probe_k: int = Field(100, gt=0, description="recall@k of the probe (capped at the index size)")
    max_list_imbalance: float = Field(
        8.0, gt=1, description="IVF: largest list / mean list size beyond which to rebuild"
    )
    seed: int = 0
    new_good_creators: int = Field(
        1,
        ge=0,
        description="exposure slot: a new good no list took joins this many "
        "creators' lists (0 = off)",
    )
    new_good_slots_per_list: int = Field(
        1, gt=0, description="exposure slot: last places one list gives to such goods"
    )
    fine_tune: FineTuneConfig = FineTuneConfig()
    bench: RefreshBenchParams = RefreshBenchParams()


class Settings(StrictModel):
    """Every group a job may read. Later groups default so old configs keep loading."""

    data: DataConfig
    tier: TierConfig = TierConfig()
    registry: RegistryConfig = RegistryConfig()
    matching: MatchingConfig = MatchingConfig()
    brokers: BrokersConfig = BrokersConfig()
    index: IndexConfig = IndexConfig()
    policy: PolicyConfig = PolicyConfig()
    batch: BatchConfig = BatchConfig()
    serve: ServeConfig = ServeConfig()
    tune: TuneConfig = TuneConfig()
    tuned_on: TunedOn | None = None  # set by a `haowu tune` YAML, not a config group
    refresh: RefreshConfig = RefreshConfig()


GROUPS: tuple[str, ...] = tuple(name for name in Settings.model_fields if name != "tuned_on")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: expected a mapping at the top level, got {type(loaded).__name__}"
        )
    return loaded


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins, nested mappings merge key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """`matching.epochs=3` -> {"matching": {"epochs": 3}}; the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    value = yaml.safe_load(raw) if raw.strip() else None
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def load_settings(
    preset: str = "small",
    config_file: Path | None = None,
    overrides: Iterable[str] = (),
    config_dir: Path | None = None,
) -> Settings:
    """Compose and validate the settings for one job."""
    root = config_dir or CONFIG_DIR
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    preset_doc = _read_yaml(root / "preset" / f"{preset}.yaml")
    selected = preset_doc.pop("defaults", {}) or {}
    raw: dict[str, Any] = {}
    for group in GROUPS:
        choice = selected.get(group, "default")
        raw[group] = _read_yaml(root / group / f"{choice}.yaml")
    raw = deep_merge(raw, preset_doc)
    if config_file is not None:
        raw = deep_merge(raw, _read_yaml(Path(config_file)))
    for item in overrides:
        raw = deep_merge(raw, parse_override(item))
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            + ("" if isinstance(err.get("input"), dict) else f" (got {err.get('input')!r})")
            for err in exc.errors()
        ]  # a rule across keys names its section, not the whole section's values
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None
