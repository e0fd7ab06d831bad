# Run from the repository root: bash experiments/continue-stage2.sh BASE OUT EPOCHS SEED [BASE_LOCATOR_SECONDS [FLAG...]]
# A bundled two-stage version's stage 2 trained on from its own weights (EPOCHS x 200 x 16 more crops of the base's
# 1.75 disc diameters, both datasets' train splits, the same jitter and instrument augmentation, peak learning rate
# 5e-4, cosine), paired with the base's stage 1 unchanged, exported with today's signatures, scored once on both test
# splits through the serving pipeline, then published into OUT/models (not committed). docs/RESULTS.md:
#     version 4: bash experiments/continue-stage2.sh models/optic-disc/3 runs/bundle-v4 8 1
#     version 5: bash experiments/continue-stage2.sh models/optic-disc/4 runs/bundle-v5 32 2
# BASE_LOCATOR_SECONDS is the training time in the base's locator (default 558: version 2's 9.3 minutes, the locator
# of versions 2 to 5; version 6's is 1399.6, experiments/continue-stage1.sh), so the stage-2 time-to-Dice log starts
# from the base's training minutes less those, and the new card counts both stages' whole lineage. Any FLAG after it
# goes to train_two_stage.py's stage-2 training (e.g. --cup-weight 2).
set -e
export TF_CPP_MIN_LOG_LEVEL=2
BASE=$1 OUT=$2 EPOCHS=$3 SEED=$4 LOCATOR_SECONDS=${5:-558}
shift 4; shift || true  # what is left: stage-2 flags
mkdir -p $OUT/stage1 $OUT/stage2
cp $BASE/model.keras $OUT/stage1/model.keras
.venv/bin/python - "$BASE" "$OUT" "$LOCATOR_SECONDS" <<'PY'
import json, sys
from pathlib import Path
base, out = Path(sys.argv[1]), Path(sys.argv[2])
card = json.loads((base / "metrics.json").read_text())
stage1 = {k: v for k, v in card["config"].items() if k != "segment"}
(out / "stage1" / "config.json").write_text(json.dumps(stage1, indent=2))
stage1_seconds = float(sys.argv[3])
(out / "stage1" / "log.jsonl").write_text(json.dumps({"epoch": 0, "seconds": stage1_seconds, "from": str(base)}) + "\n")
log = out / "stage2" / "log.jsonl"
if not log.exists():
    log.write_text(json.dumps({"epoch": 0, "seconds": round(card["training_seconds"] - stage1_seconds, 1),
                               "from": str(base / "segment.keras")}) + "\n")
PY
[ -f $OUT/stage2/model.keras ] || /usr/bin/time -f "stage 2 %e s" .venv/bin/python experiments/train_two_stage.py --stage 2 \
    --out $OUT --init $BASE/segment.keras --lr 5e-4 --epochs $EPOCHS --steps 200 --seed $SEED "$@"
.venv/bin/python experiments/train_two_stage.py --stage export --out $OUT --base $BASE --repo $OUT/models
echo done
