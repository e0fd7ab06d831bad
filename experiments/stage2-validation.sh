# Run from the repository root: bash experiments/stage2-validation.sh [EPOCHS] [VARIANT...]
# (default: 12 epochs, as docs/RESULTS.md ran it; variants dropout 0 and 0.2). A VARIANT is a stage-2 setting of
# train_two_stage.py as FLAG=VALUE (cup-weight=2 trains with --cup-weight 2, into runs/cup-val/cup-weight-2) or a bare
# number, a dropout rate (0.2: --dropout 0.2, into runs/cup-val/dropout-0.2). Outputs go to runs/cup-val/ (not committed).
# First asked of dropout, then of the cup's loss weight (docs/RESULTS.md "r2's images, and the cup's weight"):
# is the rim-one-dl cup's gap between training and unseen images (0.856 against 0.792 for version 6, docs/RESULTS.md
# "Where version 5's rim-one-dl cup is lost") closed by regularising stage 2? Chosen without any test split: a fifth
# of rim-one-dl's TRAIN split (seeded, per release and label) is held out as a validation set; stage 2 is trained
# from scratch on the rest plus drishti-gs1's train split, once per variant (EPOCHS x 100 x 16 crops, the bundled recipe otherwise), and each is scored on the validation images through
# the serving pipeline, from the bundled locator's location and (--oracle) from the expert disc, the latter also per
# RIM-ONE release (camera), with one CSV row per image in runs/cup-val/FLAG-VALUE/per-image/.
set -e
export TF_CPP_MIN_LOG_LEVEL=2
EPOCHS=${1:-12}; shift || true
VARIANTS=${*:-0 0.2}
.venv/bin/python - <<'PY'
import random, sys
from pathlib import Path
sys.path.insert(0, "experiments")
from manifest_subsets import read_rows, write_subset
src = Path("../shared/data/rim-one-dl")
every = read_rows(src)
rows = [r for r in every if r["split"] == "train"]
rng = random.Random(0)
held = set()
for group in sorted({(r["source_release"], r["label"]) for r in rows}):
    ids = sorted(r["id"] for r in rows if (r["source_release"], r["label"]) == group)
    held.update(rng.sample(ids, round(len(ids) / 5)))
validation = [dict(r, split="test") for r in rows if r["id"] in held]  # scored as "test"
for name, kept in (("rim-one-fit", [r for r in rows if r["id"] not in held]),  # trained on (split "train")
                   ("rim-one-val", validation),
                   *((f"rim-one-val-{release}", [r for r in validation if r["source_release"] == release])
                     for release in ("r1", "r2", "r3"))):  # the same images by camera
    write_subset(Path("runs/cup-val") / name, src, kept, list(every[0]))
    print(name, len(kept))
PY
for VARIANT in $VARIANTS; do
    case $VARIANT in *=*) FLAG=${VARIANT%%=*} VALUE=${VARIANT#*=} ;; *) FLAG=dropout VALUE=$VARIANT ;; esac
    NAME="$FLAG $VALUE" OUT=runs/cup-val/$FLAG-$VALUE
    [ -f $OUT/stage2/model.keras ] || /usr/bin/time -f "$NAME: stage 2 %e s" .venv/bin/python experiments/train_two_stage.py \
        --stage 2 --out $OUT --data ../shared/data/drishti-gs1,runs/cup-val/rim-one-fit --epochs $EPOCHS --steps 100 --seed 0 \
        --$FLAG $VALUE
    .venv/bin/python experiments/evaluate_stages.py --stage1 models/optic-disc/6/model.keras --stage2 $OUT/stage2/model.keras \
        --data runs/cup-val/rim-one-val --label "$NAME located"
    .venv/bin/python experiments/evaluate_stages.py --stage1 models/optic-disc/6/model.keras --stage2 $OUT/stage2/model.keras \
        --data runs/cup-val/rim-one-val,runs/cup-val/rim-one-val-r1,runs/cup-val/rim-one-val-r2,runs/cup-val/rim-one-val-r3 \
        --oracle --label "$NAME --oracle" --per-image $OUT/per-image
done
