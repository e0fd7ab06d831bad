# Run from the repository root, after experiments/two-stage-cross.sh (its rim-one-dl run is the baseline):
#     bash experiments/locator-extend-edges.sh
# Trained on rim-one-dl only (photos barely larger than the disc), the locator marks most of a whole drishti-gs1
# photo as disc. Rerun that cross-instrument row with half of stage 1's views extending the photo's edge colours
# beyond its edges instead of black (AugmentConfig.extend_edges, zooms-out and shifts), everything else as
# two-stage-cross.sh; scored on drishti-gs1's TRAIN split (unseen by an rim-one-dl model: the selection set) and
# then its test split. Outputs: runs/extend/ (not committed); docs/RESULTS.md.
set -e
export TF_CPP_MIN_LOG_LEVEL=2
D=../shared/data/drishti-gs1; R=../shared/data/rim-one-dl; OUT=runs/extend
mkdir -p $OUT runs/logs
cat > $OUT/config.yaml <<'YAML'
augment: {zoom_range: [0.33, 4.0], shift_fraction: 0.2, zoom_on_disc: 0.5, extend_edges: 0.5}
YAML
BUDGET="--pipeline two-stage --depth 6 --width 16 --ir 1.4 --epochs 6 --steps-per-epoch 25 --batch-size 32 --lr 0.002 --schedule cosine --seed 0 --segment-epochs 6 --segment-steps-per-epoch 50"
[ -d $OUT/rim/optic-disc/1 ] || /usr/bin/time -f "extend-rim wall %e s" .venv/bin/python -m training_job --config $OUT/config.yaml \
    --data $R --eval-data $D --out $OUT/rim $BUDGET --run-id extend-rim > runs/logs/extend-rim.log 2>&1
for model in runs/cross/rim/optic-disc/1 $OUT/rim/optic-disc/1; do
  for split in train test; do
    echo "$model $split: $(.venv/bin/fundus-seg evaluate --model $model --data $D --split $split --json 2>/dev/null \
        | .venv/bin/python -c 'import json,sys; d=json.load(sys.stdin); print(d["dice_mean"], d["rrp"], d["flagged"])')"
  done
done | tee -a $OUT/scores.txt
