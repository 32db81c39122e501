"""Seeding an MLflow registry fast: rows written straight into the server's sqlite database.

The schema comes from MLflow itself (``mlflow db upgrade``); the rows are then inserted in one
transaction before the server starts, which takes seconds where 100k REST calls would take an
hour. Every NOT NULL column is filled, timestamps are spread over the past two years (versions
after their model, updates after creation), stages are mixed (one Production and a few Staging
per model, older versions mostly Archived), and some versions, models and aliases carry tags.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
DAY_MS = 86_400_000
SPAN_MS = 730 * DAY_MS
"""Seeded objects were created within this span before the seeding (two years)."""
RECENT_MS = DAY_MS
"""Nothing seeded was updated in the last day, so a watermark sees no seeded row as new."""


@dataclass(frozen=True)
class Seeded:
    models: int
    versions: int
    version_tags: int
    model_tags: int
    aliases: int
    seconds: float
    names: list[str]
    """Model names, in creation order."""


def model_name(index: int) -> str:
    return f"bench-model-{index:04d}"


def create_schema(db: Path) -> None:
    """An empty MLflow database at MLflow's own latest schema revision."""
    db.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(BIN / "mlflow"), "db", "upgrade", f"sqlite:///{db}"],
        check=True,
        capture_output=True,
    )


def seed(db: Path, versions: int, models: int, rng_seed: int = 5) -> Seeded:
    """Insert ``models`` registered models holding ``versions`` versions between them."""
    started = time.monotonic()
    rng = random.Random(rng_seed)
    now = int(time.time() * 1000) - RECENT_MS
    model_rows: list[tuple[object, ...]] = []
    version_rows: list[tuple[object, ...]] = []
    version_tags: list[tuple[object, ...]] = []
    model_tags: list[tuple[object, ...]] = []
    aliases: list[tuple[object, ...]] = []
    names: list[str] = []
    per_model, extra = divmod(versions, models)
    for m in range(models):
        name = model_name(m)
        names.append(name)
        count = per_model + (1 if m < extra else 0)
        created = now - rng.randint(SPAN_MS // 2, SPAN_MS)
        # Versions are registered over the time after their model, in order.
        stamps = sorted(rng.randint(created + 1000, now - DAY_MS) for _ in range(count))
        production = count - 1 - rng.randint(0, min(2, max(0, count - 1)))
        last_update = created
        for i, born in enumerate(stamps, start=1):
            # Updated up to a month after creation; random to the millisecond, so that no two
            # rows share a timestamp by construction (a clamp would pile them up at "now").
            updated = rng.randint(born, min(now, born + 30 * DAY_MS))
            if i - 1 == production:
                stage = "Production"
            elif i - 1 > production:
                stage = rng.choice(("Staging", "None"))
            else:
                stage = rng.choices(("Archived", "None", "Staging"), (6, 3, 1))[0]
            source = f"s3://bench-bucket/models/{name}/{i}"
            version_rows.append(
                (
                    name,
                    i,
                    born,
                    updated,
                    rng.choice(("", "", "", f"retrained on data cut {i}")),
                    rng.choice(("", "alice@example.com", "bob@example.com")),
                    stage,
                    source,
                    f"{rng.getrandbits(128):032x}",
                    "READY",
                    "",
                    "",
                    source,
                )
            )
            if rng.random() < 0.3:
                version_tags.append(
                    ("validation_status", rng.choice(("passed", "failed")), name, i)
                )
            if rng.random() < 0.1:
                version_tags.append(("dataset", f"ds-{rng.randint(1, 50)}", name, i))
            last_update = max(last_update, updated)
        model_rows.append(
            (name, created, last_update, rng.choice(("", f"The {name} model")), "default")
        )
        if rng.random() < 0.5:
            model_tags.append(("team", rng.choice(("fraud", "search", "ads", "risk")), name))
        if count:
            aliases.append(("champion", production + 1, name))
            if count > 1 and rng.random() < 0.3:
                aliases.append(("challenger", count, name))

    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO registered_models"
                " (name, creation_time, last_updated_time, description, workspace)"
                " VALUES (?, ?, ?, ?, ?)",
                model_rows,
            )
            conn.executemany(
                "INSERT INTO model_versions (name, version, creation_time, last_updated_time,"
                " description, user_id, current_stage, source, run_id, status, status_message,"
                " run_link, storage_location, workspace)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'default')",
                version_rows,
            )
            conn.executemany(
                "INSERT INTO model_version_tags (key, value, name, version, workspace)"
                " VALUES (?, ?, ?, ?, 'default')",
                version_tags,
            )
            conn.executemany(
                "INSERT INTO registered_model_tags (key, value, name, workspace)"
                " VALUES (?, ?, ?, 'default')",
                model_tags,
            )
            conn.executemany(
                "INSERT INTO registered_model_aliases (alias, version, name, workspace)"
                " VALUES (?, ?, ?, 'default')",
                aliases,
            )
    finally:
        conn.close()
    return Seeded(
        models=len(model_rows),
        versions=len(version_rows),
        version_tags=len(version_tags),
        model_tags=len(model_tags),
        aliases=len(aliases),
        seconds=time.monotonic() - started,
        names=names,
    )
