"""Ways to break a contract table in place, shared by the jobs' bad-input tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.io import read_table, write_table


def duplicate_products(data: Path, rows: int = 1) -> None:
    products = read_table(data, "products")
    write_table(pd.concat([products, products.head(rows)], ignore_index=True), data, "products")


def negative_prices(data: Path, rows: int = 1, price: float = -5.0) -> None:
    products = read_table(data, "products")
    products.loc[products.index[:rows], "price"] = price
    write_table(products, data, "products")
