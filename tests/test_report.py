"""Reports against hand-computed values on a fixture of run folders, and the published tables."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from reproduce import config as cfg
from reproduce import published
from reproduce.cli import main
from reproduce.report import ReportError, build

RANDOM_HUMAN = {"pong": (-20.7, 14.6), "breakout": (1.7, 30.5)}  # DQN Zoo's baselines


def make_run(root, preset, game, seed, score, steps=1000, overrides=None, curve=(0.0, None)):
    """A finished run folder as the training loop writes it (only the files a report reads)."""
    path = root / f"{preset}-{game}-s{seed}"
    path.mkdir(parents=True)
    config = cfg.resolve(preset, {"env.game": game, "train.seed": seed, "train.steps": steps, **(overrides or {})})
    (path / "config.toml").write_text(config.to_toml())
    (path / "summary.json").write_text(json.dumps({"eval_return_mean": score, "steps": steps}))
    with open(path / "eval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "frames", "episode", "return", "length"])
        w.writerow([steps // 2, steps * 2, 0, curve[0], 100])
        w.writerow([steps, steps * 4, 0, score, 100])
    return path


def hns_score(game, h):
    random, human = RANDOM_HUMAN[game]
    return random + h * (human - random)


@pytest.fixture
def fixture_runs(tmp_path):
    """2 games x 3 seeds x 2 presets. nature_dqn: HNS 0.5 everywhere; double_dqn: HNS 0, 1, 2 (seeds)
    on pong and 0.2, 0.4, 0.6 on breakout."""
    runs = tmp_path / "runs"
    for game in ("pong", "breakout"):
        for seed in range(3):
            make_run(runs, "nature_dqn", game, seed, hns_score(game, 0.5))
            h = {"pong": [0.0, 1.0, 2.0], "breakout": [0.2, 0.4, 0.6]}[game][seed]
            make_run(runs, "double_dqn", game, seed, hns_score(game, h))
    return runs


def test_baselines_are_dqn_zoos():
    base = published.baselines()
    assert base["pong"] == RANDOM_HUMAN["pong"] and base["breakout"] == RANDOM_HUMAN["breakout"]
    assert published.human_normalized(14.6, "pong", base) == pytest.approx(1.0)
    assert published.human_normalized(500.0, "cartpole", base) is None


def test_raw_scores_have_no_optimality_gap():
    """The gap is the shortfall from 1 (human level); for raw returns it says nothing and is left out."""
    from reproduce.report import aggregate_estimates

    m = np.array([[100.0], [300.0], [500.0]])
    raw = aggregate_estimates({"x": m}, reps=200, normalized=False)["x"]
    assert list(raw) == ["mean", "median", "iqm"] and raw["mean"]["value"] == pytest.approx(300.0)
    assert "optimality_gap" in aggregate_estimates({"x": m / 1000}, reps=200)["x"]


def test_report_against_hand_computed_values(fixture_runs, tmp_path):
    out = tmp_path / "report"
    result = build([fixture_runs], out, reps=500)
    for name in ("report.md", "per_game.csv", "aggregates.json", "profile.png", "curves_pong.png", "curves_breakout.png"):
        assert (out / name).stat().st_size > 0, name
    assert result["metric"] == "human-normalised score"
    agg = result["aggregates"]
    # Every nature_dqn run has HNS 0.5: every statistic is 0.5 and its interval collapses to it.
    for stat in ("mean", "median", "iqm"):
        assert agg["nature_dqn"][stat]["value"] == pytest.approx(0.5)
        assert agg["nature_dqn"][stat]["ci95"] == pytest.approx([0.5, 0.5])
    assert agg["nature_dqn"]["optimality_gap"]["value"] == pytest.approx(0.5)
    # double_dqn's six scores 0, 1, 2, 0.2, 0.4, 0.6: mean 0.7; median of game means (1.0, 0.4) = 0.7;
    # IQM drops the lowest and highest (0, 2) of six: (0.2 + 0.4 + 0.6 + 1) / 4 = 0.55;
    # optimality gap: mean of max(1 - x, 0) = (1 + 0 + 0 + 0.8 + 0.6 + 0.4) / 6 = 0.4667.
    d = agg["double_dqn"]
    assert d["mean"]["value"] == pytest.approx(0.7)
    assert d["median"]["value"] == pytest.approx(0.7)
    assert d["iqm"]["value"] == pytest.approx(0.55)
    assert d["optimality_gap"]["value"] == pytest.approx(2.8 / 6)
    assert d["iqm"]["ci95"][0] < 0.55 < d["iqm"]["ci95"][1]
    poi = result["probability_of_improvement"]
    key = next(iter(poi))
    assert 0.0 <= poi[key]["value"] <= 1.0
    with open(out / "per_game.csv") as f:
        rows = {(r["variant"], r["game"]): r for r in csv.DictReader(f)}
    pong = rows[("double_dqn", "pong")]
    assert float(pong["hns"]) == pytest.approx(1.0) and int(pong["seeds"]) == 3
    assert float(pong["mean"]) == pytest.approx(hns_score("pong", 1.0))
    assert float(pong["std"]) == pytest.approx(np.std([hns_score("pong", h) for h in (0, 1, 2)], ddof=1))
    published_pong = published.load("rainbow_2018_ddqn_noop").scores["pong"]
    assert float(pong["published"]) == published_pong
    assert float(pong["fraction_of_published"]) == pytest.approx(hns_score("pong", 1.0) / published_pong)


def test_a_curve_of_one_evaluation_is_a_marker_with_its_interval_and_the_seeds():
    """Atari 100k runs are evaluated once, at the end: a line through one point draws nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reproduce.report import _draw_curve, bootstrap_band

    fig, (one, many) = plt.subplots(1, 2)
    values = np.array([[556.0], [9395.0], [17552.0]])
    _draw_curve(one, [400_000], values, "der")
    marked = {line.get_marker(): line for line in one.lines}
    assert marked["o"].get_ydata()[0] == pytest.approx(values.mean())
    assert sorted(marked["x"].get_ydata()) == [556.0, 9395.0, 17552.0]
    (bar,) = [c for c in one.collections if len(c.get_segments()) == 1]
    assert np.allclose(bar.get_segments()[0], [[400_000, v] for v in np.concatenate(bootstrap_band(values))])
    _draw_curve(many, [1, 2, 3], np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]), "dqn")
    (line,) = many.lines
    assert line.get_marker() == "None" and list(line.get_ydata()) == [2.0, 3.0, 4.0] and many.collections
    plt.close(fig)


def test_a_table_is_normalised_as_its_paper_did(tmp_path):
    """The Nature table's human scores are its professional tester's (Extended Data Table 2): pong 9.3,
    breakout 31.8, random -20.7 and 1.7; DQN Zoo's human pong is 14.6."""
    runs = tmp_path / "runs"
    for seed in range(2):
        make_run(runs, "nature_dqn", "pong", seed, 9.3)
        make_run(runs, "nature_dqn", "breakout", seed, 1.7 + 0.5 * (31.8 - 1.7))
    result = build([runs], tmp_path / "out", reps=100)
    assert result["baselines"] == "nature_dqn" and "games_without_baselines" not in result
    assert result["aggregates"]["nature_dqn"]["mean"]["value"] == pytest.approx(0.75)
    with open(tmp_path / "out/per_game.csv") as f:
        rows = {r["game"]: r for r in csv.DictReader(f)}
    assert float(rows["pong"]["hns"]) == pytest.approx(1.0) and float(rows["breakout"]["hns"]) == pytest.approx(0.5)
    nature_pong = published.load("nature_dqn_2015_noop").scores["pong"]
    assert float(rows["pong"]["published_hns"]) == pytest.approx((nature_pong + 20.7) / (9.3 + 20.7))
    assert "`nature_dqn` random and human scores" in (tmp_path / "out/report.md").read_text()


def test_a_game_without_baselines_is_left_out_of_the_aggregates(tmp_path):
    """Dopamine's tables have air_raid, which no baselines cover: the aggregates stay human-normalised,
    over the other games, and name it (rather than averaging raw scores of different games)."""
    runs = tmp_path / "runs"
    for seed in range(2):
        make_run(runs, "dqn_dopamine", "pong", seed, 14.6)  # rliable's human pong: HNS 1
        make_run(runs, "dqn_dopamine", "air_raid", seed, 5000.0)
    result = build([runs], tmp_path / "out", reps=100)
    assert result["metric"] == "human-normalised score" and result["baselines"] == "rliable_ale"
    assert result["games_without_baselines"] == ["air_raid"]
    assert result["aggregates"]["dqn_dopamine"]["mean"]["value"] == pytest.approx(1.0)
    assert "Left out, having none: air_raid" in (tmp_path / "out/report.md").read_text()


def test_a_variant_evaluated_two_ways_is_refused(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "nature_dqn", "pong", 0, 0.0)
    make_run(runs, "nature_dqn", "pong", 1, 0.0, overrides={"eval.epsilon": 0.001})
    with pytest.raises(ReportError, match="evaluated differently.*epsilon 0.001"):
        build([runs], tmp_path / "out", reps=100)

def test_no_ratio_to_a_negative_published_score(tmp_path):
    """der's published pong is -19.3: a ratio to it would shrink as the score improves."""
    runs = tmp_path / "runs"
    make_run(runs, "der", "pong", 0, -15.0)
    build([runs], tmp_path / "out", reps=100)
    with open(tmp_path / "out/per_game.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["published"]) < 0 and row["fraction_of_published"] == ""

def test_probability_of_improvement_of_a_dominating_variant(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(3):
        make_run(runs, "nature_dqn", "pong", seed, hns_score("pong", 0.1 * seed))
        make_run(runs, "double_dqn", "pong", seed, hns_score("pong", 1.0 + 0.1 * seed))
    result = build([runs], tmp_path / "out", against="nature_dqn_2015_noop", reps=200)
    (pair, p), = result["probability_of_improvement"].items()
    assert p["value"] == pytest.approx(0.0 if pair.startswith("nature") else 1.0)


def test_protocol_difference_is_marked(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "nature_dqn", "pong", 0, 0.0, overrides={"env.protocol": "machado"})
    build([runs], tmp_path / "out", against="nature_dqn_2015_noop", reps=100)
    with open(tmp_path / "out/per_game.csv") as f:
        row = next(csv.DictReader(f))
    assert "sticky actions p=0.25" in row["protocol_differences"]
    assert "no no-op starts" in row["protocol_differences"]
    assert "budget 4K frames (table 200M)" in row["protocol_differences"]
    assert "&dagger;" in (tmp_path / "out/report.md").read_text()


def write_episodes(path, rows):
    """episodes.csv as the loop writes it: (step, return) pairs, one env, no frame skip bookkeeping needed."""
    with open(path / "episodes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "frames", "env", "return", "length"])
        for step, ret in rows:
            w.writerow([step, 4 * step, 0, ret, 10])


def test_training_score_is_the_mean_over_the_last_window(tmp_path):
    """Dopamine's figure: the training episodes that ended in (steps - window, steps], by hand."""
    runs = tmp_path / "runs"
    path = make_run(runs, "dqn_dopamine", "pong", 0, score=99.0, steps=1000)
    write_episodes(path, [(300, -21.0), (700, -5.0), (701, 1.0), (1000, 7.0)])
    result = build([runs], tmp_path / "out", against="dopamine_sticky_dqn_final", reps=50, score="training", window=300)
    with open(tmp_path / "out/per_game.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["mean"]) == pytest.approx((1.0 + 7.0) / 2)  # step 700 is outside (700, 1000]
    assert "training episodes ended in the last 300 agent steps" in result["score"]
    assert row["protocol_differences"] == "budget 4K frames (table 200M)"  # same kind of returns, same epsilon


def test_evaluation_score_against_a_training_table_is_marked(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "dqn_dopamine", "pong", 0, score=3.0)
    build([runs], tmp_path / "out", against="dopamine_sticky_dqn_final", reps=50)
    with open(tmp_path / "out/per_game.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["mean"]) == 3.0
    assert "table: training returns; here: evaluation returns" in row["protocol_differences"]


def test_training_score_needs_episodes_in_the_window(tmp_path):
    runs = tmp_path / "runs"
    path = make_run(runs, "dqn_dopamine", "pong", 0, score=3.0, steps=1000)
    with pytest.raises(ReportError, match="lacks episodes.csv"):
        build([runs], tmp_path / "out", score="training")
    write_episodes(path, [(100, -21.0)])
    with pytest.raises(ReportError, match="no training episode ended in its last 500 steps; widen --window"):
        build([runs], tmp_path / "out", score="training", window=500)
    # From the command line: the same run, a window that holds its one episode.
    assert main(["report", str(runs), "--score", "training", "--window", "1000", "--reps", "50",
                 "--out", str(tmp_path / "cli")]) == 0
    with open(tmp_path / "cli/per_game.csv") as f:
        assert float(next(csv.DictReader(f))["mean"]) == -21.0


def test_report_bad_input(tmp_path, capsys):
    runs = tmp_path / "runs"
    run = make_run(runs, "nature_dqn", "pong", 0, 0.0)
    (run / "summary.json").unlink()
    with pytest.raises(ReportError, match="lacks summary.json"):
        build([runs], tmp_path / "out")
    mixed = tmp_path / "mixed"
    make_run(mixed, "nature_dqn", "pong", 0, 0.0, steps=1000)
    make_run(mixed, "nature_dqn", "pong", 1, 0.0, steps=2000)
    with pytest.raises(ReportError, match="mixes runs of different budgets"):
        build([mixed], tmp_path / "out")
    backends = tmp_path / "backends"
    make_run(backends, "nature_dqn", "pong", 0, 0.0)
    make_run(backends, "nature_dqn", "pong", 1, 0.0, overrides={"env.backend": "ale"})
    with pytest.raises(ReportError, match="mixes runs on env.backend = ale .* with runs on sync"):
        build([backends], tmp_path / "out")
    uneven = tmp_path / "uneven"
    make_run(uneven, "nature_dqn", "pong", 0, 0.0)
    make_run(uneven, "nature_dqn", "pong", 1, 0.0)
    make_run(uneven, "nature_dqn", "breakout", 0, 0.0)
    with pytest.raises(ReportError, match="different numbers of seeds per game"):
        build([uneven], tmp_path / "out")
    other = tmp_path / "other"
    make_run(other, "nature_dqn", "pong", 0, 0.0)
    assert main(["report", str(other), "--against", "der_2019_paper_atari100k", "--out", str(tmp_path / "o")]) == 0
    assert main(["report", str(other), "--against", "nature_dqn_2015_noop", "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    make_run(other, "nature_dqn", "space_invaders", 0, 0.0)
    assert main(["report", str(other), "--against", "der_2019_paper_atari100k", "--out", str(tmp_path / "o")]) == 2
    assert "has no score for space_invaders" in capsys.readouterr().err
    assert main(["report", str(other), "--against", "nature_2015", "--out", str(tmp_path / "o")]) == 2
    assert "unknown published table 'nature_2015'" in capsys.readouterr().err
    assert main(["report", str(other), "--reps", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--reps must be at least 1 (bootstrap resamples), got 0" in capsys.readouterr().err


def test_every_published_table_loads_and_matches_its_source():
    source = published.PUBLISHED.parents[2] / "shared" / "reference-scores"
    for name, info in published.index().items():
        table = published.load(name)
        assert set(table.scores) == set(info["games"]) and len(table.scores) >= 20, name
        assert info["evaluation"] in ("no-op starts", "human starts", "sticky actions", "atari 100k")
        if source.exists():
            with open(source / info["file"]) as f:
                rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))
                        if all(r.get(k) == v for k, v in info.get("filter", {}).items())]
            assert {r["game"]: float(r["score"]) for r in rows} == table.scores, name
    # The games the papers report, for a few tables: 49 in Nature DQN, 57 in Rainbow-era, 26 in Atari 100k.
    assert len(published.load("nature_dqn_2015_noop").scores) == 49
    assert len(published.load("c51_2017_c51_noop").scores) == 57
    assert len(published.load("der_2019_paper_atari100k").scores) == 26
    assert len(published.load("rliable_atari100k_der").runs["pong"]) == 100
    assert len(published.load("dopamine_sticky_dqn_final").runs["pong"]) == 5


def test_every_preset_names_a_published_table():
    tables = published.index()
    for name in cfg.preset_names():
        table = cfg.resolve(name).paper.compare_with
        assert not table or table in tables, (name, table)


def test_tables_of_best_agents_are_recorded_as_such():
    """The 200M-frame papers report each game's best agent during training (their texts, or reproductions
    that cite them: scripts/maintenance/import_published.py); Atari 100k papers evaluate the final agent,
    and Dopamine's tables are training returns."""
    best = ["nature_dqn_2015_noop", "ddqn_2016_ddqn_noop", "dueling_2016_duel_ddqn_noop", "per_2016_rank_dqn_human_starts",
            "c51_2017_c51_noop", "noisynet_2018_noisynet_dqn_noop", "qr_dqn_2018_qr_dqn_1_noop", "iqn_2018_iqn_noop",
            "rainbow_2018_rainbow_noop", "rainbow_2018_rainbow_human_starts"]
    for name in best:
        info = published.load(name).info
        assert info["score"] == "best" and info["score_source"], name
    for name in ("der_2019_paper_atari100k", "rliable_atari100k_der", "dopamine_sticky_dqn_final"):
        assert published.load(name).info.get("score", "final") == "final", name


def test_best_score_is_the_highest_mean_evaluation_and_marked_against_final_tables(tmp_path):
    """IQN's table reports each game's best evaluation during training (index.json `score`): --score best
    takes the highest mean over one evaluation's games, and a final score against it is marked."""
    runs = tmp_path / "runs"
    path = make_run(runs, "iqn", "pong", 0, score=3.0, steps=1000)
    with open(path / "eval.csv", "w", newline="") as f:  # three evaluations of two games: means 4, 7, 3
        csv.writer(f).writerows([["step", "frames", "episode", "return", "length"],
                                 [250, 1000, 0, 2.0, 9], [250, 1000, 1, 6.0, 9],
                                 [500, 2000, 0, 10.0, 9], [500, 2000, 1, 4.0, 9],
                                 [1000, 4000, 0, 1.0, 9], [1000, 4000, 1, 5.0, 9]])
    assert published.load("iqn_2018_iqn_noop").info["score"] == "best"
    rows = {}
    for score in ("eval", "best"):
        result = build([runs], tmp_path / score, against="iqn_2018_iqn_noop", reps=50, score=score)
        with open(tmp_path / score / "per_game.csv") as f:
            rows[score] = next(csv.DictReader(f))
    assert float(rows["best"]["mean"]) == 7.0 and result["score"] == "best evaluation during training"
    assert float(rows["eval"]["mean"]) == 3.0
    assert "table: best evaluation; here: final evaluation" in rows["eval"]["protocol_differences"]
    assert "best evaluation" not in rows["best"]["protocol_differences"]
    build([runs], tmp_path / "final", against="der_2019_paper_atari100k", reps=50, score="best")
    with open(tmp_path / "final" / "per_game.csv") as f:
        assert "table: final evaluation; here: best evaluation" in next(csv.DictReader(f))["protocol_differences"]


def _minatar_curve_script():
    path = Path(__file__).parent.parent / "scripts" / "experiments" / "minatar_curve.py"
    spec = importlib.util.spec_from_file_location("minatar_curve", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_minatar_table_gives_the_mean_of_seeds_at_each_step_and_refuses_a_step_not_logged():
    table_at = _minatar_curve_script().table_at
    train = {0: {10: 1.0, 20: 2.0, 30: 3.0}, 1: {10: 3.0, 20: 5.0, 30: 6.0}}
    evals = {0: {10: 0.5, 30: 4.0}, 1: {10: 1.0, 30: 7.5}}
    assert table_at(train, evals, [10, 30]).splitlines() == [
        "| agent steps (= frames) | 10 | 30 |",
        "|---|---|---|",
        "| training, last 100 episodes (mean of 2 seeds) | 2.00 | 4.50 (3.00, 6.00) |",
        "| evaluation, epsilon 0.05, 10 games per seed | 0.75 | 5.75 (4.00, 7.50) |",
    ]
    with pytest.raises(SystemExit, match="--at 20: seed 0 has no evaluation there; it has 10 to 30 every 20 steps"):
        table_at(train, evals, [10, 20])


def test_minatar_progress_is_the_runs_own_clock_across_resumes(tmp_path):
    """Steps per second from the wall time a run's processes recorded (its newest checkpoint, or its
    summary once finished), not from the first and last log times, which span the stops between them."""
    from reproduce.checkpoint import write_verified

    progress = _minatar_curve_script().progress
    records = [{"step": 10_000, "time": 0.0}, {"step": 30_000, "time": 90_000.0}]  # a day's stop between them
    (tmp_path / "checkpoints").mkdir()
    for step, elapsed in ((20_000, 100.0), (25_000, 125.0)):
        write_verified(tmp_path / "checkpoints" / f"ckpt-{step:012d}.pt",
                       {"step": step, "loop": {"elapsed": elapsed}, "frame_chunks": [], "saved_heads": [0]})
    assert progress(tmp_path, records, 50_000) == {"last_logged_step": 30_000, "budget_steps": 50_000,
                                                   "clock_step": 25_000, "running_hours": 0.03,
                                                   "steps_per_second": 200.0}
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 50_000, "wall_time_seconds": 400.0}))
    assert progress(tmp_path, records, 50_000)["steps_per_second"] == 125.0
