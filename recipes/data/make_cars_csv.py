"""Writes recipes/data/cars.csv from the `cars.json` table that ships inside the installed
vega_datasets package (vega_datasets/_data/cars.json: 406 cars of 1970-1982, from the UCI Auto MPG
data set); nothing is downloaded.

    python recipes/data/make_cars_csv.py

Columns: Make (a string: the first word of the car's name, e.g. "ford", "toyota"), Model_Year
(an integer), Cylinders, Displacement, Horsepower (6 missing), Miles_per_Gallon (8 missing),
Weight_in_lbs, Acceleration, Origin (USA, Europe, Japan). Missing values are empty fields, as in
any exported spreadsheet. The rows keep the source's order.
"""
from __future__ import annotations

import csv
import importlib.resources
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "cars.csv"
COLUMNS = ("Make", "Model_Year", "Cylinders", "Displacement", "Horsepower", "Miles_per_Gallon", "Weight_in_lbs",
           "Acceleration", "Origin")


def rows() -> list[dict]:
    source = importlib.resources.files("vega_datasets") / "_data" / "cars.json"
    out = []
    for car in json.loads(source.read_text(encoding="utf-8")):
        out.append({
            "Make": car["Name"].split()[0].lower(),
            "Model_Year": int(car["Year"][:4]),
            **{c: car[c] for c in COLUMNS if c in car},
        })
    return out


def main() -> None:
    with open(OUT, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows():
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in COLUMNS})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
