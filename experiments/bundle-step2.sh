# Run from the repository root: bash experiments/<this file>; outputs go to runs/ (not committed).
# Continue the bundled multi-dataset model from version 1 with a lower learning rate (publishes version 2).
export TF_CPP_MIN_LOG_LEVEL=2
nice -n -5 .venv/bin/python -m training_job --mode incremental --base-version 1 \
  --data ../shared/data/drishti-gs1,../shared/data/rim-one-dl --out runs/bundle \
  --epochs 10 --steps-per-epoch 50 --batch-size 32 --lr 0.001 --schedule cosine --seed 1 --run-id bundle-v2
