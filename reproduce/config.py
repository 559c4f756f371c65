"""Run configuration: typed sections, paper presets as TOML, `--set section.key=value` overrides, and
validation of everything before anything starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import tomli_w

from agents.config import AgentConfig
from agents.replay.storage import CODECS
from wrappers.games import UnknownGameError, bitflip_bits, canonical_game, is_atari
from wrappers.protocols import PROTOCOLS, Protocol, get_protocol
from wrappers.vector import BACKENDS


COMPILE_FROM_STEPS = 100_000


class ConfigError(ValueError):
    """A configuration that cannot run; the message names each bad value and what is allowed."""


@dataclass
class PaperConfig:
    title: str = ""
    authors: str = ""
    year: int = 0
    arxiv: str = ""  # arXiv id, or a DOI where the paper has none
    table: str = ""  # where the hyperparameters come from
    compare_with: str = ""  # results/published table to set our scores beside
    deviations: list[str] = field(default_factory=list)  # where this preset knowingly differs from the paper


@dataclass
class EnvConfig:
    game: str = "pong"
    protocol: str = "nature"  # nature | machado | classic (see `reproduce show`)
    num_envs: int = 1  # parallel environments stepped together (agent steps count all of them)
    backend: str = "sync"  # sync: in-process; async: one process per environment


@dataclass
class ReplayConfig:
    capacity: int = 1_000_000  # transitions, all environments together
    device: str = "auto"  # where frames live: auto (the run's device) | cpu | cuda
    compress: str = "none"  # frames compressed one by one on the host: none | lz4 | zstd (replay.device cpu)


@dataclass
class TrainConfig:
    steps: int = 50_000_000  # agent steps, all environments together (frames = steps * frame_skip)
    seed: int = 0
    device: str = "auto"  # auto (cuda when present) | cpu | cuda
    deterministic: bool = False  # torch deterministic algorithms (exact resume and bitwise repeats)
    # torch.compile the learner: true | false | auto (true from 100,000 agent steps) | reduce-overhead
    # (compiled, its forward and backward replayed as CUDA graphs on a GPU)
    compile: str = "auto"
    cuda_graph: bool = False  # capture the whole update (sampling, loss, backward, optimizer) as one CUDA graph
    bf16: bool = False  # bfloat16 autocast for the learner's forward pass (a GPU, or a CPU with AMX or AVX-512 bf16)
    overlap: bool = False  # step the environments in a thread while the learner updates (same result)
    # Denormal floats read and written as zero on the CPU (FTZ and DAZ), as TensorFlow's and XLA's CPU
    # runtimes do (so DQN Zoo and Dopamine). Without it the optimizer state of a dead unit decays through
    # the denormal range, where the CPU takes a slow path for each operation.
    flush_denormal: bool = True


@dataclass
class EvalConfig:
    period_steps: int = 250_000  # agent steps between evaluations; 0: only at the end
    episodes: int = 30  # whole games per evaluation; 0: no evaluation
    epsilon: float | None = None  # None: the protocol's evaluation epsilon
    max_episode_frames: int | None = None  # None: the protocol's evaluation cap
    num_envs: int = 8  # evaluation environments stepped together
    background: bool = False  # evaluate in a thread while training goes on (results logged at the next evaluation)


@dataclass
class LogConfig:
    label: str = ""  # the variant's name in reports (default: the preset)
    wandb: str = "auto"  # auto (online with credentials, else offline) | online | offline | disabled
    wandb_project: str = "atari-reproduce"
    period_steps: int = 10_000  # agent steps between metric lines
    checkpoint_period_steps: int = 1_000_000  # agent steps between checkpoints
    keep_checkpoints: int = 2


@dataclass
class Config:
    preset: str = ""
    paper: PaperConfig = field(default_factory=PaperConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    # [protocol]: fields of the protocol card that this preset changes (for example Dopamine's minimal
    # action set under the machado protocol); the resolved card is written into every run's config.
    protocol_overrides: dict = field(default_factory=dict)

    @property
    def protocol(self) -> Protocol:
        return dataclasses.replace(get_protocol(self.env.protocol), **self.protocol_overrides)

    @property
    def frames(self) -> int:
        return self.train.steps * max(self.protocol.frame_skip, 1)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["protocol_overrides"]
        d["protocol"] = self.protocol.to_dict()
        return _drop_none(d)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name not in ("preset", "protocol_overrides")}
PROTOCOL_FIELDS = {f.name: f for f in dataclasses.fields(Protocol) if f.name not in ("name", "citation")}


def _drop_none(d):
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


# ---------------------------------------------------------------------------------- presets
def preset_dir() -> Path:
    return Path(str(resources.files("reproduce") / "presets"))


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.toml"))


def load_preset(name: str) -> dict:
    path = preset_dir() / f"{name}.toml"
    if not path.exists():
        close = difflib.get_close_matches(name, preset_names(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}.{hint} Presets: {', '.join(preset_names())}")
    with open(path, "rb") as f:
        return tomllib.load(f)


def from_dict(data: dict, preset: str = "") -> Config:
    """A Config from nested dicts (a preset, or a run's config.toml); unknown keys are errors."""
    config = Config(preset=data.get("preset", preset))
    for section, values in data.items():
        if section == "preset":
            continue
        if section == "protocol":
            set_protocol_fields(config, values)
            continue
        if section not in SECTIONS:
            raise ConfigError(_unknown(section, list(SECTIONS), "section"))
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table of keys, got {values!r}")
        for key, value in values.items():
            set_value(config, f"{section}.{key}", value)
    return config


def set_protocol_fields(config: Config, values: dict) -> None:
    """Applies a [protocol] table; keys the card already has at that value (a resolved config.toml) are
    kept as they are."""
    for key, value in values.items():
        if key in ("name", "citation"):
            continue
        set_value(config, f"protocol.{key}", value)


def set_value(config: Config, dotted: str, value) -> None:
    """Sets section.key to value, converted to the field's type; errors name the key and what is allowed."""
    section, _, key = dotted.partition(".")
    if section == "protocol":
        if key not in PROTOCOL_FIELDS:
            raise ConfigError(_unknown(dotted, [f"protocol.{k}" for k in PROTOCOL_FIELDS], "protocol field"))
        config.protocol_overrides[key] = _convert(value, PROTOCOL_FIELDS[key].type, dotted)
        return
    if section not in SECTIONS or not key:
        raise ConfigError(_unknown(dotted, [f"{s}.<key>" for s in SECTIONS], "config key"))
    target = getattr(config, section)
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        raise ConfigError(_unknown(f"{section}.{key}", [f"{section}.{k}" for k in fields], "config key"))
    hint = typing.get_type_hints(type(target))[key]
    setattr(target, key, _convert(value, hint, dotted))


def parse_override(text: str) -> tuple[str, object]:
    """'agent.n_step=3' -> ('agent.n_step', 3). Values are read as TOML (true, 3, 1e-4, "x", [1, 2]);
    anything else is a string."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    key, _, raw = text.partition("=")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def _convert(value, hint, key: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or value == "none":
            return None
        return _convert(value, options[0], key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # `--set train.compile=true` reads as TOML's true
            return str(value).lower()
    elif origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, list):
            return [_convert(v, item, key) for v in value]
    if isinstance(hint, str):  # a dataclass field annotation left as text
        return _convert(value, {"int": int, "float": float, "bool": bool, "str": str}[hint], key)
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key} = {value!r} is not a valid {name}")


def _unknown(name: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Known: {', '.join(known)}"


def resolve(preset: str, overrides: dict | None = None) -> Config:
    """The preset with overrides applied and protocol defaults filled in; validated."""
    config = from_dict(load_preset(preset), preset)
    for key, value in (overrides or {}).items():
        set_value(config, key, value)
    return finalize(config)


def finalize(config: Config) -> Config:
    errors = validate(config)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    config.env.game = canonical_game(config.env.game)
    if config.train.compile == "auto":
        # Compiling costs about a minute; it pays back (1.8x faster updates on a CPU) on long runs.
        config.train.compile = "true" if config.train.steps >= COMPILE_FROM_STEPS else "false"
    if config.eval.epsilon is None:
        config.eval.epsilon = config.protocol.eval_epsilon
    if config.eval.max_episode_frames is None:
        config.eval.max_episode_frames = config.protocol.eval_max_episode_frames
    return config


def validate(config: Config) -> list[str]:
    errors = []

    def need(ok: bool, message: str):
        if not ok:
            errors.append(message)

    if config.env.protocol not in PROTOCOLS:
        errors.append(f"env.protocol = {config.env.protocol!r}; known protocols: {', '.join(PROTOCOLS)}")
    try:
        atari = is_atari(config.env.game)
        if config.env.protocol in PROTOCOLS:
            classic = config.env.protocol == "classic"
            need(atari != classic, f"env.game = {config.env.game!r} cannot run under env.protocol = "
                 f"{config.env.protocol!r} (Atari games: nature or machado; classic control, MinAtar and bitflip<n>: classic)")
        need(config.agent.hindsight == "none" or bitflip_bits(config.env.game) is not None,
             f"agent.hindsight = {config.agent.hindsight!r} needs a goal-conditioned task (bitflip<n>), "
             f"not env.game = {config.env.game!r}")
    except UnknownGameError as e:
        errors.append(f"env.game: {e}")
    need(config.env.num_envs >= 1, f"env.num_envs = {config.env.num_envs}; must be >= 1")
    need(config.env.backend in BACKENDS, f"env.backend = {config.env.backend!r}; allowed: {', '.join(BACKENDS)}")
    errors += config.agent.validate()
    need(config.replay.capacity >= 1, f"replay.capacity = {config.replay.capacity}; must be >= 1")
    need(config.replay.device in ("auto", "cpu", "cuda"), f"replay.device = {config.replay.device!r}; allowed: auto, cpu, cuda")
    need(config.replay.compress in CODECS, f"replay.compress = {config.replay.compress!r}; allowed: {', '.join(CODECS)}")
    need(config.replay.compress == "none" or config.replay.device == "cpu",
         f"replay.compress = {config.replay.compress!r} keeps frames on the host: set replay.device = 'cpu' "
         f"(got {config.replay.device!r})")
    need(config.replay.compress == "none" or config.agent.hindsight == "none",
         "replay.compress applies to frame replays, not to agent.hindsight's goal vectors")
    need(config.train.steps >= 1, f"train.steps = {config.train.steps}; must be >= 1 (agent steps)")
    need(config.train.seed >= 0, f"train.seed = {config.train.seed}; must be >= 0")
    need(config.train.device in ("auto", "cpu", "cuda"), f"train.device = {config.train.device!r}; allowed: auto, cpu, cuda")
    need(config.train.compile in ("auto", "true", "false", "reduce-overhead"),
         f"train.compile = {config.train.compile!r}; allowed: auto, true, false, reduce-overhead")
    if config.train.cuda_graph:
        need(config.train.device != "cpu" and config.replay.device != "cpu",
             "train.cuda_graph needs the learner and the replay on a GPU (train.device and replay.device auto or cuda)")
        need(config.replay.compress == "none", f"train.cuda_graph needs replay.compress = none (the frames on the GPU); "
             f"got {config.replay.compress!r}")
        need(config.agent.hindsight == "none", "train.cuda_graph cannot capture hindsight relabelling (host work at "
             "each sample); set agent.hindsight = none or train.cuda_graph = false")
        need(config.train.compile != "reduce-overhead", "train.cuda_graph already captures the whole update; use "
             "train.compile = true or false with it, not reduce-overhead")
    need(config.eval.period_steps >= 0, f"eval.period_steps = {config.eval.period_steps}; must be >= 0 (0: only at the end)")
    need(config.eval.episodes >= 0, f"eval.episodes = {config.eval.episodes}; must be >= 0")
    need(config.eval.num_envs >= 1, f"eval.num_envs = {config.eval.num_envs}; must be >= 1")
    if config.eval.epsilon is not None:
        need(0.0 <= config.eval.epsilon <= 1.0, f"eval.epsilon = {config.eval.epsilon}; must be in [0, 1]")
    if config.eval.max_episode_frames is not None:
        need(config.eval.max_episode_frames >= 0, f"eval.max_episode_frames = {config.eval.max_episode_frames}; must be >= 0")
    need(config.log.wandb in ("auto", "online", "offline", "disabled"),
         f"log.wandb = {config.log.wandb!r}; allowed: auto, online, offline, disabled")
    need(config.log.period_steps >= 1, f"log.period_steps = {config.log.period_steps}; must be >= 1")
    need(config.log.checkpoint_period_steps >= 0, f"log.checkpoint_period_steps = {config.log.checkpoint_period_steps}; must be >= 0 (0: only at the end)")
    need(config.log.keep_checkpoints >= 1, f"log.keep_checkpoints = {config.log.keep_checkpoints}; must be >= 1")
    if config.env.protocol in PROTOCOLS:
        card = config.protocol
        need(0.0 <= card.repeat_action_probability <= 1.0,
             f"protocol.repeat_action_probability = {card.repeat_action_probability}; must be in [0, 1]")
        need(0.0 <= card.eval_epsilon <= 1.0, f"protocol.eval_epsilon = {card.eval_epsilon}; must be in [0, 1]")
        for key in ("noop_max", "max_episode_frames", "eval_max_episode_frames"):
            need(getattr(card, key) >= 0, f"protocol.{key} = {getattr(card, key)}; must be >= 0")
        for key in ("frame_skip", "frame_stack"):
            need(getattr(card, key) >= 1, f"protocol.{key} = {getattr(card, key)}; must be >= 1")
    if config.env.protocol in PROTOCOLS and config.env.num_envs >= 1 and config.replay.capacity >= 1:
        stack = config.protocol.frame_stack
        minimum = (stack + config.agent.n_step + 1) * config.env.num_envs
        need(config.replay.capacity >= minimum,
             f"replay.capacity = {config.replay.capacity}; must be >= (stack + n_step + 1) * num_envs = {minimum}")
    return errors


def load_run_config(path: Path) -> Config:
    with open(path, "rb") as f:
        return finalize(from_dict(tomllib.load(f)))
