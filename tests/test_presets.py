"""Every paper preset runs through the one training loop on Pong and writes a complete run folder."""

import json

import pytest

from reproduce import config as cfg
from reproduce.loop import train

ATARI_PRESETS = [name for name in cfg.preset_names() if cfg.resolve(name).env.protocol != "classic"]


def test_every_preset_has_its_citation_and_table():
    for name in cfg.preset_names():
        config = cfg.resolve(name)
        assert config.paper.title and config.paper.table, name
        if name in ATARI_PRESETS:
            assert config.paper.year >= 2015 and config.paper.arxiv, name
            assert config.env.protocol in ("nature", "machado"), name


@pytest.mark.slow
@pytest.mark.parametrize("preset", ATARI_PRESETS)
def test_preset_runs_2000_steps_on_pong(preset, tmp_path):
    config = cfg.resolve(preset, {
        "env.game": "pong", "train.steps": 2000, "log.wandb": "disabled",
        "agent.learning_starts_steps": 1800, "replay.capacity": 10_000,
        "eval.episodes": 1, "eval.max_episode_frames": 400, "eval.period_steps": 0,
    })
    summary = train(config, tmp_path / preset, progress=False)
    run = tmp_path / preset
    for name in ("config.toml", "metrics.jsonl", "episodes.csv", "eval.csv", "summary.json"):
        assert (run / name).stat().st_size > 0, name
    assert list((run / "checkpoints").glob("ckpt-*.pt"))
    assert summary["steps"] == 2000 and summary["preset"] == preset
    names = {json.loads(line)["name"] for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert "loss" in names  # it learned
