#!/usr/bin/env bash
# The GPU checks and speed figures on a CUDA machine, in one command (run from the repository root with
# the project and stable-baselines3 installed). Parts, all by default, or those named in PARTS:
#   tests  tests/test_gpu.py: the GPU paths against the CPU and eager ones (-> results/bench/gpu_tests.txt);
#   e2e16  end to end at the papers' ratio with the replay at 1M transitions on the GPU, 16 environments for
#          this suite, with the learner, acting and sampling figures (-> results/bench/end_to_end_gpu.json);
#   e2e32  the same at 32 environments, graphed update on each vector backend (-> end_to_end_gpu_32envs.json);
#   der    data-efficient Rainbow (one update per agent step) eager and graphed (-> der_gpu.json);
#   per    prioritized replay with its tree and frames on the GPU (-> results/bench/per_gpu.json).
# Each part has its own time limit and writes as it goes, so that a slow part leaves the others' figures.
# COPY_TO=<folder> copies each part's output there as soon as it ends; REPEATS sets the repeats of e2e*.
#   PARTS="tests der e2e32" COPY_TO=/tmp/out bash scripts/bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p results/bench
PARTS=${PARTS:-tests e2e16 e2e32 der per}
REPEATS=${REPEATS:-3}
copy() { [ -n "${COPY_TO:-}" ] && cp "$@" "$COPY_TO"/ 2>/dev/null; true; }
want() { [[ " $PARTS " == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee results/bench/gpu_machine.txt
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a results/bench/gpu_machine.txt
copy results/bench/gpu_machine.txt

if want tests; then
    timeout 300 python -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -40 | tee results/bench/gpu_tests.txt
    copy results/bench/gpu_tests.txt
fi

if want der; then
    rm -f results/bench/der_gpu.json
    timeout 200 python scripts/bench/preset_speed.py der --game freeway --device cuda --variants eager,cuda_graph \
        --learn-start 1600 --warm 400 --measure 2000 --repeats 2 --out der_gpu > results/bench/der_gpu.log 2>&1
    echo "der exit $?"; tail -3 results/bench/der_gpu.log
    copy results/bench/der_gpu.json
fi

if want e2e32; then
    rm -f results/bench/end_to_end_gpu_32envs.json  # written afresh (end_to_end.py merges into the file)
    timeout 420 python scripts/bench/end_to_end.py --device cuda --capacity 1000000 --num-envs 32 \
        --learn-start 2000 --warm 1000 --measure 16000 --measure-baseline 1500 --repeats "$REPEATS" \
        --variants ours_graph_ale,ours_graph_compiled_ale,ours_graph_async --skip learner,acting,sampling \
        --out end_to_end_gpu_32envs > results/bench/end_to_end_gpu_32envs.log 2>&1
    echo "end_to_end (32 envs) exit $?"; tail -3 results/bench/end_to_end_gpu_32envs.log
    copy results/bench/end_to_end_gpu_32envs.json
fi

if want e2e16; then
    timeout 900 python scripts/bench/end_to_end.py --device cuda --capacity 1000000 --num-envs 16 \
        --learn-start 2000 --warm 1000 --measure 12000 --measure-baseline 1500 --seconds 6 --repeats "$REPEATS" \
        --out end_to_end_gpu > results/bench/end_to_end_gpu.log 2>&1
    echo "end_to_end exit $?"; tail -5 results/bench/end_to_end_gpu.log
    copy results/bench/end_to_end_gpu.json
fi

if want per; then
    timeout 60 python scripts/bench/per.py --device cuda --seconds 4 --repeats 3 --out per_gpu > /dev/null 2>&1
    echo "per exit $?"
    copy results/bench/per_gpu.json
fi
