"""Fixtures for the synthetic-data tests: a lake with a few seed files (`engine` is in tests/conftest.py)."""

from __future__ import annotations

SEED_FILES = [
    ("seed-a", "python", 0.95, "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
                               "    return a\n\n\nprint(fibonacci(10))\n"),
    ("seed-b", "python", 0.90, "import json\n\n\ndef load(path):\n    with open(path) as fh:\n"
                               "        return json.load(fh)\n"),
    ("seed-c", "python", 0.85, "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
                               "    def push(self, x):\n        self.items.append(x)\n"),
]


def write_seeds(lake, rows=SEED_FILES, table="selected_hq"):
    """A `selected_hq` table (its contract columns) holding `rows` of (doc_id, lang, score, content)."""
    from spark_jobs.select_hq import SELECTED_COLUMNS

    data = [(d, lang, f"repo/{d}", f"{d}.py", content, score, len(content) // 4, 4)
            for d, lang, score, content in rows]
    df = lake.spark.createDataFrame(
        data, "doc_id string, lang string, repo string, path string, content string, score double, "
              "n_tokens long, repeat int").select(*SELECTED_COLUMNS)
    lake.overwrite(table, df)
    return df
