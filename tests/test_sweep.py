"""Sweeps through submitit: the spec, the local launcher, and a real Slurm (scripts/slurm-local.sh up)
that requeues a job mid-run."""

import json
import shutil
import subprocess
import time

import pytest

from reproduce import config as cfg
from reproduce.cli import main
from reproduce.loop import train
from reproduce.sweep import SweepSpec, status

TINY = {"train.deterministic": True, "log.checkpoint_period_steps": 500, "eval.period_steps": 0,
        "eval.episodes": 2, "log.period_steps": 250}


def test_sweep_file_and_grid(tmp_path):
    spec_file = tmp_path / "sweep.toml"
    spec_file.write_text('preset = "cartpole_dqn"\ngames = ["cartpole"]\nseeds = [0, 1]\nsteps = 100\n'
                         '[set]\n"replay.capacity" = 1000\n[grid]\n"agent.target_update" = ["hard", "soft"]\n')
    jobs = SweepSpec.from_file(spec_file).jobs()
    assert [j["name"] for j in jobs] == [
        "cartpole_dqn-cartpole-s0-target_update=hard", "cartpole_dqn-cartpole-s1-target_update=hard",
        "cartpole_dqn-cartpole-s0-target_update=soft", "cartpole_dqn-cartpole-s1-target_update=soft"]
    assert all(j["overrides"]["replay.capacity"] == 1000 and j["steps"] == 100 for j in jobs)


def test_sweep_bad_input_is_refused_before_submitting(tmp_path, capsys):
    assert main(["sweep", "cartpole_dqn", "--games", "cartpole", "--seeds", "0,x", "--sweep-dir", str(tmp_path / "s")]) == 2
    assert "expected comma-separated integers" in capsys.readouterr().err
    assert main(["sweep", "nature_dqn", "--games", "Pong,Pongg", "--seeds", "0", "--sweep-dir", str(tmp_path / "s")]) == 2
    assert "unknown game 'Pongg'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_local_sweep_runs_every_job(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", "cartpole_dqn", "--games", "cartpole", "--seeds", "0,1", "--steps", "600",
            "--sweep-dir", str(sweep_dir), "--launcher", "local", "--wait"]
    for key, value in TINY.items():
        args += ["--set", f"{key}={str(value).lower()}"]
    assert main(args) == 0
    rows = status(sweep_dir)
    assert [r["state"] for r in rows] == ["COMPLETED", "COMPLETED"] and all(r["steps"] == 600 for r in rows)
    assert main(["status", str(sweep_dir)]) == 0
    assert "cartpole_dqn-cartpole-s1" in capsys.readouterr().out


def slurm_is_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "allocated"))


@pytest.mark.slow
@pytest.mark.skipif(not slurm_is_up(), reason="no Slurm cluster here (start one with `scripts/slurm-local.sh up`)")
def test_slurm_sweep_requeued_job_resumes_exactly(tmp_path):
    steps = 3000
    overrides = {**TINY, "train.steps": steps}
    sweep_dir = tmp_path / "sweep"
    spec = SweepSpec("cartpole_dqn", ["cartpole"], [0, 1], steps, {k: v for k, v in TINY.items()})
    from reproduce.sweep import SlurmOptions, submit

    jobs = submit(spec, sweep_dir, "slurm", SlurmOptions(time=30, cpus=1, mem=2, signal_lead=30))
    victim = jobs[0]
    run_dir = sweep_dir / "runs" / victim["name"]
    deadline = time.time() + 600
    while not list((run_dir / "checkpoints").glob("ckpt-*.pt.sha256")):
        assert time.time() < deadline, "the job never wrote a checkpoint"
        time.sleep(0.5)
    subprocess.run(["scontrol", "requeue", victim["job_id"]], check=True)
    while not all(r["state"] == "COMPLETED" for r in status(sweep_dir)):
        assert time.time() < deadline + 600, status(sweep_dir)
        time.sleep(2)
    # The requeued job started again and continued from its checkpoint ...
    states = subprocess.run(["sacct", "-n", "-X", "-j", victim["job_id"], "--duplicates", "-o", "State"],
                            capture_output=True, text=True).stdout.split()
    assert "REQUEUED" in states or len(states) > 1, states
    logs = "".join(p.read_text() for p in (sweep_dir / "submitit").glob(f"{victim['job_id']}*.err"))
    assert "resumed" in logs
    # ... and ended exactly where an uninterrupted run ends.
    reference = train(cfg.resolve("cartpole_dqn", {**overrides, "log.wandb": "disabled", "train.seed": 0}),
                      tmp_path / "reference", progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params_sha256"] == reference["params_sha256"]
