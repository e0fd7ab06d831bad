# Run from the repository root: bash experiments/<this file>; outputs go to runs/ (not committed).
# Rerun of the table runs that the export bug stopped (same commands as runs/tables.sh).
export TF_CPP_MIN_LOG_LEVEL=2
D=../shared/data/drishti-gs1; R=../shared/data/rim-one-dl; T=runs/tables
BUDGET="--epochs 6 --steps-per-epoch 25 --batch-size 32 --lr 0.002 --schedule cosine --seed 0"
ARCH="--depth 6 --width 16 --ir 1.4"
run() { name=$1; shift; echo "== $name: python -m training_job $*"; /usr/bin/time -f "$name wall %e s" .venv/bin/python -m training_job "$@" > runs/logs/$name.log 2>&1; tail -1 runs/logs/$name.log; }
cp -r $T/drishti $T/incr-noreplay; cp -r $T/drishti $T/incr-replay
run incr-noreplay --mode incremental --base-version 1 --data $R --eval-data $D --out $T/incr-noreplay --epochs 3 --steps-per-epoch 25 --batch-size 32 --force
run incr-replay   --mode incremental --base-version 1 --data $R --eval-data $D --out $T/incr-replay --replay-fraction 0.5 --epochs 3 --steps-per-epoch 25 --batch-size 32 --force
run rim      --data $R --eval-data $D --out $T/rim $ARCH $BUDGET
run multi    --data $D,$R --out $T/multi $ARCH $BUDGET
run arch-5-16-1.5 --data $D,$R --out $T/arch-5-16-1.5 --depth 5 --width 16 --ir 1.5 $BUDGET
run arch-6-40-1.1 --data $D,$R --out $T/arch-6-40-1.1 --depth 6 --width 40 --ir 1.1 $BUDGET
echo done
