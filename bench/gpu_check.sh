#!/usr/bin/env bash
# Every full-size dry run of a2i on a lent GPU (random weights, no download, no dataset), in under 8 minutes
# (on an H200: 73 + 35 + 17 s for steps 1, 3 and the pipeline; torch.compile of the full U-Net takes 2-3 minutes):
#   1. SounDiff fine-tuning at 768 px (96x96 latents), batch 4: the paper's way (fp32, encoders every step) vs ours
#      (cached, bf16), and each lean option (gradient checkpointing, Adafactor, LoRA): samples/s and peak GiB;
#      then sampling from the full-size dry-run pipeline and a save/load round trip of its U-Net;
#   2. ours at batch 16, plain and channels-last + torch.compile;
#   3. the paper-size pixel transformer (bench_sampling.py --preset full);
#   4. imagebind_huge(pretrained=False) audio embeddings, fp32 vs bf16 (bench_embed.py --preset full).
# Usage (the GPU machine; diffusers, imagebind & co. from wheels unpacked in /tmp/site):
#   PYTHONPATH=/tmp/site:$PWD OUT=/some/folder bash bench/gpu_check.sh
#   bash bench/gpu_check.sh --smoke        # here, on the CPU: tiny sizes, checks that every step runs
# Each step's output goes to $OUT/<step>.log and is printed; $OUT/summary.txt lists exit codes and times.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/build/gpu_check}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
SMOKE=""
[ "${1:-}" = "--smoke" ] && SMOKE="--smoke"
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, tee the log, record exit code and seconds
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    grep -v -e "Warning" -e "warn(" "$OUT/$name.log" | tail -n 25
    echo "=== $name: exit $rc, $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

$PY - <<'PY' | tee "$OUT/summary.txt"
import platform, torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"gpu_check: python {platform.python_version()}, torch {torch.__version__}, {gpu}")
PY
if [ -n "$SMOKE" ]; then
    step train_b4 300 $PY bench/bench_train.py --preset full --smoke
    step pipeline 120 $PY bench/bench_train.py --preset full --smoke --options none --pipeline
    step train_b16 200 $PY bench/bench_train.py --preset full --smoke --batch 8 --options ours  # compile: GPU only
    step pixel_transformer 200 $PY bench/bench_sampling.py --preset demo --images 2 --train-steps 1
else
    step train_b4 210 $PY bench/bench_train.py --preset full --batch 4 --steps 10 --options paper,ours,ckpt,adafactor,lora
    step pipeline 120 $PY bench/bench_train.py --preset full --options none --pipeline
    step pixel_transformer 45 $PY bench/bench_sampling.py --preset full
    step imagebind_huge 45 $PY bench/bench_embed.py --preset full --recordings 64 --repeats 2
    step train_b16 280 $PY bench/bench_train.py --preset full --batch 16 --steps 8 --options ours,ours_compiled
fi
echo "results in $OUT"; cat "$OUT/summary.txt"
