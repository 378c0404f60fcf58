#!/usr/bin/env bash
# Runs a config's (game, variant) sub-runs side by side, one process each (in WORKDIR/parts/<game>_<variant>,
# each its own resumable run of one game and one variant), spread round-robin over GPUS and sharing each
# GPU's memory; once every sub-run has its eval.json, gathers them into WORKDIR/all and runs the config there
# on all the games and variants, which reads each finished sub-run back and writes the claims, plots and
# results.json. Every part passes `--config.key_games` = all the games, so each game gets the same random
# keys as in one process running `--config.games=<all the games>`: the same science in less wall-clock.
# `main` runs the sub-runs one after another in one process. Rerun the same command to resume.
#   GAMES='Breakout Boxing MsPacman' VARIANTS='V0 V2 V3' [GPUS='0 1 2'] \
#     bash rl_softmoe/tools/parallel_subruns.sh CONFIG WORKDIR [FLAGS...]
# GAMES are the config's game names (e.g. 'Breakout-MinAtar' on MinAtar), VARIANTS ids V0..V4; GPUS defaults
# to '0'. XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.9) is split between the processes of a GPU.
set -u
config=$1 workdir=$2; shift 2
read -r -a games <<< "${GAMES:?set GAMES, e.g. GAMES='Breakout Boxing MsPacman'}"
read -r -a variants <<< "${VARIANTS:?set VARIANTS, e.g. VARIANTS='V0 V2 V3'}"
read -r -a gpus <<< "${GPUS:-0}"
tuple() { printf "("; printf "'%s'," "$@"; printf ")"; }
all_games=$(tuple "${games[@]}")
all_variants=$(tuple "${variants[@]}")
n=$(( ${#games[@]} * ${#variants[@]} ))
per_gpu=$(( (n + ${#gpus[@]} - 1) / ${#gpus[@]} ))
fraction=$(python3 -c "print(round(${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9} / $per_gpu, 3))")
export PYTHONUNBUFFERED=1
trap 'kill $(jobs -p) 2> /dev/null' TERM INT
mkdir -p "$workdir/parts" "$workdir/all"
i=0
for g in "${games[@]}"; do
  for v in "${variants[@]}"; do
    part="$workdir/parts/${g}_$v"
    gpu=${gpus[$(( i % ${#gpus[@]} ))]}
    i=$(( i + 1 ))
    CUDA_VISIBLE_DEVICES=$gpu XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction python3 -m rl_softmoe.main \
      --config="$config" "--config.games=('$g',)" "--config.key_games=$all_games" "--config.variants=('$v',)" \
      "$@" --workdir="$part" >> "$part.log" 2>&1 &
  done
done
wait
for g in "${games[@]}"; do
  for v in "${variants[@]}"; do
    part="$workdir/parts/${g}_$v"
    echo "$g $v: $(grep -v -E '^\s*$' "$part.log" | tail -1 | cut -c1-200)"
    [ -f "$part/$g/$v/eval.json" ] || { echo "$g $v has not finished: rerun to resume"; exit 1; }
    mkdir -p "$workdir/all/$g"
    [ -d "$workdir/all/$g/$v" ] || cp -r "$part/$g/$v" "$workdir/all/$g/"
    [ -f "$workdir/all/$g/random.json" ] || cp "$part/$g/random.json" "$workdir/all/$g/"
  done
done
python3 -m rl_softmoe.main --config="$config" "--config.games=$all_games" "--config.variants=$all_variants" "$@" \
  --workdir="$workdir/all"
