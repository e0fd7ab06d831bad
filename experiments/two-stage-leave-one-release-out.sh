# Run from the repository root: bash experiments/two-stage-leave-one-release-out.sh [r1|r2|r3] (default r3);
# outputs go to runs/loro-<release>/ (not committed).
# The two-stage model at Table 2's budget trained on drishti-gs1 + the two other RIM-ONE releases (their train
# splits) and tested on every image of the held-out release (another camera and hospital, never trained on).
# The three folders under runs/loro-<release> are manifests over ../shared/data/rim-one-dl (symlinks; made by the
# python snippet below). docs/RESULTS.md, "Two-stage across instruments".
set -e
export TF_CPP_MIN_LOG_LEVEL=2
OUT=${1:-r3}
case $OUT in r1|r2|r3) ;; *) echo "usage: $0 [r1|r2|r3]" >&2; exit 2;; esac
KEPT=$(echo r1 r2 r3 | tr ' ' '\n' | grep -v "^$OUT$" | tr -d '\n')
.venv/bin/python - "$OUT" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "experiments")
from manifest_subsets import read_rows, write_subset
out = sys.argv[1]
src = Path("../shared/data/rim-one-dl")
rows = read_rows(src)
kept_releases = tuple(r for r in ("r1", "r2", "r3") if r != out)
for name, releases, only, relabel in (
        (f"rim-one-{''.join(kept_releases)}", kept_releases, None, None),  # trained on: their train splits
        (f"rim-one-{out}", (out,), None, "test"),  # scored: every image of the held-out release
        (f"rim-one-{out}-train", (out,), "train", None)):  # its train split alone, a selection set (no test image)
    kept = [dict(r, split=relabel or r["split"]) for r in rows
            if r["source_release"] in releases and only in (None, r["split"])]
    write_subset(Path(f"runs/loro-{out}") / name, src, kept, list(rows[0]))
PY
mkdir -p runs/logs
.venv/bin/python -m training_job --data ../shared/data/drishti-gs1,runs/loro-$OUT/rim-one-$KEPT --eval-data runs/loro-$OUT/rim-one-$OUT \
    --out runs/loro-$OUT/models --pipeline two-stage --depth 6 --width 16 --ir 1.4 --epochs 6 --steps-per-epoch 25 --batch-size 32 \
    --lr 0.002 --schedule cosine --seed 0 --segment-epochs 6 --segment-steps-per-epoch 50 --run-id loro-$OUT > runs/logs/loro-$OUT.log 2>&1
.venv/bin/python -m training_job.report --glaucoma runs/loro-$OUT/models
