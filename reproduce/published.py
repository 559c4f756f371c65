"""Published score tables (results/published/) and the random and human baselines that normalise them."""

from __future__ import annotations

import csv
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published"
RLIABLE_AGENTS = {"rliable_atari100k_der": "DER", "rliable_atari100k_drq": "DrQ", "rliable_atari100k_drq_eps": "DrQ(eps)",
                  "rliable_atari100k_otrainbow": "OTRainbow", "rliable_atari100k_spr": "SPR",
                  "rliable_atari100k_simple": "SimPLe"}


class TableError(ValueError):
    pass


@dataclass
class Table:
    name: str
    info: dict
    scores: dict[str, float]  # game -> published score
    runs: dict[str, list[float]] = field(default_factory=dict)  # game -> per-run scores, where released

    @property
    def baselines(self) -> str:
        """The random and human scores its paper normalised with (a key of BASELINES)."""
        return self.info.get("baselines", "dqn_zoo")


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def index() -> dict:
    path = PUBLISHED / "index.json"
    if not path.exists():
        raise TableError(f"no published tables at {PUBLISHED}; run scripts/maintenance/import_published.py")
    return json.loads(path.read_text())


def load(name: str) -> Table:
    tables = index()
    if name not in tables:
        close = difflib.get_close_matches(name, list(tables), n=3)
        raise TableError(f"unknown published table {name!r}." + (f" Did you mean: {', '.join(close)}?" if close else "")
                         + f" Tables: {', '.join(sorted(tables))}")
    info = tables[name]
    rows = _rows(PUBLISHED / info["file"])
    if "filter" in info:
        rows = [r for r in rows if all(r[k] == v for k, v in info["filter"].items())]
    scores = {r["game"]: float(r["score"]) for r in rows}
    runs = {}
    run_columns = sorted(k for k in rows[0] if k.startswith("run_"))
    if run_columns:
        runs = {r["game"]: [float(r[c]) for c in run_columns if r[c] not in ("", None)] for r in rows}
    elif name in RLIABLE_AGENTS:
        for r in _rows(PUBLISHED / "rliable_atari100k_runs.csv"):
            if r["agent"] == RLIABLE_AGENTS[name]:
                runs.setdefault(r["game"], []).append(float(r["score"]))
    return Table(name, info, scores, runs)


# The random and human scores a table's paper normalised with (index.json's `baselines`), as columns of
# baselines.csv. DQN Zoo's are the default and the modern convention (no-op starts, 108K-frame games).
BASELINES = {
    "dqn_zoo": ("random", "human"),
    "nature_dqn": ("nature_dqn_random", "nature_dqn_human"),  # Mnih et al. 2015: a professional tester
    "human_starts": ("human_starts_random", "human_starts_human"),  # Nair et al. 2015, van Hasselt et al. 2016
    "rliable_ale": ("rliable_ale_random", "rliable_ale_human"),  # rliable's for 200M-frame ALE (Dopamine)
    "rliable_100k": ("rliable_100k_random", "rliable_100k_human"),  # rliable's for Atari 100k
}


def baselines(name: str = "dqn_zoo") -> dict[str, tuple[float, float]]:
    """game -> (random, human) scores of the named set (BASELINES), for the games it has."""
    if name not in BASELINES:
        raise TableError(f"unknown baselines {name!r}; allowed: {', '.join(BASELINES)}")
    random_column, human_column = BASELINES[name]
    out = {}
    for r in _rows(PUBLISHED / "baselines.csv"):
        if r.get(random_column) not in ("", None) and r.get(human_column) not in ("", None):
            out[r["game"]] = (float(r[random_column]), float(r[human_column]))
    return out


def human_normalized(score: float, game: str, base: dict[str, tuple[float, float]]) -> float | None:
    """(score - random) / (human - random), or None for a game without baselines (CartPole)."""
    if game not in base:
        return None
    random, human = base[game]
    return (score - random) / (human - random)
