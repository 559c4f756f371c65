import csv
import json
import math
import os
import subprocess
import tomllib

import pytest

from reproduce import config as cfg
from reproduce.cli import _report, main
from reproduce.loop import train

FAST_PONG = [
    "--steps", "600", "--wandb", "disabled", "--no-progress",
    "--set", "agent.learning_starts_steps=200", "--set", "replay.capacity=5000",
    "--set", "eval.episodes=1", "--set", "eval.max_episode_frames=1000", "--set", "eval.period_steps=0",
    "--set", "log.period_steps=100",
]


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "pong"
    assert main(["run", "nature_dqn", "--game", "Pong", "--run-dir", str(run_dir), *FAST_PONG]) == 0
    return run_dir


def test_run_folder_is_complete(pong_run):
    config = tomllib.loads((pong_run / "config.toml").read_text())
    assert config["env"]["game"] == "pong" and config["protocol"]["name"] == "nature"
    assert config["protocol"]["repeat_action_probability"] == 0.0  # the protocol card is in the config
    lines = [json.loads(line) for line in (pong_run / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "frames", "name", "value"} <= set(lines[0])
    assert {"loss", "epsilon", "eval_return_mean"} <= {line["name"] for line in lines}
    with open(pong_run / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "frames", "episode", "return", "length"] and len(rows) == 1
    with open(pong_run / "episodes.csv") as f:
        assert next(csv.reader(f)) == ["step", "frames", "env", "return", "length"]
    summary = json.loads((pong_run / "summary.json").read_text())
    for key in ("preset", "game", "protocol", "seed", "steps", "frames", "eval_return_mean", "eval_return_std",
                "wall_time_seconds", "steps_per_second", "versions", "git_commit", "params_sha256", "host"):
        assert key in summary
    assert summary["host"]["cores"] == os.cpu_count() and summary["host"]["cpu"]
    assert summary["steps"] == 600 and summary["frames"] == 2400 and len(summary["params_sha256"]) == 64
    assert list((pong_run / "checkpoints").glob("ckpt-*.pt"))


def test_eval_command(pong_run, capsys):
    assert main(["eval", str(pong_run), "--episodes", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 1 and result["epsilon"] == 0.05 and len(result["returns"]) == 1


def test_eval_video(pong_run, capsys):
    assert main(["eval", str(pong_run), "--episodes", "1", "--video"]) == 0
    video = json.loads(capsys.readouterr().out)["video"]
    assert video.endswith(".mp4")
    with open(video, "rb") as f:
        assert b"ftyp" in f.read(64)  # an MP4 container


def test_run_refuses_a_folder_that_holds_a_run(pong_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in pong_run.rglob("*")}
    assert main(["run", "nature_dqn", "--run-dir", str(pong_run), *FAST_PONG]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in pong_run.rglob("*")} == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "natur_dqn"], "unknown preset 'natur_dqn'. Did you mean: nature_dqn"),
        (["run", "nature_dqn", "--game", "Pongg"], "unknown game 'Pongg'"),
        (["run", "nature_dqn", "--set", "agent.nstep=3"], "unknown config key 'agent.nstep'. Did you mean: agent.n_step"),
        (["run", "nature_dqn", "--set", "env.protocol=sticky"], "env.protocol = 'sticky'; known protocols"),
        (["run", "nature_dqn", "--set", "train.steps=lots"], "train.steps = 'lots' is not a valid int"),
        (["run", "nature_dqn", "--steps", "0"], "train.steps = 0; must be >= 1"),
        (["run", "nature_dqn", "--set", "replay.capacity=0"], "replay.capacity = 0; must be >= 1"),
        (["run", "nature_dqn", "--set", "env.num_envs=0"], "env.num_envs = 0; must be >= 1"),
        (["run", "nature_dqn", "--set", "agent.gamma=1.5"], "agent.gamma = 1.5; must be in [0, 1]"),
        (["run", "nature_dqn", "--set", "agent.n_step=0"], "agent.n_step = 0; must be >= 1"),
        (["run", "nature_dqn", "--set", "agent.epsilon_end=2"], "agent.epsilon_end = 2.0; must be in [0, 1]"),
        (["run", "nature_dqn", "--set", "eval.epsilon=-0.1"], "eval.epsilon = -0.1; must be in [0, 1]"),
        (["run", "rainbow", "--set", "agent.rmsprop_initial_square=1"],
         "agent.rmsprop_initial_square = 1.0 applies to the RMSProp optimizers only; agent.optimizer is 'adam'"),
        (["run", "cartpole_dqn", "--game", "pong"], "cannot run under env.protocol = 'classic'"),
        (["run", "nature_dqn", "--set", "train.compile=cudagraphs"],
         "train.compile = 'cudagraphs'; allowed: auto, true, false, reduce-overhead"),
        (["run", "nature_dqn", "--device", "cpu", "--set", "train.cuda_graph=true"],
         "train.cuda_graph needs the learner and the replay on a GPU"),
        (["run", "her_bitflip", "--set", "train.cuda_graph=true"], "train.cuda_graph cannot capture hindsight"),
        (["run", "nature_dqn", "--set", "train.cuda_graph=true", "--set", "replay.compress=lz4"],
         "train.cuda_graph needs replay.compress = none"),
    ],
)
def test_bad_input_is_one_clear_message(args, message, capsys, tmp_path):
    run_dir = tmp_path / "never"
    assert main([*args, "--run-dir", str(run_dir), "--wandb", "disabled"]) == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists()


def test_cuda_without_cuda(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["run", "cartpole_dqn", "--device", "cuda", "--run-dir", str(tmp_path / "x")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    # device auto, which is the CPU here
    assert main(["run", "cartpole_dqn", "--set", "train.cuda_graph=true", "--run-dir", str(tmp_path / "y")]) == 2
    assert "train.cuda_graph needs the learner on a CUDA device; it is on cpu" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_replay_that_does_not_fit_is_refused_before_anything_is_written(capsys, tmp_path):
    run_dir = tmp_path / "huge"
    assert main(["run", "nature_dqn", "--set", "replay.capacity=1000000000000", "--run-dir", str(run_dir),
                 "--wandb", "disabled", "--no-progress"]) == 2
    assert "GiB" in capsys.readouterr().err and not run_dir.exists()


def test_list_and_show(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "nature_dqn" in out and "cartpole_dqn" in out
    assert main(["show", "nature_dqn", "--set", "agent.n_step=3"]) == 0
    shown = capsys.readouterr().out
    config = tomllib.loads(shown.split("\n", 1)[1])
    assert config["agent"]["n_step"] == 3 and config["protocol"]["noop_max"] == 30


def test_console_script_is_installed():
    out = subprocess.run(["reproduce", "list"], capture_output=True, text=True, check=True).stdout
    assert "nature_dqn" in out


@pytest.mark.parametrize("preset, table, published, kind", [
    ("nature_dqn", "nature_dqn_2015_noop", "18.9", "best"),
    ("dqn_dopamine", "dopamine_sticky_dqn_final", None, "training"),
    ("der", "der_2019_paper_atari100k", None, "final"),
])
def test_finished_run_prints_its_score_beside_the_published_one(preset, table, published, kind, capsys):
    from reproduce import published as tables

    config = cfg.resolve(preset, {"env.game": "pong", "train.steps": 1000})
    summary = {"game": "pong", "steps": 1000, "eval_return_mean": 3.25, "eval_return_std": 1.0,
               "steps_per_second": 50.0, "params_sha256": "0", "eval_episodes": 10}
    assert _report(summary, config) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    ref = tables.load(table).scores["pong"]
    assert line.startswith(f"your score 3.2 (evaluation) beside the published {ref:g} ({table}")
    assert published is None or f"{ref:g}" == published  # Nature DQN's Pong, Extended Data Table 2
    assert ("training returns" in line) == (kind == "training") and ("--score training" in line) == (kind == "training")
    assert ("best agent during training" in line) == (kind == "best") and ("--score best" in line) == (kind == "best")


def test_no_evaluation_with_zero_episodes(tmp_path, capsys):
    summary = train(cfg.resolve("cartpole_dqn", {"train.steps": 400, "agent.learning_starts_steps": 100,
                                                 "eval.period_steps": 200, "eval.episodes": 0, "log.wandb": "disabled",
                                                 "log.checkpoint_period_steps": 0}), tmp_path / "run", progress=False)
    assert summary["eval_episodes"] == 0 and math.isnan(summary["eval_return_mean"])
    assert (tmp_path / "run" / "eval.csv").read_text().count("\n") == 1  # the header alone
    assert "eval_return" not in (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "evaluation" not in capsys.readouterr().err
    config = cfg.resolve("nature_dqn", {"env.game": "pong", "train.steps": 400})  # a preset with a table
    assert _report(summary | {"game": "pong"}, config) == 0
    assert "your score" not in capsys.readouterr().out  # no evaluation, no score to set beside the paper's


def test_summary_names_the_commit_the_run_started_on(tmp_path, monkeypatch):
    from reproduce import rundir
    checkout = {"commit": "1111111"}
    monkeypatch.setattr(rundir, "git_commit", lambda: checkout["commit"])
    config = cfg.resolve("cartpole_dqn", {})
    run = rundir.RunDir.create(tmp_path / "run", config)
    checkout["commit"] = "2222222"  # the checkout moves on while the run trains on the code it loaded
    summary = run.write_summary(config, 10, 10, 0.0, 0.0, 0, 1.0, "0" * 64)
    run.close()
    assert summary["git_commit"] == "1111111"
