#!/usr/bin/env bash
# The Fashion-MNIST-LT experiment of docs/EXPERIMENTS.md: one-hot BigGAN vs Softlabel-GAN
# trained with the same budget, their quality, and what their synthetic images do for a
# classifier trained on the long-tailed real set.
#
#   bash experiments/fmnist_lt.sh cpu  [OUT]   # the reduced version, about an hour on 2 CPU cores
#   bash experiments/fmnist_lt.sh gpu  [OUT]   # the full version, one GPU
#   STAGES="downstream summary" bash experiments/fmnist_lt.sh cpu   # only some stages
#
# Stages (in order): classify gan eval synth filter downstream summary. Running the script
# again skips what is finished (a command whose output exists), continues an interrupted
# GAN training or downstream experiment, and redoes the rest.
set -euo pipefail

PROFILE=${1:?usage: fmnist_lt.sh cpu|gpu [OUT]}
OUT=${2:-runs/fmnist_lt_$PROFILE}
STAGES=${STAGES:-classify gan eval synth filter downstream summary}
SGAN=${SGAN:-sgan-fast}
DATA=(--data fashion-mnist --imbalance exp --rho 100)

case $PROFILE in
  cpu)  # narrow models and few steps: a check that the pipeline behaves, not the paper's numbers
    CLF=(--arch resnet8 --epochs 4 --folds 2 --balance logit_adjust)
    GAN=(--ch 8 --batch-size 32 --d-steps 1 --g-lr 5e-4 --d-lr 5e-4 --augment translation,color
         --ema-decay 0.99 --ema-start 50 --steps 1500 --device cpu)
    EVAL=(--per-class 300 --max-real-per-class 500 --device cpu)
    DOWN=(--arch resnet8 --epochs 3 --seeds 3 --device cpu)
    SYNTH=(--device cpu) ;;
  gpu)  # BigGAN-32's defaults (docs/train.md) and the classify command's defaults
    CLF=(--balance logit_adjust)
    GAN=(--steps 20000)
    EVAL=(--per-class 1000)
    DOWN=(--epochs 30 --seeds 3)
    SYNTH=() ;;
  *) echo "profile must be cpu or gpu, got $PROFILE" >&2; exit 2 ;;
esac

has() { [[ " $STAGES " == *" $1 "* ]]; }
mkdir -p "$OUT"

done_() { [[ -e $1 ]] && echo "fmnist_lt.sh: $1 exists, skipped" >&2; }

if has classify && ! done_ "$OUT/classify/bank.npz"; then
  $SGAN classify "${DATA[@]}" "${CLF[@]}" --out "$OUT/classify"
fi
if has gan; then
  # the same settings, steps and seed; only the real images' labels differ
  for target in onehot softmax; do
    # an interrupted run (SIGTERM, a time limit) continues from its checkpoint
    resume=(); [[ -f $OUT/gan_$target/checkpoints/latest.pt ]] && resume=(--resume)
    $SGAN train "${DATA[@]}" --bank "$OUT/classify/bank.npz" --resolution 32 --target $target \
      "${GAN[@]}" --log-every 100 --ckpt-every 500 --sample-every 500 "${resume[@]}" \
      --out "$OUT/gan_$target"
  done
fi
if has eval; then
  for target in onehot softmax; do
    done_ "$OUT/eval_$target/report.json" && continue
    $SGAN eval "${DATA[@]}" --checkpoint "$OUT/gan_$target" --backend classifier \
      --classifier "$OUT/classify/classifier.pt" --real test "${EVAL[@]}" --out "$OUT/eval_$target"
  done
fi
if has synth; then
  # top every class up to the majority count; Softlabel-GAN also writes inter-class samples
  done_ "$OUT/synth_onehot/manifest.json" ||
    $SGAN synthesize --checkpoint "$OUT/gan_onehot" "${SYNTH[@]}" --out "$OUT/synth_onehot"
  done_ "$OUT/synth_softmax/manifest.json" ||
    $SGAN synthesize --checkpoint "$OUT/gan_softmax" "${SYNTH[@]}" \
      --mix 5000 --mix-bank "$OUT/classify/bank.npz" --out "$OUT/synth_softmax"
  # a lighter top-up: only the classes below 1,000 images, to 1,000
  for target in onehot softmax; do
    done_ "$OUT/synth1000_$target/manifest.json" ||
      $SGAN synthesize --checkpoint "$OUT/gan_$target" "${SYNTH[@]}" --count 1000 \
        --out "$OUT/synth1000_$target"
  done
fi
if has filter; then
  # how often the classifier recognises each generator's images of the rarest classes
  # (informative: up to 4 tries per image asked for, classes left short are written short)
  for target in onehot softmax; do
    done_ "$OUT/filter_$target/manifest.json" && continue
    $SGAN synthesize --checkpoint "$OUT/gan_$target" "${SYNTH[@]}" --total 1500 \
      --classifier "$OUT/classify/classifier.pt" --min-confidence 0.5 --max-tries 4 \
      --allow-shortfall --out "$OUT/filter_$target"
  done
fi
if has downstream; then
  $SGAN downstream "${DATA[@]}" "${DOWN[@]}" --balance logit_adjust \
    --arm onehot="$OUT/synth_onehot" --arm softlabel="$OUT/synth_softmax" \
    --arm softlabel+mixed="$OUT/synth_softmax:mixed" --arm onehot-to-1000="$OUT/synth1000_onehot" \
    --arm softlabel-to-1000="$OUT/synth1000_softmax" --out "$OUT/downstream"
fi
if has summary; then
  python experiments/gan_quality.py "$OUT/eval_onehot" "$OUT/eval_softmax" \
    --names "one-hot BigGAN" "Softlabel-GAN" > "$OUT/gan_quality.md"
  cat "$OUT/gan_quality.md" "$OUT/filter_onehot/report.md" "$OUT/filter_softmax/report.md" \
    "$OUT/downstream/report.md"
  echo "sample grids: $OUT/gan_onehot/samples/final.png $OUT/gan_softmax/samples/final.png"
fi
