# Run from the repository root: bash experiments/continue-stage1.sh BASE OUT EPOCHS SEED BASE_LOCATOR_SECONDS
# A bundled two-stage version's stage 1 (the whole-image locator) trained on from its own weights (EPOCHS x 50 x 32
# more images, the locator's defaults `training_job.config.LOCATOR_AUGMENT`, peak learning rate 4e-4, cosine, both
# datasets' train splits), paired with the base's stage 2 unchanged, exported with today's signatures, scored once on
# both test splits through the serving pipeline, then published into OUT/models (not committed). docs/RESULTS.md:
#     version 6: bash experiments/continue-stage1.sh models/optic-disc/5 runs/bundle-v6 16 3 558
# BASE_LOCATOR_SECONDS is the training time already in the base's locator (a card records only the whole lineage's):
# 558 s for versions 2 to 5 (version 2's locator, docs/RESULTS.md "Version 3"), 1,399.6 s for version 6. The locator's
# log opens with it and the stage-2 log with the rest, so that the new card counts both stages' whole lineage.
# Rerun the same command to resume an interrupted run (stage 1 checkpoints every epoch).
set -e
export TF_CPP_MIN_LOG_LEVEL=2
BASE=$1 OUT=$2 EPOCHS=$3 SEED=$4 LOCATOR_SECONDS=$5
[ -n "$LOCATOR_SECONDS" ] || { echo "usage: $0 BASE OUT EPOCHS SEED BASE_LOCATOR_SECONDS" >&2; exit 2; }
mkdir -p $OUT/stage1 $OUT/stage2
cp $BASE/segment.keras $OUT/stage2/model.keras
.venv/bin/python - "$BASE" "$OUT" "$LOCATOR_SECONDS" <<'PY'
import json, sys
from pathlib import Path
base, out, locator_seconds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
card = json.loads((base / "metrics.json").read_text())
stage2_seconds = round(card["training_seconds"] - locator_seconds, 1)
if stage2_seconds <= 0:
    sys.exit(f"BASE_LOCATOR_SECONDS {locator_seconds} is not below the base's whole lineage, {card['training_seconds']} s")
# Stage 2 is the base's, unchanged: its config, and a log whose only row carries its training time and where it came from.
(out / "stage2" / "config.json").write_text(json.dumps(card["config"]["segment"], indent=2))
stage2_from = card.get("stage2_fine_tuned_from") or str(base / "segment.keras")
(out / "stage2" / "log.jsonl").write_text(json.dumps({"epoch": 0, "seconds": stage2_seconds, "from": stage2_from}) + "\n")
# The locator's log opens with the base's locator; training appends its epochs' seconds on top (EpochLog).
log = out / "stage1" / "log.jsonl"
if not log.exists():
    log.write_text(json.dumps({"epoch": 0, "seconds": locator_seconds, "from": str(base / "model.keras")}) + "\n")
PY
[ -f $OUT/stage1/model.keras ] || /usr/bin/time -f "stage 1 %e s" .venv/bin/python experiments/train_two_stage.py --stage 1 \
    --out $OUT --base $BASE --data ../shared/data/drishti-gs1,../shared/data/rim-one-dl --epochs $EPOCHS --steps 50 --seed $SEED
.venv/bin/python experiments/train_two_stage.py --stage export --out $OUT --base $BASE --repo $OUT/models
echo done
