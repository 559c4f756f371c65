"""Sweeps: one job per (game, seed, grid point), through submitit, on this machine or on Slurm.

Every job runs `run_job`, which starts its run or, when its folder already holds a checkpoint,
resumes it: so a Slurm job that is preempted or requeued (it asks Slurm for --signal=USR1@lead,
checkpoints on the signal and requeues itself) continues where it stopped.

A sweep folder holds sweep.json (the spec and the jobs), runs/<job>/ (one run folder each) and
submitit/ (submitit's scripts and logs).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from reproduce import config as cfg


@dataclass
class SweepSpec:
    preset: str
    games: list[str]
    seeds: list[int]
    steps: int | None = None  # agent steps per job (None: the preset's budget)
    overrides: dict = field(default_factory=dict)  # --set values for every job
    grid: dict = field(default_factory=dict)  # key -> list of values: one variant per combination

    @classmethod
    def from_file(cls, path: Path) -> SweepSpec:
        """A sweep file (TOML): preset, games, seeds, optional steps, [set] and [grid] tables of
        `section.key` entries (quoted, since they contain a dot)."""
        with open(path, "rb") as f:
            data = tomllib.load(f)
        unknown = set(data) - {"preset", "games", "seeds", "steps", "set", "grid"}
        if unknown:
            raise cfg.ConfigError(f"sweep file {path}: unknown entries {sorted(unknown)}; "
                                  "allowed: preset, games, seeds, steps, [set], [grid]")
        for key in ("preset", "games", "seeds"):
            if key not in data:
                raise cfg.ConfigError(f"sweep file {path} has no {key!r}")
        grid = data.get("grid", {})
        bad = [k for k, v in grid.items() if not isinstance(v, list) or not v]
        if bad:
            raise cfg.ConfigError(f"sweep file {path}: [grid] values must be non-empty lists, not {bad}")
        return cls(data["preset"], list(data["games"]), list(data["seeds"]), data.get("steps"),
                   dict(data.get("set", {})), grid)

    def jobs(self) -> list[dict]:
        """One job per (grid point, game, seed): its name and overrides. Each is validated here,
        before anything is submitted."""
        keys = sorted(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            point = dict(zip(keys, values))
            tag = "-".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())
            for game, seed in itertools.product(self.games, self.seeds):
                overrides = {**self.overrides, **point, "env.game": game, "train.seed": seed}
                if tag:
                    overrides.setdefault("log.label", f"{self.preset}-{tag}")
                if self.steps is not None:
                    overrides["train.steps"] = self.steps
                config = cfg.resolve(self.preset, overrides)  # fails early on any bad value
                name = f"{self.preset}-{config.env.game}-s{seed}" + (f"-{tag}" if tag else "")
                out.append({"name": name, "overrides": overrides, "steps": config.train.steps})
        return out


def run_job(run_dir: str, preset: str, overrides: dict) -> dict:
    """A sweep job: starts the run, or resumes it from its checkpoint. On a stop signal under Slurm
    the run checkpoints and the job requeues itself."""
    from reproduce.checkpoint import has_checkpoint
    from reproduce.loop import Preempted, train
    from reproduce.rundir import check_resumable

    path = Path(run_dir)
    config = cfg.resolve(preset, {"log.wandb": "disabled", **overrides})
    resume = has_checkpoint(path / "checkpoints")
    if resume:
        config = check_resumable(path, config)
    try:
        return train(config, path, progress=False, resume=resume)
    except Preempted as e:
        job = slurm_job_id()
        if job:
            print(f"{e}; requeueing Slurm job {job}", file=sys.stderr, flush=True)
            subprocess.run(["scontrol", "requeue", job], check=False)
        raise SystemExit(e.exit_code) from None


def slurm_job_id() -> str | None:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


@dataclass
class SlurmOptions:
    partition: str | None = None
    time: int = 60 * 24  # minutes per job (a preempted job continues in its requeued successor)
    gpus: int = 0
    cpus: int = 4
    mem: int = 32  # GB
    signal_lead: int = 120  # seconds of warning (USR1) before the time limit


def submit(spec: SweepSpec, sweep_dir: Path, launcher: str, slurm: SlurmOptions, parallel: int = 0) -> list[dict]:
    """Submits every job. Locally at most `parallel` (default: the number of cores) run at once, each
    with one torch thread: the call returns once the last of them is started."""
    jobs = spec.jobs()
    if launcher not in ("local", "slurm"):
        raise cfg.ConfigError(f"launcher {launcher!r}; allowed: local, slurm")
    import submitit  # after validation: importing it reconfigures logging (dictConfig)

    sweep_dir.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=sweep_dir / "submitit", cluster=launcher)
    params = dict(timeout_min=slurm.time, name=f"reproduce-{spec.preset}")
    if launcher == "slurm":
        params |= dict(slurm_partition=slurm.partition, gpus_per_node=slurm.gpus, cpus_per_task=slurm.cpus,
                       mem_gb=slurm.mem, slurm_signal_delay_s=slurm.signal_lead)
        params = {k: v for k, v in params.items() if v is not None}
    executor.update_parameters(**params)
    if launcher == "local":
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # several jobs share the cores: one thread each
    parallel = parallel or os.cpu_count() or 1
    running = []
    record = {"spec": dataclasses.asdict(spec), "launcher": launcher, "jobs": jobs}
    for job in jobs:
        job["run_dir"] = str((sweep_dir / "runs" / job["name"]).resolve())
    for job in jobs:
        while launcher == "local" and len(running) >= parallel:
            running = [j for j in running if not j.done()]
            time.sleep(1)
        submitted = executor.submit(run_job, job["run_dir"], spec.preset, job["overrides"])
        job["job_id"] = str(submitted.job_id)
        running.append(submitted)
        (sweep_dir / "sweep.json").write_text(json.dumps(record, indent=2) + "\n")
    return jobs


def job_state(sweep_dir: Path, launcher: str, job_id: str) -> str:
    """The scheduler's word on an unfinished run's job (a local job that ended without a summary failed)."""
    import submitit

    if not job_id:
        return "NOT SUBMITTED"
    try:
        if launcher == "slurm":
            return submitit.SlurmJob(sweep_dir / "submitit", job_id).state
        # A job object rebuilt from its id cannot see its process: the result file says it ended.
        job = submitit.LocalJob(sweep_dir / "submitit", job_id)
        return "FAILED" if job.paths.result_pickle.exists() else "RUNNING"
    except Exception:  # noqa: BLE001 - no scheduler to ask (sacct gone, other machine): the files speak
        return "UNKNOWN"


def status(sweep_dir: Path) -> list[dict]:
    """Each job's state, steps done, latest evaluation score and ETA, from its run folder (and the
    scheduler, where it can be asked)."""
    path = sweep_dir / "sweep.json"
    if not path.exists():
        raise FileNotFoundError(f"{sweep_dir} holds no sweep (no sweep.json)")
    record = json.loads(path.read_text())
    rows = []
    for job in record["jobs"]:
        run = Path(job["run_dir"])
        step, score, sps = 0, math.nan, math.nan
        if (run / "metrics.jsonl").exists():
            for line in (run / "metrics.jsonl").read_text().splitlines():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                step = max(step, d["step"])
                if d["name"] == "eval_return_mean":
                    score = d["value"]
                elif d["name"] == "steps_per_second":
                    sps = d["value"]
        done = (run / "summary.json").exists()
        state = "COMPLETED" if done else job_state(sweep_dir, record["launcher"], job.get("job_id", ""))
        eta = 0.0 if done else ((job["steps"] - step) / sps if sps and sps == sps and sps > 0 else math.nan)
        rows.append({"job": job["name"], "job_id": job.get("job_id", ""), "state": state, "steps": step,
                     "total": job["steps"], "score": score, "eta_seconds": eta})
    return rows


def format_status(rows: list[dict]) -> str:
    def eta(s):
        return "-" if s != s else time.strftime("%H:%M:%S", time.gmtime(s)) if s < 86400 else f"{s / 86400:.1f}d"

    width = max(len(r["job"]) for r in rows)
    lines = [f"{'job':<{width}}  {'id':>10}  {'state':<10}  {'steps':>21}  {'score':>9}  eta"]
    for r in rows:
        lines.append(f"{r['job']:<{width}}  {r['job_id']:>10}  {r['state']:<10}  "
                     f"{r['steps']:>10,}/{r['total']:<10,}  {r['score']:>9.1f}  {eta(r['eta_seconds'])}")
    return "\n".join(lines)


def wait(sweep_dir: Path, poll_seconds: float = 10.0) -> list[dict]:
    """Blocks until every job of the sweep has finished (or failed), printing progress."""
    while True:
        rows = status(sweep_dir)
        if all(r["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL") for r in rows):
            return rows
        time.sleep(poll_seconds)
