"""Synthetic sources with the lesson's shape, deterministic for a size.

projects.csv: id, created_on, title, description (quotes, commas and newlines inside,
lengths close to the lesson's: titles ~40 characters, descriptions ~130); tags.csv: id,
tag over the lesson's six tags in its proportions. Every title+description is unique,
so the generated data passes every check, as the lesson's does.
"""

import csv
import random
from datetime import datetime, timedelta
from pathlib import Path

TAG_WEIGHTS = {  # the lesson's 955 projects
    "natural-language-processing": 388,
    "computer-vision": 356,
    "mlops": 79,
    "reinforcement-learning": 56,
    "graph-learning": 45,
    "time-series": 31,
}
WORDS = (  # noqa: SIM905  (a sentence is easier to read than a list of 40 strings)
    "model data learning neural network graph vision language transformer training "
    "pipeline feature embedding attention dataset benchmark inference deployment monitoring "
    "reinforcement agent policy time series forecasting detection segmentation generation "
    "library framework tutorial implementation awesome curated paper survey toolkit"
).split()


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:]


def _description(rng: random.Random) -> str:
    parts = [_sentence(rng, rng.randint(6, 14)) + "."]
    roll = rng.random()
    if roll < 0.3:
        parts.append(f'A "{rng.choice(WORDS)}" {rng.choice(WORDS)}, with {rng.choice(WORDS)}.')
    elif roll < 0.4:
        parts.append("\n" + _sentence(rng, rng.randint(3, 8)) + ".\n")
    return " ".join(parts)


def generate(directory: Path, size: int, seed: int = 7) -> tuple[Path, Path]:
    """Write `size` projects and their tags into `directory`; the same inputs, the same bytes."""
    rng = random.Random(seed * 1_000_003 + size)
    directory.mkdir(parents=True, exist_ok=True)
    projects, tags = directory / "projects.csv", directory / "tags.csv"
    start = datetime(2020, 2, 20, 6, 43, 18)
    names, weights = list(TAG_WEIGHTS), list(TAG_WEIGHTS.values())
    with (
        projects.open("w", newline="", encoding="utf-8") as p,
        tags.open("w", newline="", encoding="utf-8") as t,
    ):
        project_rows, tag_rows = csv.writer(p), csv.writer(t)
        project_rows.writerow(["id", "created_on", "title", "description"])
        tag_rows.writerow(["id", "tag"])
        project_id = 5
        for number in range(size):
            project_id += rng.randint(1, 3)
            created = start + timedelta(seconds=number * 97 + rng.randint(0, 60))
            title = f"{_sentence(rng, rng.randint(2, 5))}, no. {project_id}"
            project_rows.writerow(
                [project_id, created.strftime("%Y-%m-%d %H:%M:%S"), title, _description(rng)]
            )
            tag_rows.writerow([project_id, rng.choices(names, weights)[0]])
    return projects, tags
