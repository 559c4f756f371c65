"""Exact resume: a run killed at any point after a checkpoint, then resumed, ends exactly where the
uninterrupted run ends; signals checkpoint and exit; broken checkpoints fall back to the previous one."""

import filecmp
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from reproduce.cli import main

CARTPOLE = ["cartpole_dqn", "--steps", "4000", "--set", "log.checkpoint_period_steps=800",
            "--set", "eval.period_steps=1500", "--set", "log.period_steps=500"]
BREAKOUT = ["nature_dqn", "--game", "breakout", "--steps", "2400", "--set", "env.num_envs=2",
            "--set", "agent.learning_starts_steps=400", "--set", "replay.capacity=1200",
            "--set", "log.checkpoint_period_steps=600", "--set", "eval.period_steps=1200",
            "--set", "eval.episodes=2", "--set", "eval.max_episode_frames=1500", "--set", "log.period_steps=300"]
COMMON = ["--wandb", "disabled", "--no-progress", "--set", "train.deterministic=true"]


def command(*args):
    return [sys.executable, "-m", "reproduce.cli", *args]


def run(args, run_dir):
    return subprocess.run(command("run", *args, "--run-dir", str(run_dir), *COMMON), capture_output=True, text=True)


def checkpoints(run_dir):
    return sorted((run_dir / "checkpoints").glob("ckpt-*.pt.sha256"))


def start_and_kill(args, run_dir, after_checkpoints, rng, resume=False):
    """Starts (or resumes) the run and SIGKILLs it at a random moment after its n-th checkpoint.
    Returns False if the run finished first."""
    cmd = command("resume", str(run_dir), *COMMON[:3]) if resume else command("run", *args, "--run-dir", str(run_dir), *COMMON)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(checkpoints(run_dir)) < after_checkpoints and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))
    finished = proc.poll() is not None
    proc.kill()
    proc.wait()
    return not finished


def assert_same_run(a, b):
    def metrics(path):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in d.items() if k != "time"} for d in lines if d["name"] != "steps_per_second"]

    ma, mb = metrics(a / "metrics.jsonl"), metrics(b / "metrics.jsonl")
    first = next((i for i, (x, y) in enumerate(zip(ma, mb)) if x != y), None)
    assert ma == mb, f"metrics differ from line {first}: {ma[first] if first is not None else ''} vs {mb[first] if first is not None else ''}"
    for name in ("episodes.csv", "eval.csv"):
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    assert json.loads((a / "summary.json").read_text())["params_sha256"] == \
        json.loads((b / "summary.json").read_text())["params_sha256"]


@pytest.fixture(scope="module")
def cartpole_reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("reference") / "cartpole"
    assert run(CARTPOLE, path).returncode == 0
    return path


@pytest.mark.slow
def test_cartpole_killed_at_random_points_resumes_exactly(cartpole_reference, tmp_path):
    rng = random.Random(os.getpid())
    run_dir = tmp_path / "killed"
    killed = start_and_kill(CARTPOLE, run_dir, 1, rng)
    for n in (2, 4):  # kill the resumed run again, later
        if killed:
            killed = start_and_kill(None, run_dir, n, rng, resume=True)
    assert main(["resume", str(run_dir), "--no-progress"]) == 0
    assert_same_run(cartpole_reference, run_dir)


@pytest.mark.slow
def test_atari_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    reference, run_dir = tmp_path / "reference", tmp_path / "killed"
    assert run(BREAKOUT, reference).returncode == 0
    start_and_kill(BREAKOUT, run_dir, 2, random.Random(os.getpid()))
    assert main(["resume", str(run_dir), "--no-progress"]) == 0
    assert_same_run(reference, run_dir)


def test_rainbow_resumed_with_a_longer_budget_keeps_its_schedules(tmp_path):
    """Prioritized replay (with C51, noisy nets and n-step returns) resumes exactly, and a longer budget
    given at resume keeps beta's annealing over the first budget: a finished run of 1,200 steps resumed to
    1,600 ends where an uninterrupted 1,600-step run annealing beta over 1,200 steps ends."""
    rainbow = ["cartpole_rainbow", "--set", "agent.learning_starts_steps=200", "--set", "eval.episodes=0",
               "--set", "log.period_steps=200", "--set", "log.checkpoint_period_steps=400"]
    assert run([*rainbow, "--steps", "1600", "--set", "agent.priority_beta_steps=1200"], tmp_path / "whole").returncode == 0
    assert run([*rainbow, "--steps", "1200"], tmp_path / "cut").returncode == 0
    assert main(["resume", str(tmp_path / "cut"), "--steps", "1600", "--no-progress", "--wandb", "disabled"]) == 0
    summary = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "cut")]
    assert summary[0]["params_sha256"] == summary[1]["params_sha256"]
    assert filecmp.cmp(tmp_path / "whole" / "episodes.csv", tmp_path / "cut" / "episodes.csv", shallow=False)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_signal_checkpoints_and_exits_then_resume_is_exact(signum, cartpole_reference, tmp_path):
    run_dir = tmp_path / "signalled"
    proc = subprocess.Popen(command("run", *CARTPOLE, "--run-dir", str(run_dir), *COMMON),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not checkpoints(run_dir):
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.communicate()[1]}"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "after writing a checkpoint" in err
    assert main(["resume", str(run_dir), "--no-progress"]) == 0
    assert_same_run(cartpole_reference, run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["corrupt", "truncate", "no_checksum"])
def test_broken_newest_checkpoint_falls_back_to_the_previous(damage, cartpole_reference, tmp_path, capsys):
    run_dir = tmp_path / "broken"
    assert run([*CARTPOLE[:2], "2000", *CARTPOLE[3:]], run_dir).returncode == 0
    newest = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))[-1]
    if damage == "corrupt":
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0xFF
        newest.write_bytes(bytes(data))
    elif damage == "truncate":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    else:
        newest.with_name(newest.name + ".sha256").unlink()
    assert main(["resume", str(run_dir), "--steps", "4000", "--no-progress"]) == 0
    assert f"skipping checkpoint {newest.name}" in capsys.readouterr().err
    assert_same_run(cartpole_reference, run_dir)


def test_second_checkpoint_writes_only_new_frames(tmp_path):
    from reproduce import config as cfg
    from reproduce.loop import train

    config = cfg.resolve("cartpole_dqn", {"train.steps": 3000, "log.checkpoint_period_steps": 1000,
                                          "log.wandb": "disabled", "eval.period_steps": 0, "eval.episodes": 1,
                                          "log.keep_checkpoints": 5})
    train(config, tmp_path / "run", progress=False)
    chunks = [torch.load(p, weights_only=False) for p in sorted((tmp_path / "run/checkpoints/replay").glob("chunk-*.pt"))]
    sizes = [len(c["frames"]) for c in chunks]
    # 1,000 steps add 1,000 frames plus one final frame per finished episode, and no older frame.
    assert len(sizes) == 3 and all(1000 <= s < 1200 for s in sizes), sizes
    assert chunks[1]["ranges"][0][0] == chunks[0]["ranges"][0][1] + 1


def test_run_refuses_a_folder_with_a_checkpoint_unless_resume(cartpole_reference, capsys):
    before = sorted(p.name for p in (cartpole_reference / "checkpoints").iterdir())
    assert main(["run", *CARTPOLE, "--run-dir", str(cartpole_reference), *COMMON]) == 2
    assert "reproduce resume" in capsys.readouterr().err
    assert sorted(p.name for p in (cartpole_reference / "checkpoints").iterdir()) == before


def test_resume_bad_input(cartpole_reference, tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert "holds no run to resume" in capsys.readouterr().err
    # A changed game or preset is refused with the differences listed; the folder is untouched.
    config_before = (cartpole_reference / "config.toml").read_text()
    assert main(["run", "cartpole_dqn", "--run-dir", str(cartpole_reference), "--resume", "--steps", "5000",
                 "--set", "agent.learning_rate=0.01", *COMMON]) == 2
    err = capsys.readouterr().err
    assert "agent.learning_rate: 0.001 -> 0.01" in err and "train.steps" not in err
    assert main(["run", "nature_dqn", "--run-dir", str(cartpole_reference), "--resume", *COMMON]) == 2
    err = capsys.readouterr().err
    assert "env.game: 'cartpole' -> 'pong'" in err and "preset: 'cartpole_dqn' -> 'nature_dqn'" in err
    assert (cartpole_reference / "config.toml").read_text() == config_before


def test_resume_may_switch_compilation_but_not_bf16(cartpole_reference, tmp_path, capsys):
    import shutil

    from reproduce.config import load_run_config

    run_dir = tmp_path / "copy"
    shutil.copytree(cartpole_reference, run_dir)
    assert load_run_config(run_dir / "config.toml").train.compile == "false"
    # At its budget already: the resume writes its config and finishes without another update.
    assert main(["resume", str(run_dir), "--compile", "true", *COMMON[:3]]) == 0
    assert load_run_config(run_dir / "config.toml").train.compile == "true"
    before = (run_dir / "config.toml").read_text()
    assert main(["run", "cartpole_dqn", "--run-dir", str(run_dir), "--resume", "--steps", "4000",
                 "--set", "train.compile=false", "--set", "train.bf16=true", *COMMON]) == 2
    err = capsys.readouterr().err
    assert "train.bf16: False -> True" in err and "train.compile" not in err
    assert (run_dir / "config.toml").read_text() == before


def test_unwritable_run_dir(tmp_path, capsys):
    blocker = tmp_path / "a_file"  # a path under a regular file cannot be created, even by root
    blocker.write_text("")
    assert main(["run", "cartpole_dqn", "--run-dir", str(blocker / "run"), *COMMON]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    import shutil

    from reproduce import config as cfg
    from reproduce.loop import train

    real = shutil.disk_usage
    calls = {"n": 0}

    def usage(path):
        calls["n"] += 1
        total, used, free = real(path)
        return shutil._ntuple_diskusage(total, used, free if calls["n"] == 1 else 1024)  # full after the first

    monkeypatch.setattr("reproduce.checkpoint.shutil.disk_usage", usage)
    config = cfg.resolve("cartpole_dqn", {"train.steps": 2000, "log.checkpoint_period_steps": 1000,
                                          "log.wandb": "disabled", "eval.period_steps": 0, "eval.episodes": 1})
    train(config, tmp_path / "run", progress=False)
    assert "not enough disk" in capsys.readouterr().err
    assert [p.name for p in sorted((tmp_path / "run/checkpoints").glob("ckpt-*.pt"))] == ["ckpt-000000001000.pt"]
