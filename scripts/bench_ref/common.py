"""Shared parts of the reference benchmarks run by scripts/bench: loading the Kaggle CSV
into a uint8 (N, 784) image array plus labels, summary statistics, the seeded split of
Digits (Philox4x32-10, src/math/philox.h) so that a reference trains and validates on
exactly the rows Digits uses, and JSON output. Standard library and numpy only."""

import gzip
import json
import math
import sys
import time

import numpy as np

PIXELS = 784


def now():
    return time.perf_counter()


def stats(samples):
    """{median, min, max, count} as digits bench reports them (even count: mean of the two
    middle samples)."""
    ordered = sorted(samples)
    n = len(ordered)
    if n == 0:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "count": 0}
    middle = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    return {"median": middle, "min": ordered[0], "max": ordered[-1], "count": n}


def read_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def load_csv(path, rows=None):
    """Images (N, 784) uint8 and labels (N,) uint8 (None for the test layout) from a Kaggle
    CSV, plain or gzip. rows: keep only the first rows."""
    data = read_text(path)
    newline = data.index(b"\n")
    header = data[:newline].decode("ascii").strip().split(",")
    body = data[newline + 1:]
    if rows is not None:
        end = 0
        for _ in range(rows):
            end = body.find(b"\n", end) + 1
            if end == 0:
                end = len(body)
                break
        body = body[:end]
    body = body.rstrip(b"\n").replace(b"\n", b",")
    values = np.fromstring(body, dtype=np.int64, sep=",") if body else np.zeros(0, np.int64)
    columns = len(header)
    if columns not in (PIXELS, PIXELS + 1) or values.size % columns:
        raise ValueError(f"{path}: not a Kaggle digit-recognizer CSV")
    table = values.reshape(-1, columns).astype(np.uint8)
    if columns == PIXELS + 1:
        return np.ascontiguousarray(table[:, 1:]), np.ascontiguousarray(table[:, 0])
    return np.ascontiguousarray(table), None


# ---- Philox4x32-10, as in src/math/philox.h ----

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF
RNG_SPLIT = 2


def rng_bits(seed, purpose, epoch, step, index):
    """dg_rng_bits for an array of indices (uint64): 32 random bits each."""
    index = np.asarray(index, dtype=np.uint64)
    c0 = (index >> np.uint64(2)) & np.uint64(_MASK)
    c1 = np.full_like(index, step)
    c2 = np.full_like(index, epoch)
    c3 = (np.uint64(purpose) | ((index >> np.uint64(34)) << np.uint64(8))) & np.uint64(_MASK)
    k0 = np.uint64(seed & _MASK)
    k1 = np.uint64((seed >> 32) & _MASK)
    for _ in range(10):
        p0 = np.uint64(_M0) * c0
        p1 = np.uint64(_M1) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & np.uint64(_MASK)
        hi1, lo1 = p1 >> np.uint64(32), p1 & np.uint64(_MASK)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = np.uint64((int(k0) + _W0) & _MASK)
        k1 = np.uint64((int(k1) + _W1) & _MASK)
    lanes = np.stack([c0, c1, c2, c3])
    return lanes[(index & np.uint64(3)).astype(np.int64), np.arange(index.size)]


def digits_split(seed, count, val_split):
    """dg_train_split: (validation rows, training rows) exactly as Digits draws them."""
    rows = np.arange(count, dtype=np.int64)
    if count > 1:
        bits = rng_bits(seed, RNG_SPLIT, 0, 0, np.arange(count, dtype=np.uint64)).tolist()
        for i in range(count, 1, -1):
            j = (bits[i - 1] * i) >> 32
            rows[i - 1], rows[j] = rows[j], rows[i - 1]
    held = int(math.floor(count * float(np.float32(val_split)) + 0.5))
    held = min(held, count)
    return rows[:held], rows[held:]


def emit(result, path=None):
    text = json.dumps(result, indent=1)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


def parse_batches(text):
    """'86:12,256:4' -> [(86, 12), (256, 4)] (batch, steps per repetition)."""
    out = []
    for part in text.split(","):
        batch, steps = part.split(":")
        out.append((int(batch), int(steps)))
    return out
