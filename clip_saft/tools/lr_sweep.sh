#!/usr/bin/env bash
# A learning-rate sweep that shares one pretraining: the first setting pretrains; as soon as its final
# pretraining checkpoint exists, that checkpoint and its pretraining metrics are copied into every other
# setting's workdir, which then starts (and resumes at the last pretraining step, so every setting
# fine-tunes the same weights). Ends with `clip_saft.select` (each method's lr chosen on id_val).
# Rerunning the same command resumes every setting.
#   bash clip_saft/tools/lr_sweep.sh SWEEP_DIR CONFIG 'FT_LR:SAFT_LR ...' [FLAGS...]
# e.g. bash clip_saft/tools/lr_sweep.sh runs/gpu/cs \
#        clip_saft/configs/gpu_room.py:variant=steps1k_noise30_photo5 \
#        '1e-5:1e-5 3e-5:3e-5 1e-4:1e-4 1e-4:3e-4' --config.data.shots=64
set -u
sweep=$1 config=$2 settings=$3; shift 3
export PYTHONUNBUFFERED=1
n=$(wc -w <<< "$settings")
export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c \
  "print(round(${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9} / $n, 3))")
trap 'kill $(jobs -p) 2> /dev/null' TERM INT
mkdir -p "$sweep"
dirs=()
for s in $settings; do dirs+=("$sweep/lr${s%%:*}_saft${s##*:}"); done
first=${dirs[0]}
flags=("$@")
launch_one() { local d=$1 s=$2; python3 -m clip_saft.main --config="$config" "${flags[@]}" \
  --config.finetune.lr="${s%%:*}" --config.finetune.saft_lr="${s##*:}" --workdir="$d" >> "$d.log" 2>&1; }
read -r -a list <<< "$settings"
launch_one "$first" "${list[0]}" &
pids=($!)
# The final pretraining checkpoint: <first>/pretrain/checkpoints/<pretrain.steps> (orbax renames it into
# place when done).
until python3 - "$first" <<'PY'
import json, os, sys
d = sys.argv[1]
try:
  steps = json.load(open(os.path.join(d, 'config.json')))['pretrain']['steps']
except (OSError, KeyError, ValueError):
  sys.exit(1)
sys.exit(0 if os.path.isdir(os.path.join(d, 'pretrain', 'checkpoints', str(steps))) else 1)
PY
do
  kill -0 "${pids[0]}" 2> /dev/null || { echo "first setting stopped before its pretraining ended"; exit 1; }
  sleep 5
done
sleep 5
for i in "${!list[@]}"; do
  [ "$i" = 0 ] && continue
  d=${dirs[$i]}
  if [ ! -f "$d/config.json" ]; then
    mkdir -p "$d" && cp -r "$first/pretrain" "$d/" \
      && grep '"pretrain/' "$first/metrics.jsonl" > "$d/metrics.jsonl"
  fi
  launch_one "$d" "${list[$i]}" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for d in "${dirs[@]}"; do echo "$d: $(tail -1 "$d.log" | cut -c1-200)"; done
python3 -m clip_saft.select "${dirs[@]}" --out="$sweep/selection.json"
exit $status
