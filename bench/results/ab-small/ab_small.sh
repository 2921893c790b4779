#!/bin/bash
# usage: ab_small.sh JOBS -- plan (cold, again) and status peak RSS via /usr/bin/time, old and new, interleaved
jobs=$1
for side in old new; do
  W=/tmp/abs_${side}_$jobs; rm -rf $W; mkdir -p $W
  if [ $side = old ]; then R=/work/wt/old; else R=/work/main; fi
  (cd $R && PYTHONPATH=$R XDG_CACHE_HOME=$W/c XDG_STATE_HOME=$W/s /work/main/.venv/bin/python -c "
from pathlib import Path; from bench import workload; from bench.scale import build_state
load = workload.library(Path('$W'), $jobs)
build_state(load.manifest)" >/dev/null 2>&1)
done
for rep in 1 2 3; do for side in old new; do
  W=/tmp/abs_${side}_$jobs; if [ $side = old ]; then R=/work/wt/old; else R=/work/main; fi
  cd $W
  rm -rf $W/c2
  for cmd in "plan-cold plan" "plan-again plan" "status status"; do set -- $cmd
    [ $1 = plan-cold ] && rm -rf $W/c2
    PYTHONPATH=$R XDG_CACHE_HOME=$W/c2 XDG_STATE_HOME=$W/s /usr/bin/time -f "%M %e" /work/main/.venv/bin/python -m runner $2 manifest.yaml >/dev/null 2>$W/err
    echo "$jobs $side $1 $(tail -1 $W/err)"
  done
done; done
