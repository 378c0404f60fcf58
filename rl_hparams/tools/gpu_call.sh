#!/usr/bin/env bash
# One lent-GPU call of several GPUs: the rl_hparams `gpu` sweep on every GPU but the last (resumable: rerun
# with the returned workdir carried), and on the last GPU the attention GPU tests and missing benchmark row,
# then the rl_hparams throughput benchmark. Outputs are packed into $OUT.
# Usage: bash rl_hparams/tools/gpu_call.sh SWEEP_BUDGET_S [extra]
set -u
export PYTHONUNBUFFERED=1
budget=${1:-400}
n=$(nvidia-smi -L | wc -l); last=$((n - 1)); sweep_gpus=$(seq -s, 0 $((n - 2)))
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1; echo "gpus: $n"
W=runs/gpu/rl_hparams/${WORKDIR_NAME:-thc_minatar}
mkdir -p "$W" "$OUT"
(
  export CUDA_VISIBLE_DEVICES=$last
  if [ -z "${SKIP_ATTENTION:-}" ]; then
    timeout 240 python -m pytest -q -m gpu attention -p no:cacheprovider > "$OUT/attention_gpu_tests.log" 2>&1
    tail -2 "$OUT/attention_gpu_tests.log"
    timeout 150 python -m attention.bench --shapes=2,16,8192,128 --impls=sb_pallas,cudnn,softmax_pallas \
      --out="$OUT/attention_bench_t8192_d128.json" > "$OUT/attention_bench.log" 2>&1
    grep -v '^[IW][0-9]' "$OUT/attention_bench.log" | tail -8
  fi
  [ -n "${SKIP_BENCH:-}" ] && exit 0
  timeout 300 python -m rl_hparams.bench --config=rl_hparams/configs/default.py --steps=2000 --repeats=3 \
    --conv_impls="${BENCH_CONV_IMPLS:-matmul,xla}" --out="$OUT/rl_hparams_bench.json" > "$OUT/rl_hparams_bench.log" 2>&1
  grep -E '^(matmul|xla) ' "$OUT/rl_hparams_bench.log" | cut -c1-400
) &
side=$!
start=$(date +%s)
CUDA_VISIBLE_DEVICES=$sweep_gpus timeout ${SWEEP_TIMEOUT:-545} python -m rl_hparams.main \
  --config=rl_hparams/configs/default.py:budget=$budget${CONFIG_ARGS:-} --workdir="$W" > "$OUT/sweep.log" 2>&1
echo "sweep: exit $? after $(( $(date +%s) - start )) s"
grep -E 'done in|stopping|not starting|Traceback|Error' "$OUT/sweep.log" | tail -20
wait $side
tar czf "$OUT/thc_workdir.tgz" --exclude=checkpoints --exclude=tensorboard -C runs/gpu/rl_hparams "$(basename "$W")"
ls -la "$OUT"
