"""One point of the digits adversarial-training sweep: train with the given changes, evaluate at L2 eps 1.0.

    python benchmarks/sweeps/digits_adversarial_training.py NAME '{"adv": {"steps": 10, "random_start": true}}' [SEED]

Changes are TrainConfig fields, plus "adv" (AdversarialConfig fields) and "model" (small_cnn options), on top of
the previous digits default (60 epochs, batch 128, lr 0.1 one-cycle, 7 PGD steps of eps/5 from the clean image).
Prints one JSON line; the evaluation is the digits preset's (100 steps x 5 runs, worst case per example).
"""

import json
import sys
import time

import advfeatures as af
from advfeatures.evaluation import clean_accuracy, robust_accuracy
from advfeatures.training import AdversarialConfig, ModelSpec, TrainConfig, channel_stats, train_new_model


def main() -> None:
    name, changes = sys.argv[1], json.loads(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    train, test = af.load_dataset("digits", "train"), af.load_dataset("digits", "test")
    mean, std = channel_stats(train.images)
    adversarial = {"norm": "l2", "eps": 1.0, "steps": 7, **changes.pop("adv", {})}
    model_options = changes.pop("model", {})
    config = {"epochs": 60, "batch_size": 128, "lr": 0.1, "schedule": "onecycle", "weight_decay": 5e-4,
              "crop_padding": 0, "seed": seed, **changes}
    t = time.time()
    model, _ = train_new_model(
        ModelSpec("small_cnn", model_options), train.images, train.labels, 10,
        TrainConfig(**config, adversarial=AdversarialConfig(**adversarial)), mean=mean, std=std, progress=False,
    )
    seconds = time.time() - t
    clean = clean_accuracy(model, test.images, test.labels)
    robust = robust_accuracy(model, test.images, test.labels, "l2", 1.0, steps=100, restarts=5)
    print(json.dumps({"name": name, "seed": seed, "clean": clean, "robust": robust, "train_s": round(seconds, 1),
                      "cfg": sys.argv[2]}), flush=True)


if __name__ == "__main__":
    main()
