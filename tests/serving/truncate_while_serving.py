"""Run by tests/serving/test_app.py in a subprocess (a SIGBUS would kill the process):
load the service from a pipeline folder, truncate the model's files in place, query."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from features.settings import load_settings
from serving.api.app import create_app
from serving.online.sources import ServeSources

SERVED_FILES = ("creator_embeddings.npy", "product_embeddings.npy", "weights.pt", "creator_ids.npy")


def main(root: Path) -> None:
    app = create_app(load_settings("tiny"), sources=ServeSources.from_dir(root))
    model = root / "matching" / "model"
    creators = np.load(model / "creator_ids.npy")[:3]
    product = pd.read_parquet(root / "data" / "products.parquet").product_id.iloc[0]
    with TestClient(app) as client:
        for _ in range(600):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        before = [client.get(f"/creators/{c}/goods?k=5").status_code for c in creators]
        for path in [*(model / name for name in SERVED_FILES), *(model / "index").glob("*")]:
            with open(path, "r+b") as handle:
                handle.truncate(16)
        after = [client.get(f"/creators/{c}/goods?k=5").status_code for c in creators]
        new = client.post("/creators/goods", json={"creator": {"followers": 100}, "k": 5})
        by_product = client.get(f"/products/{product}/creators?k=5")
    answers = {"before": before, "after": after, "new": new.status_code}
    print(json.dumps({**answers, "product": by_product.status_code}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
