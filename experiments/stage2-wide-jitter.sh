# Run from the repository root: bash experiments/stage2-wide-jitter.sh
# Across instruments the whole pipeline loses to its own stage 2 (from the expert crop) because stage 1 sizes the
# disc wrongly on the camera it never saw: the rim-one-dl locator ~1.5x too large on drishti-gs1, the drishti-gs1
# one too small on 1 in 6 RIM-ONE discs. Stage 2 trained on crops whose size error spans what a locator that far
# off produces (CropJitter.scale 0.5-2) can say where the disc really is, and the second look, repeated, cuts the
# crop again until it fits. Each single-instrument job of experiments/two-stage-cross.sh (Table 2's budget)
# provides the locator and the baseline stage 2; a stage 2 with the wide jitter is trained beside it with the
# same data, budget and field of view. Selection on the unseen instrument's TRAIN split, report on its test
# split. Outputs: runs/wide/ (not committed), one JSON line per (variant, looks, split) in runs/wide/scores.jsonl;
# docs/RESULTS.md, "A stage 2 that knows when the crop is wrong".
set -e
export TF_CPP_MIN_LOG_LEVEL=2
D=../shared/data/drishti-gs1; R=../shared/data/rim-one-dl; T=runs/cross; OUT=runs/wide
BUDGET="--pipeline two-stage --depth 6 --width 16 --ir 1.4 --epochs 6 --steps-per-epoch 25 --batch-size 32 --lr 0.002 --schedule cosine --seed 0 --segment-epochs 6 --segment-steps-per-epoch 50"
mkdir -p $OUT runs/logs
job() { name=$1; shift
  [ -n "$(find $T/$name -name segment.keras 2>/dev/null)" ] || /usr/bin/time -f "two-$name wall %e s" \
      .venv/bin/python -m training_job "$@" $BUDGET --run-id two-$name > runs/logs/two-$name.log 2>&1; }
job drishti --data $D --eval-data $R --out $T/drishti
job rim --data $R --eval-data $D --out $T/rim
stage2() { name=$1; data=$2; shift 2
  [ -f $OUT/$name/stage2/model.keras ] || /usr/bin/time -f "$name: stage 2 %e s" .venv/bin/python experiments/train_two_stage.py \
      --stage 2 --out $OUT/$name --data $data --epochs 6 --steps 50 --field-of-view 0.5 --mirror 0.5 "$@" > $OUT/$name.log 2>&1; }
stage2 drishti-wide $D --jitter-scale 0.5,2.0
stage2 rim-wide $R --jitter-scale 0.5,2.0
score() { label=$1; s1=$2; s2=$3; data=$4; split=$5
  for looks in 1 3; do
    .venv/bin/python experiments/evaluate_stages.py --stage1 $s1 --stage2 $s2 --data $data --split $split \
        --second-looks $looks --label $label 2>/dev/null | tee -a $OUT/scores.jsonl
  done; }
S1D=$(find $T/drishti -name model.keras -path '*/1/*'); S2D=$(find $T/drishti -name segment.keras -path '*/1/*')
S1R=$(find $T/rim -name model.keras -path '*/1/*'); S2R=$(find $T/rim -name segment.keras -path '*/1/*')
for split in train test; do
  score drishti-job $S1D $S2D $R $split
  score drishti-wide $S1D $OUT/drishti-wide/stage2/model.keras $R $split
  score rim-job $S1R $S2R $D $split
  score rim-wide $S1R $OUT/rim-wide/stage2/model.keras $D $split
done
# the instrument each was trained on (test split): what the wide jitter costs at home
score drishti-wide $S1D $OUT/drishti-wide/stage2/model.keras $D test
score rim-wide $S1R $OUT/rim-wide/stage2/model.keras $R test
echo done
