"""Writes recipes/data/weather/{2012,2013,2014}.csv: the Seattle weather table that ships inside the
installed vega_datasets package (vega_datasets/_data/seattle-weather.csv, one row per day), cut
into one file per year, as a weather feed would deliver it; nothing is downloaded. 2015 is left
out: it is what a next batch would be.

    python recipes/data/make_weather_batches.py

Columns as in the source: date (YYYY/MM/DD, the time column and the row key), precipitation,
temp_max, temp_min, wind, weather (sun, fog, rain, drizzle, snow).
"""
from __future__ import annotations

import csv
import importlib.resources
from pathlib import Path

OUT = Path(__file__).resolve().parent / "weather"
YEARS = ("2012", "2013", "2014")


def main() -> None:
    source = importlib.resources.files("vega_datasets") / "_data" / "seattle-weather.csv"
    with source.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    OUT.mkdir(exist_ok=True)
    for year in YEARS:
        batch = [r for r in rows if r["date"].startswith(year)]
        with open(OUT / f"{year}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(batch)
        print(f"{OUT / f'{year}.csv'}: {len(batch)} days")


if __name__ == "__main__":
    main()
