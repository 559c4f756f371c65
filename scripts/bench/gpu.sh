#!/usr/bin/env bash
# The speed benchmarks on a CUDA machine, in one command (run from the repository root, with the project
# and stable-baselines3 installed): end to end at the papers' ratio with the replay at 1M transitions on
# the GPU (16 environments on ale-py's vector backend for this suite), and the replay memory figures.
# Output: results/bench/end_to_end_gpu.json (the GPU named under "machine").
set -euo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv
python scripts/bench/end_to_end.py --device cuda --capacity 1000000 --num-envs 16 --repeats 3 --out end_to_end_gpu
