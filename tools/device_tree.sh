#!/usr/bin/env bash
# Shrinks the working tree that a device call carries, and puts it back. The tracked tree is about 37 MB, of
# which the projects' `results/` folders are 34 MB that no device run reads; with them out of the tree a call
# can carry every wheel of `gpu-wheels --default` (37 MB) and more within its 64 MiB. The device copies the
# working tree as it is on disk (2026-11-29), so moving the folders away for the calls is enough.
#   bash tools/device_tree.sh out [KEEP ...]   # move */results to $HOLD (default /work/results_hold),
#                                              # except the projects named in KEEP (e.g. rl_plasticity)
#   bash tools/device_tree.sh in               # move them back (run it right after the last call)
#   bash tools/device_tree.sh status           # what is out
# Never commit while the folders are out: `git status` shows them as deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
hold=${HOLD:-/work/results_hold}
action=${1:-status}; shift || true
case $action in
  out)
    if [ -d "$hold" ] && [ -n "$(ls -A "$hold")" ]; then echo "$hold is not empty: run 'in' first" >&2; exit 1; fi
    mkdir -p "$hold"
    for d in */results; do
      p=${d%/results}
      [[ " $* " == *" $p "* ]] && continue
      mkdir -p "$hold/$p" && mv "$d" "$hold/$p/"
    done
    echo "moved out: $(ls "$hold" | tr '\n' ' ')"
    size=$(git ls-files -z | xargs -0 du -cb 2> /dev/null | tail -1 | cut -f1 || true)
    echo "tracked files left on disk: $(( ${size:-0} / 1000000 )) MB"
    ;;
  in)
    [ -d "$hold" ] || { echo "nothing to put back ($hold does not exist)"; exit 0; }
    for p in "$hold"/*; do
      [ -d "$p/results" ] || continue
      name=$(basename "$p")
      if [ -e "$name/results" ]; then echo "$name/results exists: left $p in place" >&2; continue; fi
      mv "$p/results" "$name/" && rmdir "$p"
    done
    rmdir "$hold" 2> /dev/null || echo "left in $hold: $(ls "$hold")" >&2
    echo "tracked files still deleted: $(git status --short | grep -c '^ D' || true)"
    ;;
  status)
    if [ -d "$hold" ]; then echo "out: $(ls "$hold" | tr '\n' ' ')"; else echo "nothing out"; fi
    ;;
  *) echo "usage: bash tools/device_tree.sh out [KEEP ...] | in | status" >&2; exit 2 ;;
esac
