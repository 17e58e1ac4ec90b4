"""Writes feed_users.csv: 3,000 generated news-feed users (seeded; no download).

Each user: an id, a country and a device (categories; the device is unknown for some), age,
sessions in the last 7 days, minutes per session (missing for users with no session), days
since last seen, and the section they read most (the target): sports, politics or tech, drawn
from a softmax of their figures so that a model has something real to learn and not everything.
Run from the project's folder: python recipes/data/make_feed_users.py
"""
from pathlib import Path

import numpy as np
import pandas as pd

N = 3000
rng = np.random.default_rng(13)
country = rng.choice(["US", "DE", "FR", "JP", "BR", "IN"], size=N, p=[0.3, 0.15, 0.15, 0.1, 0.15, 0.15])
device = rng.choice(["ios", "android", "web"], size=N, p=[0.35, 0.45, 0.2]).astype(object)
device[rng.random(N) < 0.08] = None  # not reported
age = np.clip(rng.normal(38, 13, N).round(), 16, 85).astype(int)
sessions = rng.poisson(np.where(rng.random(N) < 0.3, 1.0, 6.0))
minutes = np.where(sessions > 0, np.clip(rng.lognormal(1.6, 0.6, N), 0.5, 90).round(1), np.nan)
last_seen = np.where(sessions > 0, rng.integers(0, 7, N), rng.integers(7, 60, N))
logits = np.stack([
    0.9 * (country == "BR") + 0.6 * (country == "US") - 0.03 * (age - 38) + 0.2 * (device == "android"),
    0.05 * (age - 38) + 0.8 * (country == "FR") + 0.5 * (country == "DE") + 0.3 * (device == "web"),
    0.8 * (country == "JP") + 0.6 * (country == "IN") + 0.5 * (device == "ios") + 0.04 * np.nan_to_num(minutes, nan=3),
], axis=1) + rng.gumbel(size=(N, 3)) * 0.8
topic = np.array(["sports", "politics", "tech"])[logits.argmax(axis=1)]
frame = pd.DataFrame({"user_id": [f"u{i:05d}" for i in range(N)], "country": country, "device": device, "age": age,
                      "sessions_7d": sessions, "minutes_per_session": minutes, "last_seen_days": last_seen,
                      "topic": topic})
frame.to_csv(Path(__file__).with_name("feed_users.csv"), index=False)
print(frame.head(), frame["topic"].value_counts(), sep="\n")
