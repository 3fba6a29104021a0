#!/usr/bin/env bash
# Regenerates the committed reference runs under results/ (checkpoints are not committed).
#   scripts/reference-runs.sh ../shared/data        (hours on 2 CPU cores: each run's wall time is in its manifest)
set -euo pipefail
DATA="${1:-${ROBUSTCNN_DATA:-../shared/data}}"
RC="${RC:-robustcnn}"
OUT="${OUT:-results}"
common=(--data-root "$DATA" --out "$OUT" --seed 0)

# Generalization studies, CPU profiles (the defaults) on digits.
for study in memorization generalization overfitting double-descent; do
  $RC study "$study" --out "$OUT"
done
# lenet5, MNIST, the seed's setup: 12 epochs of Adadelta, batch 128.
$RC train --model lenet5 --dataset mnist --epochs 12 --optimizer adadelta --batch-size 128 "${common[@]}"
# lenet5_1998, MNIST: 20 epochs of Adam with a cosine schedule, batch 32, MAP loss (j = 0.1).
$RC train --model lenet5_1998 --dataset mnist --epochs 20 --optimizer adam --lr 0.001 --batch-size 32 \
  -s model.train.schedule=cosine "${common[@]}"
# alexnet_cifar on the CIFAR-10 PNG subset (20,000 train / 10,000 test), a few epochs.
$RC train --model alexnet_cifar --dataset imagefolder:cifar10-png --epochs 8 --optimizer sgd --lr 0.01 \
  --batch-size 128 "${common[@]}"
# cnn5 (width 16) on the CIFAR-10 PNG subset, the shipped zoo's cnn5 `cifar10` (scripts/make-pretrained.py --add
# <this run> cnn5 cifar10 --attacks fgsm,pgd), then AutoAttack at 8/255 on its first 1,000 test images.
$RC train --model cnn5 --width 16 --dataset imagefolder:cifar10-png --epochs 12 --optimizer sgd --lr 0.05 \
  --batch-size 128 -s model.train.schedule=cosine -s model.train.crop_padding=4 -s model.train.flip=true \
  -s model.train.weight_decay=0.0005 "${common[@]}"
run="$(ls -d "$OUT"/train/*/ | sort | tail -1)"
$RC benchmark cnn5 --model-arg width=16 --weights "$run/checkpoints/cnn5-final.pt" --dataset imagefolder:cifar10-png \
  --suite standard --eps 8/255 --n-examples 1000 --data-root "$DATA" --out "$OUT"
# The shipped cnn5 under the CIFAR-10-C corruptions (15 x 5 severities, generated on the fly), first 1,000 images.
$RC benchmark cnn5 --pretrained cifar10 --dataset imagefolder:cifar10-png --threat corruptions --n-examples 1000 \
  --data-root "$DATA" --out "$OUT"
# MNIST adversarial study, CPU profile (quick suite: FGSM + PGD-40), then AutoAttack and the full suite on its
# two checkpoints (first 200 test images for the PGD-trained model: AutoAttack costs seconds per robust example).
$RC study adversarial --config studies/adversarial-mnist-cpu.toml "${common[@]}"
run="$(ls -d "$OUT"/adversarial/*/ | sort | tail -1)"
$RC benchmark lenet5 --weights "$run/checkpoints/lenet5-final.pt" --dataset mnist --suite standard \
  --eps 0.1,0.2,0.3 --n-examples 1000 --data-root "$DATA" --out "$OUT"
$RC benchmark lenet5 --weights "$run/checkpoints/lenet5-pgd-final.pt" --dataset mnist --suite full \
  --eps 0.3 --n-examples 200 --data-root "$DATA" --out "$OUT"
# The main job on the embedded digits (no data files).
$RC study adversarial --out "$OUT" --seed 0
# A model that is not in the zoo, benchmarked as a user would (examples/train_my_cnn.py made its weights).
$RC benchmark examples/my_cnn.py:small_cnn --model-arg in_channels=1 --dataset mnist \
  --weights examples/my_cnn_mnist.pt --mean 0.1307 --std 0.3081 --suite quick --data-root "$DATA" --out "$OUT"
$RC benchmark examples/my_cnn.py:small_cnn --model-arg in_channels=3 --dataset imagefolder:cifar10-png \
  --weights examples/my_cnn_cifar10.pt --mean 0.4914,0.4822,0.4465 --std 0.2470,0.2435,0.2616 \
  --eps 0.0157,0.0314 --suite quick --data-root "$DATA" --out "$OUT"
# The lineage (perceptron -> Neocognitron -> LeNet-5) and the invariance study on MNIST, CPU profiles.
$RC study lineage --config studies/lineage-mnist.toml "${common[@]}"
$RC study invariance --config studies/invariance-mnist.toml "${common[@]}"
# Checkpoints stay out of git.
find "$OUT" -type d -name checkpoints -prune -exec rm -rf {} +
