#!/usr/bin/env python3
"""Keras 3 (JAX backend, CPU) reference of Digits' network for scripts/bench: the reference
Kaggle kernel's model as written for Keras (channels-last NHWC images, Dense(10, softmax),
sparse categorical cross-entropy), Glorot-uniform weights and zero biases (the Keras
defaults), RMSprop(lr 1e-3, rho 0.9, eps 1e-8; Keras 3 adds eps inside the square root).
Each step gathers the batch from the uint8 (N, 784) store and divides by 255, as Digits'
batch assembly does, then calls train_on_batch (jit-compiled by JAX); inference calls
predict_on_batch. Timing: --warmup steps, then --reps repetitions of STEPS steps.
Prints one JSON object."""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402


def build_model():
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 5, padding="same", activation="relu"),
        layers.Conv2D(32, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2, 2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(256, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, epsilon=1e-8),
                  loss="sparse_categorical_crossentropy")
    return model


class Batches:
    def __init__(self, images, labels, seed):
        self.images = images
        self.labels = labels.astype(np.int32)
        self.order = np.random.default_rng(seed).permutation(images.shape[0])
        self.cursor = 0

    def next(self, n):
        index = (np.arange(n) + self.cursor) % self.order.size
        self.cursor = (self.cursor + n) % self.order.size
        rows = self.order[index]
        x = (self.images[rows].astype(np.float32) / np.float32(255.0)).reshape(n, 28, 28, 1)
        return x, self.labels[rows]


def time_reps(reps, run):
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Kaggle CSV (plain or .gz)")
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--batches", default="86:12,256:4", help="BATCH:STEPS,...")
    parser.add_argument("--infer", default="256:8", help="BATCH:STEPS of the inference run")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", help="write the JSON here instead of stdout")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    images, labels = common.load_csv(args.data, rows=args.rows)
    if labels is None:
        labels = np.zeros(images.shape[0], np.uint8)
    source = Batches(images, labels, args.seed)
    result = {"framework": "keras-jax", "version": f"keras {keras.__version__}, jax "
              f"{jax.__version__}", "device": str(jax.devices()[0]),
              "threads": os.cpu_count(), "rows": int(images.shape[0]), "train": [],
              "inference": None}

    for batch, steps in common.parse_batches(args.batches):
        model = build_model()

        def train(count):
            for _ in range(count):
                x, y = source.next(batch)
                model.train_on_batch(x, y)  # returns the loss: waits for the step

        train(max(1, args.warmup))
        seconds = time_reps(args.reps, lambda: train(steps))
        rate = common.stats([batch * steps / s for s in seconds])
        result["train"].append({"batch": batch, "steps": steps, "images_per_s": rate})
        print(f"keras: training batch {batch}: {rate['median']:.0f} images/s", file=sys.stderr)

    if args.infer:
        batch, steps = common.parse_batches(args.infer)[0]
        model = build_model()

        def infer(count):
            for _ in range(count):
                x, _ = source.next(batch)
                np.asarray(model.predict_on_batch(x))

        infer(max(1, args.warmup))
        seconds = time_reps(args.reps, lambda: infer(steps))
        rate = common.stats([batch * steps / s for s in seconds])
        result["inference"] = {"batch": batch, "steps": steps, "images_per_s": rate}
        print(f"keras: inference batch {batch}: {rate['median']:.0f} images/s", file=sys.stderr)
    common.emit(result, args.out)


if __name__ == "__main__":
    main()
