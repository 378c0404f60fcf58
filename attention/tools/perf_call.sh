#!/usr/bin/env bash
# One device call for attention/PERF.md: the `gpu`-marked kernel tests, then the kernel benchmark with cuDNN
# rerun in the same process. Each part has its own time limit, so a hung or failing kernel still leaves the
# other results. Run from the repository root on the GPU machine:
#   bash attention/tools/perf_call.sh OUTDIR 'sb_mosaic;sb_pallas;cudnn' ['B,H,T,D;...'] [TESTS|none] [BENCH FLAGS]
# Writes OUTDIR/tests.log and OUTDIR/bench.json; prints the benchmark tables.
set -u
export PYTHONUNBUFFERED=1
out=$1
impls=$2
shapes=${3:-'4,16,4096,64;4,16,4096,128;2,16,8192,64;2,16,8192,128'}
tests=${4:-attention/kernel_mgpu_test.py}
extra=${5:-}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
if [ "$tests" != none ]; then
  timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu $tests > "$out/tests.log" 2>&1
  echo "tests exit $?"
  grep -E 'passed|failed|Error|error:|assert' "$out/tests.log" | tail -15 | cut -c1-400
fi
start=$(date +%s)
timeout 420 python3 -m attention.bench --shapes="$shapes" --impls="$impls" --out="$out/bench.json" $extra \
  > "$out/bench.log" 2>&1
echo "bench exit $? after $(( $(date +%s) - start )) s"
grep -E '^\|' "$out/bench.log" | tail -40
grep -E 'Error|error:' "$out/bench.log" | tail -5 | cut -c1-400
