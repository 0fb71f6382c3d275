#!/bin/bash
# usage: runlogs/run.sh NAME overrides...   (one training at a time, niced, 1 thread)
name=$1; shift
cd /work/wt/latent19
start=$(date +%s)
OMP_NUM_THREADS=1 nice -n 19 /work/main/.venv/bin/python train.py "$@" hydra.run.dir=logs/train/runs/$name > runlogs/$name.log 2>&1
rc=$?
end=$(date +%s)
echo "$name rc=$rc wall=$((end-start))s args: $*" >> runlogs/done.txt
