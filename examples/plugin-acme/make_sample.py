"""Writes acme_plugins/data/widgets.jsonl: the sample table the `acme_jsonl` source reads when a
recipe names no file. Seeded, so the file is the same on every machine:

    python make_sample.py

600 widgets off an imaginary ACME line, six measurements each, and the inspector's verdict
(`ok`, `rework` or `scrap`, about 60/25/15 %). The classes overlap a little: a good model gets
most, not all, of them right.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "acme_plugins" / "data" / "widgets.jsonl"
ROWS = 600
#: verdict -> (share, mean of each measurement)
CLASSES = {
    "ok": (0.60, {"length_mm": 120.0, "width_mm": 40.0, "weight_g": 310.0, "roughness_um": 0.8, "temperature_c": 21.0, "vibration_g": 0.20}),
    "rework": (0.25, {"length_mm": 123.0, "width_mm": 41.5, "weight_g": 318.0, "roughness_um": 1.6, "temperature_c": 23.0, "vibration_g": 0.35}),
    "scrap": (0.15, {"length_mm": 116.0, "width_mm": 38.0, "weight_g": 296.0, "roughness_um": 2.4, "temperature_c": 26.0, "vibration_g": 0.55}),
}
SPREAD = {"length_mm": 1.5, "width_mm": 0.8, "weight_g": 5.0, "roughness_um": 0.35, "temperature_c": 1.5, "vibration_g": 0.08}


def main() -> None:
    rng = np.random.default_rng(20240601)
    labels = rng.choice(list(CLASSES), size=ROWS, p=[share for share, _ in CLASSES.values()])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as fh:
        for i, label in enumerate(labels):
            means = CLASSES[label][1]
            row = {"widget_id": f"W{i:05d}"}
            row.update({k: round(float(rng.normal(m, SPREAD[k])), 3) for k, m in means.items()})
            row["label"] = str(label)
            fh.write(json.dumps(row) + "\n")
    print(f"wrote {ROWS} rows to {OUT}")


if __name__ == "__main__":
    main()
