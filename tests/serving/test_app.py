"""The lookup service end to end on tiny data: the real app over a real pipeline folder
(train-matching, both batch lists, match-brokers; tiers written from the synthetic truth),
through TestClient, a real uvicorn server for concurrency, and a schemathesis property
test over the OpenAPI schema."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from features.indicators import DIMENSIONS
from features.io import read_table
from features.settings import Settings, load_settings
from features.version import haowu_version
from models.artifacts import MODEL_DIGEST
from serving.api.app import create_app, install_sighup
from serving.online import lookup
from serving.online.broker_matches import BrokerMatchStore
from serving.online.bundle import Bundle, load_bundle
from serving.online.sources import ServeSources

TOKEN = "admin-secret-token"
MATCHING = [
    "matching.epochs=1",
    "matching.protocols=[random]",
    "matching.baselines=[pop]",
    "matching.refit_all=false",
    "matching.threads=1",
    "matching.val_creators=300",
    "matching.eval_creators=300",
]
LIST_K = 30


def _tiers_from_truth(data: Path, out: Path) -> None:
    """A tier run's tiers.parquet from the synthetic truth (the service only reads it)."""
    truth = pd.read_parquet(data / "truth" / "products.parquet")
    rng = np.random.default_rng(0)
    contrib = rng.normal(0, 0.3, (len(truth), len(DIMENSIONS))).astype(np.float32)
    frame = pd.DataFrame({"product_id": truth["product_id"], "tier": truth["true_tier"]})
    frame["score"] = truth["true_tier"] + 0.5 + contrib.sum(axis=1)
    for j, dim in enumerate(DIMENSIONS):
        frame[f"contrib_{dim}"] = contrib[:, j]
    frame["top_for"] = pd.Categorical(np.where(contrib[:, 0] > 0, "brand_awareness", "gmv_30d"))
    frame["top_against"] = pd.Categorical(["refund_rate"] * len(frame))
    frame["reason"] = pd.Categorical(["model"] * len(frame))
    frame["has_sales_history"] = True
    out.mkdir(parents=True)
    frame.to_parquet(out / "tiers.parquet", index=False)


@pytest.fixture(scope="module")
def cfg() -> Settings:
    return load_settings("tiny", overrides=[*MATCHING, "serve.access_log=false"])


@pytest.fixture(scope="module")
def served(tiny_data: Path, cfg: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline folder: data, tier, matching, lists/{creator,product}, brokers."""
    from serving.batch.job import ListsRequest
    from serving.batch.job import run as recommend
    from serving.brokers.job import run as match_brokers
    from training.matching.job import run as train_matching

    root = tmp_path_factory.mktemp("served")
    (root / "data").symlink_to(tiny_data)
    _tiers_from_truth(tiny_data, root / "tier")
    train_matching(cfg, root / "data", root / "matching", tiers=root / "tier", progress=False)
    for direction in ("creator", "product"):
        request = ListsRequest(
            root / "data", str(root / "matching"), str(root / "tier"), LIST_K, direction
        )
        recommend(cfg, request, root / "lists" / direction, progress=False, workers=1)
    match_brokers(
        cfg, root / "data", root / "matching", root / "brokers", tiers=root / "tier", progress=False
    )
    return root


@pytest.fixture(scope="module")
def bundle(served: Path, cfg: Settings) -> Bundle:
    return load_bundle(ServeSources.from_dir(served), cfg)


@pytest.fixture(scope="module")
def env() -> Iterator[None]:
    old = os.environ.get("HAOWU_ADMIN_TOKEN")
    os.environ["HAOWU_ADMIN_TOKEN"] = TOKEN
    yield
    if old is None:
        os.environ.pop("HAOWU_ADMIN_TOKEN", None)
    else:
        os.environ["HAOWU_ADMIN_TOKEN"] = old


@pytest.fixture(scope="module")
def client(cfg: Settings, bundle: Bundle, env: None) -> Iterator[TestClient]:
    with TestClient(create_app(cfg, bundle=bundle), raise_server_exceptions=False) as c:
        yield c


def _ids(bundle: Bundle, side: str, n: int) -> list[int]:
    return getattr(bundle, side).ids.ids[:n].tolist()


ADMIN = {"Authorization": f"Bearer {TOKEN}"}


# ----------------------------------------------------------------------- readiness


def test_readyz_is_503_until_the_model_is_loaded(cfg: Settings, bundle: Bundle, env: None):
    gate = threading.Event()

    def slow_load() -> Bundle:
        assert gate.wait(30)
        return bundle

    app = create_app(cfg, sources=bundle.sources, loader=slow_load)
    with TestClient(app) as c:
        assert c.get("/healthz").json() == {"status": "ok", "version": haowu_version()}
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["loading"] is True
        r = c.get(f"/creators/{_ids(bundle, 'creators', 1)[0]}/goods")
        assert r.status_code == 503 and r.json()["error"] == "not_ready"
        assert r.headers["retry-after"] == "1"
        gate.set()
        for _ in range(200):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.02)
        ready = c.get("/readyz").json()
        assert ready["ready"] and ready["model"]["label"] == bundle.info.label
        assert all(ready["parts"].values()), ready["parts"]


def test_failed_first_load_stays_503_and_says_why(cfg: Settings, bundle: Bundle, env: None):
    def broken() -> Bundle:
        raise FileNotFoundError("no such run folder")

    with TestClient(create_app(cfg, sources=bundle.sources, loader=broken)) as c:
        for _ in range(200):
            body = c.get("/readyz").json()
            if not body["loading"]:
                break
            time.sleep(0.02)
        assert c.get("/readyz").status_code == 503
        assert "no such run folder" not in body["last_error"]  # not to anyone who asks
        admin = c.get("/readyz", headers=ADMIN).json()
        assert "no such run folder" in admin["last_error"]
        assert c.get("/healthz").status_code == 200


# ----------------------------------------------------------------------- goods


def test_goods_from_batch_list_follow_the_rules(client: TestClient, bundle: Bundle, tiny_data):
    promoted = read_table(tiny_data, "interactions", columns=["creator_id", "product_id"])
    catalog = bundle.catalog
    for creator in _ids(bundle, "creators", 20):
        r = client.get(f"/creators/{creator}/goods", params={"k": 20})
        body = r.json()
        assert r.status_code == 200 and body["source"] == "batch" and body["creator_id"] == creator
        items = body["items"]
        assert [i["rank"] for i in items] == list(range(1, 21))
        ids = [i["product_id"] for i in items]
        assert len(set(ids)) == 20
        pos = bundle.products.ids.positions(np.array(ids))
        assert (catalog.tier[pos] != 0).all() and not catalog.flagged[pos].any()
        assert not set(ids) & set(promoted.loc[promoted.creator_id == creator, "product_id"])
        assert all(i["selected_goods"] == (i["tier"] == 5) and i["reason"] for i in items)


def test_batch_and_live_answers_agree(client: TestClient, bundle: Bundle):
    for creator in _ids(bundle, "creators", 60):
        for k in (7, LIST_K):
            batch = lookup.goods_for_creator(bundle, str(creator), k)
            live = lookup.goods_for_creator(bundle, str(creator), k, mode="live")
            assert (batch.source, live.source) == ("batch", "live")
            assert batch.items == live.items, creator
    for product in _ids(bundle, "products", 40):
        batch = lookup.creators_for_product(bundle, str(product), 10)
        live = lookup.creators_for_product(bundle, str(product), 10, mode="live")
        assert batch.source == "batch"
        assert [i.creator_id for i in batch.items] == [i.creator_id for i in live.items]
        scores = [i.score for i in live.items]  # batched FAISS sums in another order
        assert [i.score for i in batch.items] == pytest.approx(scores, rel=1e-5)


def test_k_beyond_the_batch_lists_is_answered_live(client: TestClient, bundle: Bundle):
    creator = _ids(bundle, "creators", 1)[0]
    body = client.get(f"/creators/{creator}/goods", params={"k": LIST_K + 10}).json()
    assert body["source"] == "live" and body["k"] == LIST_K + 10
    assert len({i["product_id"] for i in body["items"]}) == LIST_K + 10


def test_filters(client: TestClient, bundle: Bundle):
    creator, catalog = _ids(bundle, "creators", 3)[2], bundle.catalog
    cats = sorted({int(c) for c in catalog.category_l1[:50]})[:2]
    params = {
        "k": 10,
        "category_l1": cats,
        "min_tier": 3,
        "price_band_min": 1,
        "price_band_max": 3,
        "min_commission": 0.05,
    }
    body = client.get(f"/creators/{creator}/goods", params=params).json()
    assert body["items"], body
    pos = bundle.products.ids.positions(np.array([i["product_id"] for i in body["items"]]))
    assert set(catalog.category_l1[pos]) <= set(cats) and (catalog.tier[pos] >= 3).all()
    assert ((catalog.price_band[pos] >= 1) & (catalog.price_band[pos] <= 3)).all()
    assert (catalog.commission[pos] >= 0.05).all()
    empty = client.get(f"/creators/{creator}/goods", params={"category_l3": [10**9]}).json()
    assert empty["items"] == [] and empty["note"]


def test_new_creator_goods_depend_on_features(client: TestClient, bundle: Bundle):
    def top(features: dict) -> list:
        r = client.post("/creators/goods", json={"creator": features, "k": 15})
        assert r.status_code == 200 and r.json()["source"] == "live"
        assert r.json()["creator_id"] is None and len(r.json()["items"]) == 15
        return [i["product_id"] for i in r.json()["items"]]

    prefs = np.unique(read_table(bundle.sources.data, "creators")["category_pref"])
    assert top({"category_pref": int(prefs[0])}) != top({"category_pref": int(prefs[-1])})
    assert len(top({})) == 15  # no features at all: the OOV creator still gets a list
    filtered = client.post(
        "/creators/goods", json={"creator": {}, "k": 5, "filters": {"min_tier": 4}}
    ).json()
    assert all(i["tier"] >= 4 for i in filtered["items"])


# ----------------------------------------------------------------------- products


def test_creators_for_a_product_leave_out_its_promoters(client, bundle, tiny_data):
    promoted = read_table(tiny_data, "interactions", columns=["creator_id", "product_id"])
    popular = int(promoted["product_id"].value_counts().index[0])
    for k in (10, LIST_K + 5):
        body = client.get(f"/products/{popular}/creators", params={"k": k}).json()
        ids = [i["creator_id"] for i in body["items"]]
        assert len(ids) == k and body["source"] == ("batch" if k <= LIST_K else "live")
        assert not set(ids) & set(promoted.loc[promoted.product_id == popular, "creator_id"])


def test_new_product_creators(client: TestClient, bundle: Bundle):
    merchant = int(bundle.merchants.index[0])
    body = client.post(
        "/products/creators",
        json={"product": {"category_l3": 3, "price": 25.0, "merchant_id": merchant}, "k": 8},
    ).json()
    assert body["source"] == "live" and len(body["items"]) == 8
    assert [i["rank"] for i in body["items"]] == list(range(1, 9))


def test_tier_with_its_five_dimensions(client: TestClient, served: Path):
    tiers = pd.read_parquet(served / "tier" / "tiers.parquet").head(5)
    for row in tiers.itertuples():
        body = client.get(f"/products/{row.product_id}/tier").json()
        assert body["tier"] == row.tier and body["selected_goods"] == (row.tier == 5)
        assert body["score"] == pytest.approx(row.score, rel=1e-5)
        assert set(body["contributions"]) == set(DIMENSIONS)
        assert body["contributions"]["brand"] == pytest.approx(row.contrib_brand, rel=1e-5)
        assert body["top_against"] == "refund_rate" and body["reason"] == "model"


def test_broker_matches(client: TestClient, served: Path):
    store = BrokerMatchStore.load(served / "brokers")
    broker = store.broker_ids[0]
    body = client.get(f"/brokers/{broker}/matches").json()
    assert body == json.loads(store.get(broker).model_dump_json())


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/creators/42/goods", 404, "unknown_creator"),
        ("/products/42/creators", 404, "unknown_product"),
        ("/products/42/tier", 404, "unknown_product"),
        ("/brokers/42/matches", 404, "unknown_broker"),
        ("/no/such/route", 404, "not_found"),
        ("/creators/abc/goods", 422, "invalid_request"),
        ("/creators/99999999999999999999/goods", 422, "invalid_request"),
        ("/creators/" + "9" * 70 + "/goods", 422, "invalid_request"),
        ("/creators/{c}/goods?k=0", 422, "invalid_request"),
        ("/creators/{c}/goods?k=501", 422, "invalid_request"),
        ("/creators/{c}/goods?k=ten", 422, "invalid_request"),
        ("/creators/{c}/goods?min_tier=9", 422, "invalid_request"),
        ("/creators/{c}/goods?price_band_min=3&price_band_max=1", 422, "invalid_request"),
        ("/creators/{c}/goods?category_l1=x", 422, "invalid_request"),
        ("/products/{p}/creators?k=-3", 422, "invalid_request"),
        ("/brokers/minus-one/matches", 422, "invalid_request"),
    ],
)
def test_error_codes(client: TestClient, bundle: Bundle, path: str, status: int, code: str):
    path = path.format(c=_ids(bundle, "creators", 1)[0], p=_ids(bundle, "products", 1)[0])
    r = client.get(path)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["request_id"]


@pytest.mark.parametrize(
    "body",
    [
        {"creator": {"category_pref": "x"}},
        {"creator": {"followers": -1}},
        {"creator": {"fans_female_share": 2}},
        {"creator": {"unknown_feature": 1}},
        {"creator": {}, "k": 0},
        {"creator": {}, "filters": {"min_tier": "high"}},
        {"k": 5},
        [1, 2],
        "text",
    ],
)
def test_bad_bodies_are_422(client: TestClient, body: object):
    r = client.post("/creators/goods", json=body)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "path, raw, field",
    [
        ("/creators/goods", b'{"creator": {"followers": NaN}}', "followers"),
        ("/creators/goods", b'{"creator": {"followers": Infinity}}', "followers"),
        ("/creators/goods", b'{"creator": {"followers": -Infinity}}', "followers"),
        ("/creators/goods", b'{"creator": {}, "k": NaN}', "k"),
        ("/creators/goods", b'{"creator": {}, "filters": {"min_commission": -Infinity}}', None),
        ("/products/creators", b'{"product": {"price": 1, "extra": [NaN, Infinity]}}', "extra"),
    ],
)
def test_non_finite_numbers_in_a_body_are_422_without_a_traceback(
    client: TestClient, path: str, raw: bytes, field: str | None, caplog
):
    """Python's JSON reader takes NaN and Infinity; the 422 that echoes them must still
    be valid JSON (it was a 500 with a traceback in the log)."""
    with caplog.at_level(logging.ERROR):
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    body = json.loads(r.text)  # strict JSON: no bare NaN in the answer
    assert body["error"] == "invalid_request"
    assert "NaN" not in r.text.replace('"NaN"', "") and "Infinity" not in r.text.replace(
        '"Infinity"', ""
    ).replace('"-Infinity"', "")
    if field is not None:
        assert any(error["loc"][-1] == field for error in body["detail"]), body
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text


def test_a_body_shorter_than_its_length_is_a_408_not_a_held_connection(
    cfg: Settings, bundle: Bundle, env: None
):
    """The client declares 100 bytes, sends 10 and stalls: the request ends with a 408
    after `serve.body_timeout_s` instead of holding a worker forever."""
    import asyncio

    quick = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"body_timeout_s": 0.3})})
    app = create_app(quick, bundle=bundle)
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": b'{"creator":', "more_body": True}]

    async def receive() -> dict:
        if chunks:
            return chunks.pop()
        await asyncio.sleep(3600)  # the rest never comes
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/creators/goods",
        "raw_path": b"",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }

    async def call() -> None:
        await asyncio.wait_for(app(scope, receive, send), 5)

    with TestClient(app):  # startup: the bundle is in
        asyncio.run(call())
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["error"] == "body_timeout"


def test_files_truncated_under_a_running_service_do_not_crash_it(served: Path, tmp_path):
    """Editing a run folder while it is served (a retrain, a truncated copy) must not kill
    the server with SIGBUS: what it serves is in its own memory, not mapped files."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "served"
    shutil.copytree(served, copy, symlinks=False)
    script = Path(__file__).with_name("truncate_while_serving.py")
    out = subprocess.run([sys.executable, str(script), str(copy)], capture_output=True,
                         text=True, timeout=600, cwd=Path(__file__).parents[2])  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]  # -7 would be SIGBUS
    answers = json.loads(out.stdout.strip().splitlines()[-1])
    assert answers["after"] == answers["before"] == [200, 200, 200]
    assert answers["new"] == answers["product"] == 200


def test_path_ids_follow_the_import_rule(client: TestClient):
    """An e-mail-like or 256-character ID (which import accepts) passes the path rule and
    reaches the lookup (this catalog's IDs are integers, so the lookup says so); a space
    or an ID over 256 characters fails the path rule itself."""
    for accepted in ("ana@example.com", "x" * 256):
        r = client.get(f"/creators/{accepted}/goods")
        assert r.status_code == 422 and "64-bit integers" in r.text, r.text
    for refused in ("a%20b", "x" * 257):
        r = client.get(f"/creators/{refused}/goods")
        assert r.status_code == 422 and "64-bit integers" not in r.text, r.text


def test_not_json_and_too_large_bodies(client: TestClient):
    r = client.post(
        "/products/creators", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    big = json.dumps({"creator": {}, "pad": "x" * 70_000}).encode()
    r = client.post("/creators/goods", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    streamed = client.post(  # no content-length: counted as it arrives
        "/creators/goods",
        content=iter([big[:40_000], big[40_000:]]),
        headers={"content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert client.request("DELETE", "/healthz").status_code == 405


def test_no_towers_is_409_and_crashes_are_500_without_a_trace(cfg, bundle, monkeypatch):
    app = create_app(cfg, bundle=dataclasses.replace(bundle, embedder=None))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/creators/goods", json={"creator": {}})
        assert r.status_code == 409 and r.json()["error"] == "unsupported"

        def boom(*args: object) -> None:
            raise RuntimeError("secret internals /etc/passwd")

        monkeypatch.setattr(lookup, "product_tier", boom)
        r = c.get(f"/products/{_ids(bundle, 'products', 1)[0]}/tier")
        assert r.status_code == 500 and r.json()["error"] == "internal_error"
        assert "secret" not in r.text and "Traceback" not in r.text


# ----------------------------------------------------------------------- security


def test_admin_token(cfg: Settings, bundle: Bundle, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HAOWU_ADMIN_TOKEN", raising=False)
    with TestClient(create_app(cfg, bundle=bundle)) as c:  # no token set: admin is off
        assert c.post("/admin/reload", headers=ADMIN).status_code == 403
    monkeypatch.setenv("HAOWU_ADMIN_TOKEN", TOKEN)
    with TestClient(create_app(cfg, bundle=bundle)) as c:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": TOKEN},
            {"Authorization": f"Basic {TOKEN}"},
        ):
            r = c.get("/admin/reload", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/admin/reload", headers=ADMIN).status_code == 200


def test_read_api_key(cfg: Settings, bundle: Bundle, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HAOWU_API_KEY", "read-key")
    with TestClient(create_app(cfg, bundle=bundle)) as c:
        path = f"/products/{_ids(bundle, 'products', 1)[0]}/tier"
        assert c.get(path).status_code == 401
        assert c.get(path, headers={"X-API-Key": "nope"}).status_code == 401
        assert c.get(path, headers={"X-API-Key": "read-key"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


# ----------------------------------------------------------------------- observability


def test_metrics_and_access_log(client: TestClient, bundle: Bundle):
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    access = logging.getLogger("haowu.access")
    app = create_app(load_settings("tiny"), bundle=bundle)  # access log on
    access.addHandler(handler)
    try:
        with TestClient(app) as c:
            c.get(
                f"/creators/{_ids(bundle, 'creators', 1)[0]}/goods",
                headers={"X-Request-ID": "abc-1"},
            )
            c.get("/creators/42/goods")
            text = c.get("/metrics").text
    finally:
        access.removeHandler(handler)
    route = 'route="/creators/{creator_id}/goods"'
    assert f'haowu_http_requests_total{{method="GET",{route},status="200"}} 1.0' in text
    assert 'route="/creators/{creator_id}/goods",status="404"} 1.0' in text
    assert "haowu_http_request_duration_seconds_bucket" in text
    assert f'version="{bundle.info.version}"' in text and "haowu_model_info" in text
    assert 'haowu_answers_total{endpoint="creator_goods",source="batch"} 1.0' in text
    first = json.loads(lines[0])
    assert first["request_id"] == "abc-1" and first["status"] == 200
    assert first["route"] == "/creators/{creator_id}/goods" and first["ms"] > 0


def test_openapi_lists_every_endpoint(client: TestClient):
    paths = client.get("/openapi.json").json()["paths"]
    for path in [
        "/creators/{creator_id}/goods",
        "/creators/goods",
        "/products/{product_id}/creators",
        "/products/creators",
        "/products/{product_id}/tier",
        "/brokers/{broker_id}/matches",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/reload",
    ]:
        assert path in paths, path
    assert client.get("/docs").status_code == 200


# ----------------------------------------------------------------------- reload


def _versions(bundle: Bundle, n: int) -> list[Bundle]:
    info = bundle.info
    return [
        dataclasses.replace(bundle, info=dataclasses.replace(info, version=f"r{i}"))
        for i in range(n)
    ]


def test_reload_swaps_and_a_failed_load_keeps_the_old_model(cfg, bundle, env):
    queue = [*_versions(bundle, 2), RuntimeError("registry unreachable")]

    def loader() -> Bundle:
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    with TestClient(create_app(cfg, bundle=bundle, loader=loader)) as c:
        goods = f"/creators/{_ids(bundle, 'creators', 1)[0]}/goods"
        r = c.post("/admin/reload?wait=true", headers=ADMIN)
        assert r.status_code == 200 and r.json()["model"]["version"] == "r0"
        assert c.get(goods).json()["model_version"].endswith("vr0")
        r = c.post("/admin/reload", headers=ADMIN)  # background
        assert r.status_code == 202 and r.json()["status"] in ("started", "already_running")
        for _ in range(200):
            if c.get("/admin/reload", headers=ADMIN).json()["status"] != "running":
                break
            time.sleep(0.01)
        assert c.get(goods).json()["model_version"].endswith("vr1")
        r = c.post("/admin/reload?wait=true", headers=ADMIN)
        assert r.status_code == 503 and "registry unreachable" in r.json()["error"]
        assert c.get(goods).json()["model_version"].endswith("vr1")  # the old one serves
        ready = c.get("/readyz", headers=ADMIN).json()
        assert ready["ready"] and "registry unreachable" in ready["last_error"]
        public = c.get("/readyz").json()
        assert public["model"]["folder"] == public["model"]["uri"] == "(shown with the admin token)"
        assert str(ready["model"]["folder"]) not in c.get("/metrics").text
        metrics = c.get("/metrics").text
        assert 'haowu_model_loads_total{result="ok"} 2.0' in metrics
        assert 'haowu_model_loads_total{result="failed"} 1.0' in metrics


def test_in_flight_request_finishes_on_the_old_model(cfg, bundle, env, monkeypatch):
    new = _versions(bundle, 1)[0]
    entered, release = threading.Event(), threading.Event()
    original = lookup.goods_for_new_creator

    def held(b: Bundle, *args: object) -> object:  # runs in the thread pool
        entered.set()
        assert release.wait(10)
        return original(b, *args)

    monkeypatch.setattr(lookup, "goods_for_new_creator", held)
    with TestClient(create_app(cfg, bundle=bundle, loader=lambda: new)) as c:
        out: dict = {}

        def ask() -> None:
            out.update(c.post("/creators/goods", json={"creator": {}, "k": 3}).json())

        thread = threading.Thread(target=ask)
        thread.start()
        assert entered.wait(10)
        assert c.post("/admin/reload?wait=true", headers=ADMIN).json()["model"]["version"] == "r0"
        release.set()
        thread.join(10)
        assert out["model_version"] == bundle.info.label  # began before the swap: old model
        after = c.post("/creators/goods", json={"creator": {}, "k": 3}).json()
        assert after["model_version"] == new.info.label


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reload_under_concurrent_requests_loses_none(cfg, bundle, env):
    """A real uvicorn server, eight client threads, and five reloads (one failing)."""
    import uvicorn

    versions = _versions(bundle, 5)
    calls = iter([*versions[:2], RuntimeError("bad artifact"), *versions[2:]])

    def loader() -> Bundle:
        time.sleep(0.05)  # a load takes a while; requests keep coming meanwhile
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    app = create_app(cfg, bundle=bundle, loader=loader)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    creators, stop = _ids(bundle, "creators", 50), threading.Event()
    statuses: list[int] = []
    labels = {b.info.label for b in [bundle, *versions]}

    def hammer(i: int) -> None:
        with httpx.Client(base_url=base, timeout=10) as http:
            while not stop.is_set():
                if i % 4 == 3:
                    r = http.post("/creators/goods", json={"creator": {"category_pref": i}, "k": 5})
                else:
                    r = http.get(f"/creators/{creators[i % 50]}/goods", params={"k": 10 + i})
                statuses.append(r.status_code)
                assert r.json()["model_version"] in labels
                i += 8

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        with httpx.Client(base_url=base, headers=ADMIN, timeout=30) as admin:
            results = [admin.post("/admin/reload?wait=true").json()["status"] for _ in range(6)]
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        server.should_exit = True
    assert results == ["ok", "ok", "failed", "ok", "ok", "ok"]
    assert len(statuses) > 50 and set(statuses) == {200}
    assert app.state.serving.current().info.version == "r4"


def test_sighup_reloads(cfg: Settings, bundle: Bundle):
    app = create_app(cfg, bundle=bundle, loader=lambda: _versions(bundle, 1)[0])
    state = app.state.serving
    loop = asyncio.new_event_loop()
    try:
        assert install_sighup(state, loop)
        os.kill(os.getpid(), signal.SIGHUP)
        loop.run_until_complete(asyncio.sleep(0.05))  # the handler runs on the loop
        loop.remove_signal_handler(signal.SIGHUP)
    finally:
        loop.close()
    assert state.last.finished.wait(10) and state.last.status == "ok"
    assert state.current().info.version == "r0"


def test_registry_alias_resolves_the_champion(served: Path, cfg: Settings, bundle: Bundle):
    from mlflow import MlflowClient

    version = json.loads((served / "matching" / "run.json").read_text())["version"]
    MlflowClient().set_registered_model_alias("haowu-matching", "serve-test", version)
    sources = ServeSources(model="models:/haowu-matching@serve-test")  # data: the run's tag
    cfg = cfg.model_copy(
        update={"serve": cfg.serve.model_copy(update={"model_cache_dir": served / "model-cache"})}
    )
    loaded = load_bundle(sources, cfg)
    assert loaded.info.version == version and loaded.info.alias == "serve-test"
    assert loaded.sources.data.resolve() == (served / "data").resolve()
    assert loaded.model_digest == bundle.model_digest  # the registry's copy: same content
    creator = str(_ids(bundle, "creators", 1)[0])  # no lists here: live at depth k
    assert (
        lookup.goods_for_creator(loaded, creator, LIST_K).items
        == lookup.goods_for_creator(bundle, creator, LIST_K, mode="live").items
    )
    with pytest.raises(Exception, match="nosuchalias"):
        load_bundle(ServeSources(model="models:/haowu-matching@nosuchalias"), cfg)


def _retrained(served: Path, into: Path) -> Path:
    """The served model as a retrain into its folder would leave it: same IDs and
    positions (so the old lists still map onto it), other product vectors."""
    source, model = served / "matching" / "model", into / "model"
    shutil.copytree(source, model, ignore=shutil.ignore_patterns("index", MODEL_DIGEST))
    vectors = np.load(model / "product_embeddings.npy")
    np.save(model / "product_embeddings.npy", np.ascontiguousarray(vectors[::-1]))
    return model


def test_lists_written_by_another_model_are_not_served(
    served: Path, cfg: Settings, bundle: Bundle, client: TestClient, tmp_path: Path, caplog
):
    """A reload onto a retrained model keeps the unchanged lists files, but they are the
    old model's: answers are live, a warning names both digests, /readyz and /metrics
    say batch lists are not in use. Lists of the served model are used again."""
    assert bundle.lists_status == {"creator": "batch", "product": "batch"}
    ready = client.get("/readyz").json()
    assert ready["lists"] == {"creator": "batch", "product": "batch"}
    assert ready["model"]["digest"] == bundle.model_digest
    assert 'haowu_batch_lists_in_use{direction="creator"} 1.0' in client.get("/metrics").text

    sources = ServeSources.from_dir(served, model=str(_retrained(served, tmp_path)))
    with caplog.at_level(logging.WARNING, logger="serving.online.bundle"):
        new = load_bundle(sources, cfg, previous=bundle)  # the reload after a retrain
    old_digest, new_digest = bundle.model_digest, new.model_digest
    assert old_digest and new_digest and old_digest != new_digest
    assert new.lists is None and new.product_lists is None  # was: the old lists, reused
    assert f"written by model {old_digest}, not the served model {new_digest}" in caplog.text
    creator = str(_ids(bundle, "creators", 1)[0])
    product = str(_ids(bundle, "products", 1)[0])
    with TestClient(create_app(cfg, bundle=new), raise_server_exceptions=False) as c:
        ready = c.get("/readyz").json()
        assert ready["lists"]["creator"] == (
            f"live (lists were written by model {old_digest[:12]}, serving model {new_digest[:12]})"
        )
        assert ready["lists"]["product"].startswith("live (lists were written by model")
        assert ready["model"]["digest"] == new_digest
        goods = c.get(f"/creators/{creator}/goods", params={"k": 10}).json()
        assert goods["source"] == "live"
        live = lookup.goods_for_creator(new, creator, 10, mode="live")
        assert goods["items"] == [item.model_dump() for item in live.items]
        stored = c.get(f"/products/{product}/creators", params={"k": 5}).json()
        assert stored["source"] == "live"
        metrics = c.get("/metrics").text
        assert 'haowu_batch_lists_in_use{direction="creator"} 0.0' in metrics
        assert 'haowu_batch_lists_in_use{direction="product"} 0.0' in metrics
    again = load_bundle(ServeSources.from_dir(served), cfg, previous=new)  # back to the old
    assert again.lists is not None and again.lists_status["creator"] == "batch"


# ----------------------------------------------------------------------- property test


def _no_server_error(strategy: st.SearchStrategy, label: str, seen: dict) -> None:
    @given(case=strategy)
    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    def check(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call(headers=ADMIN if "/admin" in case.path else None)
        seen.setdefault(label, set()).add(response.status_code)
        assert response.status_code < 500, (case.path, case.query, case.body, response.text)

    check()


def test_openapi_property_no_server_errors(client: TestClient, bundle: Bundle):
    """Schemathesis cases for every operation (known IDs mixed in): never a 5xx."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    brokers = BrokerMatchStore.load(bundle.sources.brokers).broker_ids[:5]
    known = {
        "creator_id": [str(c) for c in _ids(bundle, "creators", 20)],
        "product_id": [str(p) for p in _ids(bundle, "products", 20)],
        "broker_id": [int(b) for b in brokers],
    }

    def with_known(case, use: bool, pick: int):  # type: ignore[no-untyped-def]
        for name in case.path_parameters or {}:
            if use and name in known:
                case.path_parameters[name] = known[name][pick % len(known[name])]
        return case

    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = st.builds(with_known, operation.as_strategy(), st.booleans(), st.integers(0, 99))
        _no_server_error(strategy, operation.label, seen)
    assert len(seen) == 11
    assert 200 in seen["GET /creators/{creator_id}/goods"]
    assert 200 in seen["GET /brokers/{broker_id}/matches"]
    assert 200 in seen["POST /admin/reload"] or 202 in seen["POST /admin/reload"]


def test_list_store_sorts_and_maps_positions(tmp_path: Path):
    """Parts in any order, unknown queries dropped, unknown items kept as -1."""
    from serving.online.batch_lists import ListStore

    rows = pd.DataFrame(
        {
            "creator_id": [20, 10, 10, 99, 20],
            "rank": [1, 2, 1, 1, 2],
            "product_id": [7, 8, 9, 7, 555],
            "score": [0.9, 0.5, 0.8, 0.1, 0.7],
        }
    )
    rows.iloc[:3].to_parquet(tmp_path / "part-00001.parquet")
    rows.iloc[3:].to_parquet(tmp_path / "part-00000.parquet")
    (tmp_path / "_SUCCESS").write_text(json.dumps({"direction": "creator", "k": 2}))

    def to_positions(known: dict[int, int]):  # type: ignore[no-untyped-def]
        return lambda ids: np.array([known.get(int(i), -1) for i in ids])

    store = ListStore.load(tmp_path, to_positions({10: 0, 20: 1}), to_positions({7: 0, 8: 1, 9: 2}))
    assert len(store) == 2 and store.depth == 2 and store.get(2) is None
    first, second = store.get(0), store.get(1)
    assert first.positions.tolist() == [2, 1] and first.scores.tolist() == pytest.approx([0.8, 0.5])
    assert second.positions.tolist() == [0, -1]
