#!/usr/bin/env bash
# The CartPole check tier over 5 seeds and every variant of the DQN family, on the one training loop,
# then one report comparing them all (IQM and CIs, curves):
#   scripts/experiments/cartpole_variants.sh [OUT]     (default results/cartpole)
# Environment: SEEDS (default 0,1,2,3,4), ONLY (space-separated variant names, default all),
# PARALLEL (local jobs at once, default the number of cores), SUFFIX (appended to each variant's sweep folder:
# more seeds of a variant already run go to a folder of their own, and the report merges runs by label).
# Each variant is the cartpole_dqn base (Double DQN, 3-step returns) with one component switched, or
# plain 1-step DQN; cartpole_rainbow has them all. About 1.5 CPU-hours on a 2-core machine.
# Each run's config.toml, summary.json and eval.csv are copied to OUT/runs/<variant>/<run>/, and the
# report is made from those copies (`reproduce compare OUT/runs/*/ --out OUT` makes it again).
set -euo pipefail
OUT=${1:-results/cartpole}
SEEDS=${SEEDS:-0,1,2,3,4}
PARALLEL=${PARALLEL:-$(nproc)}
SWEEPS=sweeps/cartpole-variants
SUFFIX=${SUFFIX:-}
declare -A VARIANTS=(
  [dqn]="--set agent.double=false --set agent.n_step=1"
  [double_dqn]="--set agent.n_step=1"
  [nstep3_double]=""
  [dueling]="--set agent.dueling=true"
  [prioritized]="--set agent.prioritized=true --set agent.priority_alpha=0.5"
  [noisy]="--set agent.noisy=true --set agent.noisy_sigma0=0.1 --set agent.epsilon_start=0 --set agent.epsilon_end=0 --set agent.epsilon_decay_steps=0"
  [c51]="--set agent.loss=auto --set agent.distributional=c51 --set agent.v_min=0 --set agent.v_max=100"
  [qr_dqn]="--set agent.loss=auto --set agent.distributional=qr --set agent.num_quantiles=50"
  [iqn]="--set agent.loss=auto --set agent.distributional=iqn"
  [munchausen]="--set agent.munchausen=true --set agent.double=false --set agent.n_step=1"
)
VARIANTS[rainbow]=""
for name in ${ONLY:-${!VARIANTS[@]}}; do
  [ -f "$SWEEPS/$name$SUFFIX/sweep.json" ] && continue
  if [ "$name" = rainbow ]; then
    reproduce sweep cartpole_rainbow --games cartpole --seeds "$SEEDS" --launcher local --wait \
      --parallel "$PARALLEL" --sweep-dir "$SWEEPS/rainbow$SUFFIX" --set log.label=rainbow
    continue
  fi
  # shellcheck disable=SC2086
  reproduce sweep cartpole_dqn --games cartpole --seeds "$SEEDS" --launcher local --wait \
    --parallel "$PARALLEL" --sweep-dir "$SWEEPS/$name$SUFFIX" --set log.label="$name" ${VARIANTS[$name]}
done
# The files a report reads (config, summary, evaluation games) of every run, kept beside the report so that
# it can be made again from the repository; the sweeps themselves (checkpoints, logs) stay out of it.
for run in "$SWEEPS"/*/runs/*/; do
  [ -f "$run/summary.json" ] || continue
  variant=$(basename "$(dirname "$(dirname "$run")")")
  mkdir -p "$OUT/runs/$variant/$(basename "$run")"
  cp "$run"/config.toml "$run"/summary.json "$run"/eval.csv "$OUT/runs/$variant/$(basename "$run")/"
done
reproduce compare "$OUT"/runs/*/ --out "$OUT"
