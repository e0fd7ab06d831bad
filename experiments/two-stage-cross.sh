# Run from the repository root: bash experiments/two-stage-cross.sh; outputs go to runs/ (not committed).
# The two-stage model at Table 2's budget (6 x 25 x 32 = 4,800 images for stage 1, and as many for
# stage 2: 6 x 50 x 16), trained on one instrument and tested on the other, then Table 4's incremental
# retrain (3 + 3 epochs, replay 0.5) on the new instrument. What is left to the data the job chooses
# (training_job.job.resolve_format_choices): for the drishti-gs1 run (whole photos) stage 2's field of view and
# wide crop jitter with 3 second looks; for the rim-one-dl run (disc-filled photos) stage 2's field of view,
# stage 1's extended edges and its own two looks on the training views' width; none of them for the incremental
# run (rim-one-dl + drishti-gs1 replay: mixed formats). T=DIR names the output folder (default runs/cross).
# docs/RESULTS.md, "Two-stage across instruments".
export TF_CPP_MIN_LOG_LEVEL=2
D=../shared/data/drishti-gs1; R=../shared/data/rim-one-dl; T=${T:-runs/cross}
BUDGET="--pipeline two-stage --depth 6 --width 16 --ir 1.4 --epochs 6 --steps-per-epoch 25 --batch-size 32 --lr 0.002 --schedule cosine --seed 0 --segment-epochs 6 --segment-steps-per-epoch 50"
mkdir -p runs/logs
run() { name=$1; shift; echo "== $name: python -m training_job $*"; /usr/bin/time -f "$name wall %e s" .venv/bin/python -m training_job "$@" > runs/logs/$name.log 2>&1; tail -1 runs/logs/$name.log; }
run two-drishti --data $D --eval-data $R --out $T/drishti $BUDGET --run-id two-drishti
run two-rim     --data $R --eval-data $D --out $T/rim $BUDGET --run-id two-rim
rm -rf $T/incr-replay; cp -r $T/drishti $T/incr-replay
run two-incr-replay --mode incremental --base-version 1 --data $R --eval-data $D --out $T/incr-replay --replay-fraction 0.5 \
    --epochs 3 --steps-per-epoch 25 --batch-size 32 --segment-epochs 3 --segment-steps-per-epoch 50 --force --run-id two-incr
echo done
