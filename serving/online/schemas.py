"""Request and response bodies of the HTTP service (DESIGN §6); the OpenAPI at /docs.

IDs in paths and answers are the user's own (int64, or strings for data imported with
string IDs), so a path ID follows the one ID rule `haowu import` applies
(features/idmap.py): an ID that cannot be one of the catalog's IDs is a 422, one the
model does not know a 404.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.version import haowu_version
from models.retrieval.catalog import PRICE_BANDS

K_MAX = 500

Id = int | str
K = Annotated[int, Field(ge=1, le=K_MAX, description=f"list length, 1..{K_MAX}")]
Band = Annotated[int, Field(ge=0, le=PRICE_BANDS - 1)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)]
CategoryIds = Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(max_length=100)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GoodsFilters(BaseModel):
    """Optional per-request filters on top of the platform's rules (L0 and goods of
    flagged merchants are never shown). As query parameters, categories repeat:
    `?category_l1=3&category_l1=7`."""

    category_l1: CategoryIds | None = None
    category_l2: CategoryIds | None = None
    category_l3: CategoryIds | None = None
    min_tier: int | None = Field(None, ge=0, le=5, description="only goods of this tier or above")
    price_band_min: Band | None = None
    price_band_max: Band | None = None
    min_commission: Share | None = None

    @model_validator(mode="after")
    def _bands_in_order(self) -> GoodsFilters:
        low, high = self.price_band_min, self.price_band_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"price_band_min {low} is above price_band_max {high}")
        return self


class GoodsItem(BaseModel):
    rank: int
    product_id: Id
    score: float = Field(description="the model's score (a logit); ranking may add boosts")
    tier: int | None = Field(description="L0..L5 as 0..5; null when not tiered")
    selected_goods: bool = Field(description="an L5 good: the Selected Goods badge")
    category_l1: int | None
    reason: str = Field(description="why the good is in the list")


class GoodsList(BaseModel):
    creator_id: Id | None = Field(description="null for a new creator described by features")
    k: int
    source: Literal["batch", "live"] = Field(description="precomputed list or live from the index")
    model_version: str
    items: list[GoodsItem]
    note: str | None = Field(None, description="why the list holds fewer than k goods")


class CreatorItem(BaseModel):
    rank: int
    creator_id: Id
    score: float


class CreatorList(BaseModel):
    product_id: Id | None = Field(description="null for a new product described by features")
    k: int
    source: Literal["batch", "live"]
    model_version: str
    items: list[CreatorItem]
    note: str | None = None


class TierAnswer(BaseModel):
    product_id: Id
    tier: int = Field(description="0..5 (L0..L5)")
    selected_goods: bool
    score: float
    contributions: dict[str, float] = Field(
        description="per dimension (brand, price, distribution, service, sales): how much it "
        "moved the score; with the model's base they sum to the score"
    )
    top_for: str | None = Field(description="the indicator that pushed the score up most")
    top_against: str | None = Field(description="the indicator that pulled it down most")
    reason: str = Field(description="what set the tier: the model, or a business rule")
    has_sales_history: bool | None


class NewCreator(Strict):
    """A creator the model has never seen, described by its side features (all optional)."""

    category_pref: int | None = Field(None, ge=0, le=2**31 - 1, description="leaf category")
    price_band: Band | None = None
    region: int | None = Field(None, ge=0, le=2**31 - 1)
    followers: Count | None = None
    fans_female_share: Share | None = None
    account_age_days: Count | None = None


class NewCreatorQuery(Strict):
    creator: NewCreator
    k: K = 20
    filters: GoodsFilters | None = None


class NewProduct(Strict):
    """A product the model has never seen, described by its side features (all optional)."""

    category_l1: int | None = Field(None, ge=0, le=2**31 - 1)
    category_l2: int | None = Field(None, ge=0, le=2**31 - 1)
    category_l3: int | None = Field(None, ge=0, le=2**31 - 1)
    price: Count | None = None
    commission_rate: Share | None = None
    merchant_id: int | None = Field(
        None, ge=0, le=2**63 - 1, description="a known merchant fills brand features"
    )
    is_official_brand: bool | None = None
    brand_awareness: Count | None = None
    tier: int | None = Field(None, ge=0, le=5)
    tier_score: float | None = Field(None, ge=-1e6, le=1e6, allow_inf_nan=False)
    price_index: Count | None = None
    price_vs_platform_low: Count | None = None
    positive_review_rate: Share | None = None
    refund_rate: Share | None = None
    ship_48h_rate: Share | None = None


class NewProductQuery(Strict):
    product: NewProduct
    k: K = 20


class ErrorBody(BaseModel):
    error: str = Field(description="a stable code, e.g. unknown_creator, invalid_request")
    detail: str | list[dict]
    request_id: str | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str = Field(default_factory=haowu_version, description="haowu's version")


class ModelStatus(BaseModel):
    label: str
    uri: str
    folder: str
    name: str | None
    version: str | None
    run_id: str | None
    digest: str | None = Field(None, description="sha256 of the model's content")
    loaded_at: float
    load_seconds: float


class Readiness(BaseModel):
    ready: bool
    loading: bool
    model: ModelStatus | None = None
    parts: dict[str, bool] = Field(default_factory=dict, description="optional parts loaded")
    lists: dict[str, str] = Field(
        default_factory=dict,
        description='per direction (creator, product): "batch" when the batch lists of the '
        'served model answer, else "live (why)", e.g. lists written by another model',
    )
    reloads: int = 0
    last_error: str | None = None
    memory_bytes: dict[str, int] = Field(
        default_factory=dict, description="bytes held by each part of the served model"
    )


class ReloadAnswer(BaseModel):
    status: Literal["started", "already_running", "running", "ok", "failed", "idle", "restarting"]
    model: ModelStatus | None = Field(None, description="the model serving now")
    error: str | None = None
    started_at: float | None = Field(None, description="when the last load started (unix time)")
    seconds: float | None = Field(None, description="how long the last load took")
