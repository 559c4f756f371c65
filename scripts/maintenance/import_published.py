"""Copies the published score tables of ../shared/reference-scores into results/published/ and writes
results/published/index.json: for each table its paper, source table, protocol and evaluation
settings, which `reproduce report` checks a run against.

    python scripts/maintenance/import_published.py [--source ../shared/reference-scores]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "published"

# Evaluation settings per table, from each paper (or Dopamine's configs); None where not known.
#   evaluation: no-op starts | human starts | sticky actions | atari 100k
#   returns: evaluation (default) | training (returns of the training episodes, at train_epsilon)
#   score: final (default) | best (the best evaluation during training: BEST_SCORES, or the table's protocol note)
EVALUATION = [
    (r"^nature_dqn_2015", dict(evaluation="no-op starts", sticky=False, eval_epsilon=0.05, budget_frames=200_000_000,
                               eval_episode_frames=18_000)),
    (r"^ddqn_2016_ddqn_noop", dict(evaluation="no-op starts", sticky=False, eval_epsilon=0.05, budget_frames=200_000_000,
                                   eval_episode_frames=18_000)),
    (r"^noisynet_2018_noisynet", dict(evaluation="no-op starts", sticky=False, eval_epsilon=0.0, budget_frames=200_000_000,
                                      eval_episode_frames=108_000)),
    (r"^rainbow_2018_rainbow_noop", dict(evaluation="no-op starts", sticky=False, eval_epsilon=0.0,
                                         budget_frames=200_000_000, eval_episode_frames=108_000)),
    (r"_noop$", dict(evaluation="no-op starts", sticky=False, eval_epsilon=0.001, budget_frames=200_000_000,
                     eval_episode_frames=108_000)),
    (r"_human_starts$", dict(evaluation="human starts", sticky=False, eval_epsilon=None, budget_frames=200_000_000,
                             eval_episode_frames=108_000)),
    # Dopamine's baselines are training returns, per 250K-step iteration (google/dopamine issues #86, #147).
    (r"^dopamine_", dict(evaluation="sticky actions", sticky=True, returns="training",
                         returns_source="google/dopamine issues #86 and #147 (the maintainers)", train_epsilon=0.01,
                         eval_epsilon=0.001, budget_frames=200_000_000, eval_episode_frames=108_000)),
    (r"100k", dict(evaluation="atari 100k", sticky=False, eval_epsilon=None, budget_frames=400_000,
                        eval_episode_frames=108_000)),
]


# Tables of each game's best agent during training rather than the agent at the end, with where that is said.
BEST_SCORES = [
    (r"^nature_dqn_2015", ("indirect: the paper does not say; pfnet/pfrl's reproduction of it re-evaluates the best "
                           "intermediate agent, and DeepMind's released code keeps the best network of each evaluation")),
    (r"^ddqn_2016", "the paper's appendix: the best policy across the evaluations every 1M steps is the output"),
    (r"^dueling_2016", ("the paper follows van Hasselt et al.'s protocol; C51 and Rainbow quote its scores as best "
                        "evaluations")),
    (r"^per_2016", "the paper: 'our main evaluation metric is the quality of the best policy'"),
    (r"^c51_2017", "the paper, section 5.2: the best evaluation score achieved during training"),
    (r"^noisynet_2018", "the paper's per-game table: maximum raw scores of each agent (as quoted by pfnet/pfrl)"),
    (r"^qr_dqn_2018", "the paper's best agent performance (as chainer/chainerrl's reproduction cites it)"),
    (r"^rainbow_2018", ("the paper's appendix tables: from the agent snapshot that obtained the highest score during "
                        "training (its other columns are quoted from papers that report the same)")),
]

# The random and human scores each table's paper normalised with (reproduce/published.py BASELINES).
NORMALISATION = [
    (r"^nature_dqn_2015", "nature_dqn"),  # Extended Data Table 2's own random and professional-tester scores
    (r"_human_starts$", "human_starts"),  # Nair et al. 2015's human-starts random and human scores
    (r"^dopamine_", "rliable_ale"),  # as rliable normalises Dopamine's 200M-frame runs
    (r"100k", "rliable_100k"),  # as rliable normalises Atari 100k (DQN Zoo's values on its 26 games)
    (r".", "dqn_zoo"),
]


def header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].strip().partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "reference-scores")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    index = {}
    for path in sorted(args.source.glob("*.csv")):
        shutil.copyfile(path, OUT / path.name)
        name = path.stem
        if name in ("baselines", "rliable_atari100k_runs"):
            continue
        meta = header(path)
        with open(path) as f:
            rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
        settings = next(s for pattern, s in EVALUATION if re.search(pattern, name))
        entry = {"file": path.name, "source_table": meta.get("source_table", ""), "protocol": meta.get("protocol", ""),
                 **settings, "baselines": next(b for pattern, b in NORMALISATION if re.search(pattern, name))}
        best = next((source for pattern, source in BEST_SCORES if re.search(pattern, name)), None)
        if best is None and "best intermediate evaluation" in entry["protocol"]:
            best = "the table's protocol note"
        if best is not None:
            entry |= {"score": "best", "score_source": best}
        if "agent" in rows[0]:  # one file, several agents and networks: one table each
            for agent, network in sorted({(r["agent"], r["network"]) for r in rows}):
                index[f"dopamine_jax_{agent}_{network}".lower()] = {
                    **entry, "filter": {"agent": agent, "network": network},
                    "games": sorted({r["game"] for r in rows if (r["agent"], r["network"]) == (agent, network)})}
        else:
            index[name] = {**entry, "games": sorted({r["game"] for r in rows})}
    (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    (OUT / "README.md").write_text(
        "# Published scores\n\nCopied verbatim from `shared/reference-scores/` by "
        "`python scripts/maintenance/import_published.py`; each CSV's `#` lines give its provenance "
        "(paper, table, protocol, transcriptions). `index.json` records each table's evaluation "
        "settings (no-op starts, human starts, sticky actions, Atari 100k; evaluation epsilon; budget), "
        "which `reproduce report` compares with each run's protocol, and the random and human scores "
        "its paper normalised with (`baselines`: a column pair of `baselines.csv`, which holds DQN Zoo's "
        "primary columns, and rliable's, the Nature paper's and others).\n")
    print(f"{len(index)} tables -> {OUT}")


if __name__ == "__main__":
    main()
