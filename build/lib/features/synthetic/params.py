"""The synthetic marketplace's parameters (`data:` in the settings, configs/data/*.yaml):
its size per preset and the hidden structure the generator draws from."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from features.strict_model import StrictModel


class CatalogParams(StrictModel):
    """Hidden structure of categories, merchants and products in the synthetic marketplace."""

    centroid_scales: list[float] = Field(
        default=[1.0, 0.6, 0.35],
        min_length=3,
        max_length=3,
        description="spread of l1 centroids, then l2 and leaf offsets (latents are O(1))",
    )
    leaf_price_median: float = Field(60.0, gt=0, description="median of leaf median prices")
    leaf_price_sigma: float = Field(0.9, ge=0, description="lognormal sigma of leaf median prices")
    merchant_size_sigma: float = Field(
        1.3, ge=0, description="lognormal sigma of products per merchant"
    )
    merchant_focus: float = Field(0.85, ge=0, le=1, description="share of products in the main l1")
    merchant_quality_sd: float = Field(0.5, ge=0)
    brand_quality_corr: float = Field(0.4, ge=-1, le=1)
    official_brand_share: float = Field(0.15, ge=0, le=1)
    official_brand_noise: float = Field(
        0.6, ge=0, description="noise on brand strength before the cut"
    )
    brand_awareness_median: float = Field(200.0, gt=0)
    brand_awareness_sigma: float = Field(1.6, ge=0)
    store_rating_mean: float = Field(4.5, ge=0, le=5)
    store_rating_sd: float = Field(0.3, ge=0)
    store_rating_quality_coef: float = Field(0.25, ge=0)
    flagged_quality_penalty: float = Field(
        1.5, ge=0, description="quality drop of flagged merchants"
    )
    new_merchant_days: int = Field(90, gt=0, description="merchants younger than this are new")
    new_merchant_size_factor: float = Field(
        0.3, gt=0, description="relative catalog size of new merchants"
    )
    max_merchant_age_days: int = Field(3000, gt=0)
    max_product_age_days: int = Field(
        730, gt=0, description="oldest listing date, days before the end"
    )
    new_product_recency: float = Field(
        1.5, gt=0, description=">1 skews new listings to recent days"
    )
    price_sigma: float = Field(
        0.5, ge=0, description="lognormal sigma of price around the leaf median"
    )
    price_brand_coef: float = Field(
        0.15, description="log-price premium per unit of brand strength"
    )
    commission_median: float = Field(0.12, gt=0, lt=1)
    commission_sigma: float = Field(0.5, ge=0)
    commission_quality_coef: float = Field(
        -0.15, description="weak goods buy promoters with commission"
    )
    commission_range: list[float] = Field(default=[0.01, 0.5], min_length=2, max_length=2)
    platform_low_share: float = Field(
        0.4, ge=0, le=1, description="products that are the platform low"
    )
    platform_markup_median: float = Field(0.08, gt=0)
    platform_markup_sigma: float = Field(0.7, ge=0)
    product_latent_noise: float = Field(
        0.5, ge=0, description="product latent spread around its leaf"
    )
    popularity_sigma: float = Field(1.4, ge=0, description="lognormal sigma of product popularity")
    popularity_quality_corr: float = Field(0.5, ge=-1, le=1)
    product_chunk_rows: int = Field(1_000_000, gt=0, description="products generated per chunk")


class IndicatorParams(StrictModel):
    """How the 30-day indicators, the hidden true tier and the auditor labels are drawn."""

    stats_window_days: int = Field(30, gt=0)
    promoters_mean: float = Field(
        4.0, gt=0, description="mean active promoters of a 30-day product"
    )
    promoters_quality_coef: float = Field(0.3)
    units_per_promoter: float = Field(6.0, gt=0)
    units_quality_coef: float = Field(0.4)
    positive_review_logit: list[float] = Field(
        default=[2.5, 0.8, 0.5],
        min_length=3,
        max_length=3,
        description="intercept, quality coefficient, noise sd",
    )
    refund_logit: list[float] = Field(default=[-3.0, -0.8, 0.6], min_length=3, max_length=3)
    ship_48h_logit: list[float] = Field(
        default=[1.5, 1.0, 0.6],
        min_length=3,
        max_length=3,
        description="intercept, merchant quality coefficient, noise sd",
    )
    conversion_logit: list[float] = Field(default=[-3.5, 0.4, 0.5], min_length=3, max_length=3)
    conversion_price_coef: float = Field(-0.3, description="per unit of log price index")
    stats_missing_share: float = Field(0.02, ge=0, lt=1, description="random gaps per stats column")
    dimension_weights: dict[str, float] = Field(
        default={"brand": 0.12, "price": 0.18, "distribution": 0.15, "service": 0.30, "sales": 0.25}
    )
    indicator_weights: dict[str, float] = Field(
        default={
            "brand_awareness": 0.7,
            "is_official_brand": 0.3,
            "price_index": 0.6,
            "price_vs_platform_low": 0.4,
            "commission_rate": 0.4,
            "active_promoters_30d": 0.6,
            "positive_review_rate": 0.4,
            "refund_rate": 0.35,
            "ship_48h_rate": 0.25,
            "gmv_30d": 0.6,
            "conversion_rate": 0.4,
        },
        description="weight of each indicator inside its dimension",
    )
    service_sales_interaction: float = Field(0.3, ge=0, description="weight of min(service, sales)")
    sales_saturation: float = Field(1.5, gt=0, description="tanh scale on the sales dimension")
    refund_veto_rate: float = Field(
        0.15, gt=0, lt=1, description="refund rate where the veto bites"
    )
    refund_veto_width: float = Field(0.02, gt=0)
    refund_veto_strength: float = Field(2.0, ge=0)
    label_cold_weight: float = Field(0.3, ge=0, description="labelling odds of a cold product")
    label_days: int = Field(60, gt=0, description="labels were given in these last days")


class AudienceParams(StrictModel):
    """Hidden structure of creators, their tastes and the brokers' rosters and goods."""

    followers_median: float = Field(3000.0, gt=0)
    followers_sigma: float = Field(1.9, ge=0)
    activity_sigma: float = Field(
        1.2, ge=0, description="lognormal sigma of promotions per creator"
    )
    activity_followers_corr: float = Field(0.6, ge=-1, le=1)
    new_creator_share: float = Field(
        0.1, ge=0, le=1, description="creators who joined in the window"
    )
    max_creator_age_days: int = Field(2500, gt=0)
    secondary_same_l1: float = Field(
        0.7, ge=0, le=1, description="secondary leaves in the primary's l1"
    )
    price_band_shares: list[float] = Field(
        default=[0.2, 0.25, 0.25, 0.18, 0.12], min_length=5, max_length=5
    )
    female_share_range: list[float] = Field(default=[0.2, 0.85], min_length=2, max_length=2)
    female_share_concentration: float = Field(8.0, gt=0, description="Beta concentration per l1")
    n_regions: int = Field(31, gt=0)
    region_zipf: float = Field(0.8, ge=0)
    taste_blend: list[float] = Field(
        default=[0.8, 0.2],
        min_length=2,
        max_length=2,
        description="weight of the primary and of the mean secondary leaf centroid",
    )
    taste_noise: float = Field(0.5, ge=0)
    broker_l1_range: list[int] = Field(default=[2, 4], min_length=2, max_length=2)
    broker_goods_median: float = Field(40.0, gt=0)
    broker_goods_sigma: float = Field(1.0, ge=0)
    broker_roster_sigma: float = Field(1.0, ge=0)
    broker_l1_affinity: float = Field(
        4.0, ge=0, description="roster boost for a creator in the l1s"
    )


class AffinityParams(StrictModel):
    """The hidden choice model behind interactions (and the oracle that inverts it)."""

    leaf_mix: list[float] = Field(
        default=[0.55, 0.30, 0.15],
        min_length=3,
        max_length=3,
        description="leaf of a promotion: primary, secondaries, global by popularity",
    )
    alpha: float = Field(3.0, ge=0, description="weight of <creator taste, product latent>")
    beta: float = Field(0.5, ge=0, description="penalty per price band of mismatch")
    gamma: float = Field(0.5, ge=0, description="weight of product quality")
    orders_base: float = Field(0.3, description="log mean extra orders of a median creator")
    orders_followers_coef: float = Field(0.3)
    orders_affinity_coef: float = Field(0.2)
    score_batch_rows: int = Field(500_000, gt=0, description="events scored at once in a chunk")


class DataConfig(StrictModel):
    """Shape of the synthetic marketplace (`haowu generate`)."""

    preset: str
    seed: int = 42
    n_creators: int = Field(gt=0)
    n_products: int = Field(gt=0)
    n_merchants: int = Field(gt=0)
    n_brokers: int = Field(ge=0)
    n_categories_l1: int = Field(gt=0)
    n_categories_l2: int = Field(gt=0)
    n_leaf_categories: int = Field(gt=0)
    interactions: int = Field(gt=0, description="target number of interaction rows")
    days: int = Field(180, gt=7)
    cold_days: int = Field(
        7, gt=0, description="products listed this recently have no sales history"
    )
    new_product_share: float = Field(
        0.08, ge=0, le=1, description="products listed inside the log window"
    )
    new_merchant_share: float = Field(0.12, ge=0, le=1)
    flagged_merchant_share: float = Field(0.03, ge=0, le=1)
    broker_creator_share: float = Field(0.3, ge=0, le=1)
    label_share: float = Field(0.07, gt=0, le=1)
    label_noise: float = Field(0.12, ge=0, le=1)
    tier_shares: list[float] = Field(default=[0.12, 0.26, 0.24, 0.19, 0.12, 0.07])
    latent_dim: int = Field(16, gt=0)
    candidates: int = Field(16, gt=1, description="proposal products scored per interaction")
    zipf_categories: float = Field(1.05, gt=0)
    chunk_rows: int = Field(2_000_000, gt=0, description="interaction rows per generated part")
    end_date: date = Field(
        date(2026, 11, 1), description="the interaction log ends here (exclusive)"
    )
    workers: int = Field(2, gt=0, description="threads generating interaction chunks")
    catalog: CatalogParams = CatalogParams()
    indicators: IndicatorParams = IndicatorParams()
    audience: AudienceParams = AudienceParams()
    affinity: AffinityParams = AffinityParams()
