# Run from the repository root, after `bash experiments/two-stage-leave-one-release-out.sh r3` (for its manifests):
#     bash experiments/field-of-view-leave-r3-out.sh
# Do the field-of-view augmentations, which let a model trained on ONE instrument transfer, cost a model trained
# on two (drishti-gs1 + RIM-ONE r1, r2) anything on a third camera (r3)? Each stage apart, at Table 2's budget:
#  - stage 1 with and without extended edges: the leave-r3-out job with extend_edges 0.5 and 0 (both with stage 2's
#    FieldOfViewAugment(p=0.5, p_mirror=0.5); the job would now choose neither for these mixed formats);
#  - stage 2 with and without the field of view, trained by experiments/train_two_stage.py, scored from the
#    expert disc (--oracle) and from the locator without extended edges.
# Outputs: runs/fov-loro/ (not committed); docs/RESULTS.md, "The photo's edge is not the disc's".
set -e
export TF_CPP_MIN_LOG_LEVEL=2
L=runs/loro-r3; OUT=runs/fov-loro
DATA=../shared/data/drishti-gs1,$L/rim-one-r1r2
TEST=$L/rim-one-r3,$L/rim-one-r1r2,../shared/data/drishti-gs1
mkdir -p $OUT runs/logs
for extend in 0.5 0; do
  name=$([ $extend = 0 ] && echo no-extend || echo extend)
  echo "augment: {zoom_range: [0.33, 4.0], shift_fraction: 0.2, zoom_on_disc: 0.5, extend_edges: $extend}
segment: {field_of_view: {p: 0.5, p_mirror: 0.5}}" > $OUT/$name.yaml
  [ -d $OUT/$name/optic-disc/1 ] || .venv/bin/python -m training_job --config $OUT/$name.yaml --data $DATA \
      --eval-data $L/rim-one-r3 --out $OUT/$name --pipeline two-stage --depth 6 --width 16 --ir 1.4 --epochs 6 \
      --steps-per-epoch 25 --batch-size 32 --lr 0.002 --schedule cosine --seed 0 --segment-epochs 6 \
      --segment-steps-per-epoch 50 --run-id fov-loro-$name > runs/logs/fov-loro-$name.log 2>&1
done
for fov in 0 0.5; do
  [ -f $OUT/stage2-fov$fov/stage2/model.keras ] || .venv/bin/python experiments/train_two_stage.py --stage 2 \
      --out $OUT/stage2-fov$fov --data $DATA --epochs 6 --steps 50 --field-of-view $fov --mirror $fov > $OUT/stage2-fov$fov.log 2>&1
done
for locator in $OUT/extend/optic-disc/1 $OUT/no-extend/optic-disc/1; do
  .venv/bin/python experiments/evaluate_stages.py --stage1 $locator/model.keras --stage2 $locator/segment.keras --data $TEST \
      --locations --label "$locator" 2>/dev/null | tee -a $OUT/scores.jsonl
done
for fov in 0 0.5; do
  for locator in $OUT/no-extend/optic-disc/1 ""; do
    .venv/bin/python experiments/evaluate_stages.py --stage1 ${locator:-$OUT/no-extend/optic-disc/1}/model.keras \
        --stage2 $OUT/stage2-fov$fov/stage2/model.keras --data $L/rim-one-r3,$L/rim-one-r1r2,../shared/data/drishti-gs1 \
        --label "stage2-fov$fov${locator:+ located}" $([ -n "$locator" ] || echo --oracle) 2>/dev/null | tee -a $OUT/scores.jsonl
  done
done
