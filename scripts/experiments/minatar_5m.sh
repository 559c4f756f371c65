#!/usr/bin/env bash
# DQN on MinAtar to the paper's 5M frames over 3 seeds, each run started, or continued from its newest
# checkpoint: a 5M-frame run takes about 10 CPU-hours here, so the script is meant to be run again after
# each interruption (a stopped machine, a session's end), and picks up where the checkpoints left off.
#   scripts/experiments/minatar_5m.sh [RUNS]        (default runs/minatar5m; waits for the runs)
# Environment: SEEDS (default "0 1 2"), GAME (default minatar_breakout), NICE (default 10).
# Then: python scripts/experiments/minatar_curve.py RUNS/minatar_dqn-GAME-s?/ --out results/minatar
set -euo pipefail
RUNS=${1:-runs/minatar5m}
SEEDS=${SEEDS:-0 1 2}
GAME=${GAME:-minatar_breakout}
mkdir -p "$RUNS"
for seed in $SEEDS; do
    dir=$RUNS/minatar_dqn-$GAME-s$seed
    if compgen -G "$dir/checkpoints/ckpt-*.pt" > /dev/null; then
        # Eager, as the preset now runs: runs started before it chose eager were compiled, slower here.
        cmd=(reproduce resume "$dir" --compile false)
    else
        # Stopped before its first checkpoint: nothing to continue from, kept aside rather than deleted.
        [ -e "$dir" ] && mv "$dir" "$dir.incomplete-$(date +%Y%m%d-%H%M%S)"
        cmd=(reproduce run minatar_dqn --game "$GAME" --seed "$seed" --set log.checkpoint_period_steps=25000
             --run-dir "$dir")
    fi
    echo "seed $seed: ${cmd[*]}"
    # One torch thread per run: three runs share the cores instead of contending for them.
    OMP_NUM_THREADS=1 nice -n "${NICE:-10}" "${cmd[@]}" --no-progress --wandb disabled >> "$dir.log" 2>&1 &
done
wait
