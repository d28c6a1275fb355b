"""Small source files shaped like the lesson's, written by the tests themselves."""

import csv
from pathlib import Path

TAGS = ("computer-vision", "natural-language-processing", "mlops", "graph-learning")

# Descriptions carry what real ones do: commas, quotes, newlines, non-ASCII letters.
PROJECTS = [
    (
        6,
        "2020-02-20 06:43:18",
        "Comparison between YOLO and RCNN on real world videos",
        "Bringing theory to experiment is cool. We can easily train models in colab.",
    ),
    (
        7,
        "2020-02-20 06:47:21",
        "Show, Infer & Tell: Contextual Inference for Creative Captioning",
        "The beauty of the work lies in the way it architects the idea,\nthen individual pieces.\n",
    ),
    (
        9,
        "2020-02-24 16:24:45",
        "Awesome Graph Classification",
        'A collection of "important" graph embedding, classification and representation papers.',
    ),
    (
        15,
        "2020-02-28 23:55:26",
        "Awesome Monte Carlo Tree Search",
        "A curated list of Monte Carlo tree search papers with implementations. ",
    ),
    (
        19,
        "2020-03-03 13:54:31",
        "Diffusion to Vector",
        "Reference implementation of Diffusion2Vec (Complenet 2018), built on Gensim.",
    ),
    (
        25,
        "2020-03-07 23:04:31",
        "AttentionWalk",
        'A PyTorch Implementation of "Watch Your Step: Learning Node Embeddings"\n(NeurIPS 2018).',
    ),
    (
        26,
        "2020-03-07 23:11:58",
        'Café Net, a "quoted" title',
        "Multi-line\n\ndescription with a blank line, and a trailing comma,",
    ),
    (
        31,
        "2020-03-08 10:00:00",
        "MLOps: Deployment, Monitoring",
        "Serving models; tracking drift; 100% reproducible.",
    ),
]
PROJECT_TAGS = {
    6: "computer-vision",
    7: "computer-vision",
    9: "graph-learning",
    15: "mlops",
    19: "graph-learning",
    25: "graph-learning",
    26: "natural-language-processing",
    31: "mlops",
}


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_projects(path: Path, rows: list[tuple] | None = None) -> Path:
    return write_csv(path, ["id", "created_on", "title", "description"], rows or PROJECTS)


def write_tags(path: Path, tags: dict[int, str] | None = None) -> Path:
    return write_csv(path, ["id", "tag"], sorted((tags or PROJECT_TAGS).items()))
