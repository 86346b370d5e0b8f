#!/usr/bin/env python3
"""CSV parse references for scripts/bench: pandas.read_csv (C engine) and numpy.loadtxt on
the same Kaggle CSV files Digits loads, plain or gzip. MB/s counts the uncompressed text
(1 MB = 1e6 bytes), as digits bench does. A library that cannot be imported is reported
as missing instead. Prints one JSON object."""

import argparse
import gzip
import os
import sys
import time

import numpy as np


def uncompressed_bytes(path):
    if not path.endswith(".gz"):
        return os.path.getsize(path)
    total = 0
    with gzip.open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 24)
            if not chunk:
                return total
            total += len(chunk)


def stats(samples):
    ordered = sorted(samples)
    n = len(ordered)
    middle = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    return {"median": middle, "min": ordered[0], "max": ordered[-1], "count": n}


def time_loads(load, reps, megabytes):
    seconds = []
    rows = 0
    for _ in range(reps):
        start = time.perf_counter()
        rows = load()
        seconds.append(time.perf_counter() - start)
    return {"rows": rows, "seconds": stats(seconds),
            "mb_per_s": stats([megabytes / s for s in seconds])}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--reps", type=int, default=3, help="timed pandas loads per file (3)")
    parser.add_argument("--loadtxt-reps", type=int, default=3,
                        help="timed numpy.loadtxt loads per file (3; 0 for none)")
    parser.add_argument("--out")
    args = parser.parse_args()

    result = {"numpy": np.__version__, "files": []}
    try:
        import pandas
        result["pandas"] = pandas.__version__
    except ImportError as error:
        pandas = None
        result["pandas_missing"] = str(error)

    for path in args.files:
        megabytes = uncompressed_bytes(path) / 1e6
        entry = {"file": path, "gzipped": path.endswith(".gz"), "megabytes": megabytes}
        if pandas is not None:
            def load_pandas():
                return int(pandas.read_csv(path).to_numpy(dtype=np.uint8).shape[0])
            load_pandas()
            entry["pandas"] = time_loads(load_pandas, args.reps, megabytes)
            print(f"parse: pandas {os.path.basename(path)}: "
                  f"{entry['pandas']['mb_per_s']['median']:.1f} MB/s", file=sys.stderr)
        if args.loadtxt_reps > 0:
            def load_numpy():
                return int(np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.uint8).shape[0])
            entry["numpy"] = time_loads(load_numpy, args.loadtxt_reps, megabytes)
            print(f"parse: numpy.loadtxt {os.path.basename(path)}: "
                  f"{entry['numpy']['mb_per_s']['median']:.1f} MB/s", file=sys.stderr)
        result["files"].append(entry)

    import json
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
