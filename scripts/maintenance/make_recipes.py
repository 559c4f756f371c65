"""Writes scripts/reproduce/<preset>.toml, one sweep spec per paper preset (the games of the table the
preset is compared with, its seeds, the preset's budget), and prints the README's recipe table with
disk and compute estimates from results/bench/ (replay bytes per transition, end-to-end steps/s).

    python scripts/maintenance/make_recipes.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from reproduce import config as cfg
from reproduce import published
from wrappers.games import atari_games

ROOT = Path(__file__).resolve().parents[2]
# Dopamine's published baselines average 5 runs; 3 elsewhere (the usual minimum for CIs).
SEEDS = {"dqn_dopamine": 5, "c51_dopamine": 5, "rainbow_dopamine": 5, "iqn_dopamine": 5}
# Atari 100k counts agent steps of one environment; the others may step 32 at the papers' update ratio.
GPU_SETTINGS = {
    "default": "--set env.num_envs=32 --set env.backend=async --set train.overlap=true --set train.cuda_graph=true",
    "der": "--set train.cuda_graph=true",
}


def main() -> None:
    bench = ROOT / "results" / "bench"
    replay_bytes = json.loads((bench / "replay_memory.json").read_text())["bytes_per_transition"]
    # Most of a run acts at epsilon 0.1 (its floor after the first million frames), with the preset's own
    # optimizer: the fastest variant of ours in that benchmark other than the Adam one.
    e2e = json.loads((bench / "end_to_end_epsilon_0.1.json").read_text())["steps_per_second"]
    nature_rate = max(rate for name, rate in e2e.items() if name.startswith("ours_") and name != "ours_adam")
    # H200, the settings each spec's header gives: 32 envs on the async backend (exact resume), the whole
    # update as a CUDA graph; DER keeps its one environment (der_gpu.json, evaluation not counted).
    gpu_rate = json.loads((bench / "end_to_end_gpu_32envs.json").read_text())["steps_per_second"]["ours_graph_async"]
    der_gpu_rate = json.loads((bench / "der_gpu.json").read_text())["steps_per_second"]["cuda_graph"]
    # The DER rate is that of the committed Atari 100k runs (one update per step, a smaller network): their
    # median, as one of them (Kung Fu Master seed 0) ran alone on both cores rather than on one.
    der_runs = [json.loads(p.read_text()) for p in (ROOT / "results" / "atari100k").glob("*/summary.json")]
    der_rate = statistics.median(r["steps_per_second"] for r in der_runs) if der_runs else None
    out = ROOT / "scripts" / "reproduce"
    out.mkdir(exist_ok=True)
    rows = []
    for name in cfg.preset_names():
        config = cfg.resolve(name)
        table = config.paper.compare_with
        if not table:
            continue
        games = [g for g in published.load(table).scores if g in atari_games()]
        seeds = SEEDS.get(name, 3)
        spec = out / f"{name}.toml"
        spec.write_text(
            f"# {config.paper.title} ({config.paper.year}): the games of `{table}`, {seeds} seeds, the preset's budget.\n"
            f"# reproduce sweep {spec.relative_to(ROOT)} --launcher slurm --partition PART --gpus 1 --time 2880\n"
            f"#   (on a GPU, faster: {GPU_SETTINGS.get(name, GPU_SETTINGS['default'])})\n"
            f'preset = "{name}"\ngames = {json.dumps(games)}\nseeds = {list(range(seeds))}\n')
        steps = config.train.steps
        runs = len(games) * seeds
        disk_gb = (min(config.replay.capacity, steps) * replay_bytes + 200e6) / 1e9  # replay + nets, optimizer
        rate = der_rate if name == "der" else nature_rate
        hours = f"{steps / rate / 3600:,.1f}" if rate else "not measured"
        gpu_hours = f"{steps / (der_gpu_rate if name == 'der' else gpu_rate) / 3600:,.2g}"
        rows.append(f"| `{name}` | `{table}` | {len(games)} x {seeds} | {steps:,} ({steps * config.protocol.frame_skip / 1e6:g}M frames) "
                    f"| {disk_gb:.1f} GB | {hours} | {gpu_hours} | {runs} |")
    print("| recipe (`scripts/reproduce/`) | compared with | games x seeds | agent steps per run | checkpoint disk per run "
          "| hours per run, 2-core CPU | hours per run, 1 H200 | runs |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
