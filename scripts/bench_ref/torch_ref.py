#!/usr/bin/env python3
"""PyTorch reference of Digits' network for scripts/bench.

The same network (Conv 5x5x32 x2, pool, dropout .25, Conv 3x3x64 x2, pool, dropout .25,
dense 256, dropout .5, dense 10), Glorot-uniform weights and zero biases, RMSprop(lr 1e-3,
alpha 0.9, eps 1e-8: eps outside the square root, as in Keras 2 and Digits), cross-entropy.
Images are NCHW float32, taken from the uint8 (N, 784) store and divided by 255 in each step,
as Digits' batch assembly does.

  throughput (default): training images/s at each --batches BATCH:STEPS and inference
      images/s, steady state: --warmup steps, then --reps timed repetitions of STEPS steps.
      --config says how PyTorch runs the network, as a user would try it:
        eager          fp32, NCHW (the default)
        channels_last  fp32, NHWC memory format for activations and weights
        bf16           torch.autocast("cpu", dtype=torch.bfloat16) with channels_last
                       (the weights and the RMSprop state stay fp32)
        compile        torch.compile(model), fp32 NCHW (Inductor's C++ code, built with the
                       system C compiler during the warm-up steps, which are not timed)
      A configuration that fails (torch.compile without a compiler, say) is reported in the
      JSON as "error" instead of numbers.
  --layers: one training step layer by layer at each --batches BATCH (eager or channels_last),
      the layers grouped and named as Digits names them (a conv or dense layer with its ReLU:
      convN, denseN; batchnormN, poolN, dropoutN, flattenN), each layer's forward timed
      between forward hooks and its backward from the moment the gradient of its output is
      ready (a backward pre-hook) to the moment the layer before it gets its own (for the
      first layer: to the end of backward()); medians of --reps steps after --warmup, as
      `digits bench`'s per-layer breakdown (which syncs after every op; on the CPU PyTorch's
      ops are synchronous).
  --recipe: trains the default recipe (augmentation, ReduceLROnPlateau on validation accuracy)
      on exactly the rows Digits trains and validates on (its Philox split), for --epochs.
Prints one JSON object."""

import argparse
import contextlib
import os
import sys
import time

WALL_START = time.perf_counter()

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


CONFIGS = ("eager", "channels_last", "bf16", "compile")


def build_deotte():
    """`digits train --net deotte` in PyTorch: Chris Deotte's Kaggle CNN, "valid" 3x3 and
    stride-2 5x5 (padding 2) convolutions, BatchNorm after every layer with Keras' constants
    (eps 1e-3, momentum 0.99 = PyTorch's 0.01), dropout 0.4."""
    def bn2(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(inplace=True), bn2(32),
        nn.Conv2d(32, 32, 3), nn.ReLU(inplace=True), bn2(32),
        nn.Conv2d(32, 32, 5, stride=2, padding=2), nn.ReLU(inplace=True), bn2(32),
        nn.Dropout(0.4),
        nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True), bn2(64),
        nn.Conv2d(64, 64, 3), nn.ReLU(inplace=True), bn2(64),
        nn.Conv2d(64, 64, 5, stride=2, padding=2), nn.ReLU(inplace=True), bn2(64),
        nn.Dropout(0.4),
        nn.Flatten(),
        nn.Linear(1024, 128), nn.ReLU(inplace=True),
        nn.BatchNorm1d(128, eps=1e-3, momentum=0.01), nn.Dropout(0.4),
        nn.Linear(128, 10),
    )


def build_model(channels_last, net="reference"):
    if net == "deotte":
        model = build_deotte()
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Dropout(0.25),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2), nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(3136, 256), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(256, 10),
        )
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model, lr=1e-3):
    return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=0.9, eps=1e-8)


def setup(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        tf32 = args.math == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
    return device


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Batches:
    """Rows of a seeded permutation, cycled; batches gathered on the device."""

    def __init__(self, images, labels, device, seed):
        self.images = torch.from_numpy(images).to(device)
        self.labels = torch.from_numpy(labels.astype(np.int64)).to(device)
        generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(images.shape[0], generator=generator).to(device)
        self.cursor = 0

    def next(self, n, channels_last):
        count = self.order.numel()
        index = (torch.arange(n, device=self.order.device) + self.cursor) % count
        self.cursor = (self.cursor + n) % count
        rows = self.order[index]
        x = self.images[rows].float().div_(255.0).view(n, 1, 28, 28)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[rows]


def time_reps(device, reps, run):
    seconds = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def cpu_capability():
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch < 2.0
        return None


def configure(model, config):
    """The model as --config runs it, and the autocast context of each step."""
    if config == "compile":
        model = torch.compile(model)
    if config == "bf16":
        return model, lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return model, contextlib.nullcontext


def throughput(args):
    device = setup(args)
    images, labels = common.load_csv(args.data, rows=args.rows)
    if labels is None:
        labels = np.zeros(images.shape[0], np.uint8)
    source = Batches(images, labels, device, args.seed)
    channels_last = args.config in ("channels_last", "bf16")
    result = {"framework": "pytorch", "version": torch.__version__, "device": str(device),
              "net": args.net,
              "config": args.config, "cpu_capability": cpu_capability(),
              "threads": torch.get_num_threads(), "channels_last": channels_last,
              "rows": int(images.shape[0]), "train": [], "inference": None}
    if args.config == "bf16" and device.type != "cpu":
        raise SystemExit("torch_ref: --config bf16 is the CPU autocast configuration")

    for batch, steps in common.parse_batches(args.batches):
        model, autocast = configure(build_model(channels_last, args.net).to(device), args.config)
        optimizer = make_optimizer(model)
        model.train()

        def train(count):
            for _ in range(count):
                x, y = source.next(batch, channels_last)
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()

        compile_start = time.perf_counter()
        train(max(args.warmup, 1 if args.config == "compile" else 0))
        warmup_seconds = time.perf_counter() - compile_start
        seconds = time_reps(device, args.reps, lambda: train(steps))
        result["train"].append({"batch": batch, "steps": steps,
                                "warmup_seconds": warmup_seconds,
                                "images_per_s": common.stats(
                                    [batch * steps / s for s in seconds])})
        print(f"torch {args.config}: training batch {batch}: "
              f"{result['train'][-1]['images_per_s']['median']:.0f} images/s", file=sys.stderr)

    if args.infer:
        batch, steps = common.parse_batches(args.infer)[0]
        model, autocast = configure(build_model(channels_last, args.net).to(device), args.config)
        model.eval()

        def infer(count):
            with torch.inference_mode(), autocast():
                for _ in range(count):
                    x, _ = source.next(batch, channels_last)
                    F.softmax(model(x).float(), dim=1).cpu()

        compile_start = time.perf_counter()
        infer(max(args.warmup, 1 if args.config == "compile" else 0))
        warmup_seconds = time.perf_counter() - compile_start
        seconds = time_reps(device, args.reps, lambda: infer(steps))
        result["inference"] = {"batch": batch, "steps": steps, "warmup_seconds": warmup_seconds,
                               "images_per_s": common.stats(
                                   [batch * steps / s for s in seconds])}
        print(f"torch {args.config}: inference batch {batch}: "
              f"{result['inference']['images_per_s']['median']:.0f} images/s", file=sys.stderr)
    return result


def throughput_or_error(args):
    """throughput(), or the reason the configuration could not run (torch.compile's
    failures are reported, not raised: they depend on the compiler and the platform)."""
    try:
        return throughput(args)
    except Exception as error:  # noqa: BLE001 - any failure of a configuration is reported
        if args.config != "compile":
            raise
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0] if lines else ''}"
        print(f"torch {args.config}: failed: {reason}", file=sys.stderr)
        return {"framework": "pytorch", "version": torch.__version__, "device": args.device,
                "config": args.config, "cpu_capability": cpu_capability(),
                "error": reason[:500], "train": [], "inference": None}


def layer_groups(model):
    """[(name, module)]: the Sequential's children grouped as Digits' layers."""
    kinds = ((nn.Conv2d, "conv"), (nn.Linear, "dense"), (nn.BatchNorm1d, "batchnorm"),
             (nn.BatchNorm2d, "batchnorm"), (nn.MaxPool2d, "pool"), (nn.Dropout, "dropout"),
             (nn.Flatten, "flatten"))
    groups, counts = [], {}
    for child in model.children():
        if isinstance(child, nn.ReLU) and groups:
            groups[-1][1].append(child)
            continue
        kind = next((k for t, k in kinds if isinstance(child, t)), None)
        if kind is None:
            raise SystemExit(f"torch_ref --layers: no Digits layer for {type(child).__name__}")
        counts[kind] = counts.get(kind, 0) + 1
        groups.append((f"{kind}{counts[kind]}", [child]))
    return [(name, nn.Sequential(*modules)) for name, modules in groups]


def layers(args):
    device = setup(args)
    if device.type != "cpu" or args.config not in ("eager", "channels_last"):
        raise SystemExit("torch_ref --layers: the CPU, --config eager or channels_last "
                         "(torch.compile fuses the layers)")
    images, labels = common.load_csv(args.data, rows=args.rows)
    if labels is None:
        labels = np.zeros(images.shape[0], np.uint8)
    source = Batches(images, labels, device, args.seed)
    channels_last = args.config == "channels_last"
    result = {"framework": "pytorch", "version": torch.__version__, "device": str(device),
              "net": args.net, "config": args.config, "cpu_capability": cpu_capability(),
              "threads": torch.get_num_threads(), "channels_last": channels_last,
              "layers": []}
    for batch, _ in common.parse_batches(args.batches):
        groups = layer_groups(build_model(channels_last, args.net))
        model = nn.Sequential(*(module for _, module in groups)).to(device)
        optimizer = make_optimizer(model)
        model.train()
        marks = {}

        def mark(key):
            def hook(*_):
                marks[key] = time.perf_counter()
            return hook

        for i, (_, module) in enumerate(groups):
            module.register_forward_pre_hook(mark(("f0", i)))
            module.register_forward_hook(mark(("f1", i)))
            module.register_full_backward_pre_hook(mark(("b0", i)))
        samples = {name: ([], []) for name, _ in groups}
        extra = {"softmax_xent": [], "loss_backward": [], "update": [], "step": []}
        for step in range(args.warmup + args.reps):
            x, y = source.next(batch, channels_last)
            optimizer.zero_grad(set_to_none=True)
            marks.clear()
            start = time.perf_counter()
            logits = model(x)
            loss_start = time.perf_counter()
            loss = F.cross_entropy(logits, y)
            backward_start = time.perf_counter()
            loss.backward()
            backward_end = time.perf_counter()
            optimizer.step()
            end = time.perf_counter()
            if step < args.warmup:
                continue
            last = len(groups) - 1
            for i, (name, _) in enumerate(groups):
                samples[name][0].append((marks[("f1", i)] - marks[("f0", i)]) * 1e3)
                done = marks[("b0", i - 1)] if i > 0 else backward_end
                samples[name][1].append((done - marks[("b0", i)]) * 1e3)
            extra["softmax_xent"].append((backward_start - loss_start) * 1e3)
            extra["loss_backward"].append((marks[("b0", last)] - backward_start) * 1e3)
            extra["update"].append((end - backward_end) * 1e3)
            extra["step"].append((end - start) * 1e3)
        result["layers"].append({
            "batch": batch,
            "rows": [{"name": name, "forward_ms": common.stats(f), "backward_ms": common.stats(b)}
                     for name, (f, b) in samples.items()],
            **{f"{key}_ms": common.stats(v) for key, v in extra.items()}})
        print(f"torch {args.config}: layers at batch {batch}: step "
              f"{result['layers'][-1]['step_ms']['median']:.2f} ms", file=sys.stderr)
    return result


def augment(x, generator, rotation_deg=10.0, shift=0.1, zoom=0.1):
    """Keras ImageDataGenerator(rotation 10, zoom 0.1, shifts 0.1) as Digits does it
    (shared/AUGMENTATION.md): output pixel -> input position, rotation . shift . zoom about
    the centre, bilinear, border clamped. Draws from torch's generator, not Philox."""
    n = x.shape[0]
    u = torch.rand(n, 5, generator=generator).to(x.device) * 2.0 - 1.0
    theta = u[:, 0] * rotation_deg * (np.pi / 180.0)
    t_row = u[:, 1] * shift * 28.0
    t_col = u[:, 2] * shift * 28.0
    z_row = 1.0 + u[:, 3] * zoom
    z_col = 1.0 + u[:, 4] * zoom
    s, c = torch.sin(theta), torch.cos(theta)
    half = 13.5
    off_row = (c * t_row - s * t_col) / half
    off_col = (s * t_row + c * t_col) / half
    # affine_grid works in (x, y) = (col, row), normalised so that -1 and 1 are pixel centres
    # 0 and 27 (align_corners=True).
    grid_theta = torch.stack([
        torch.stack([c * z_col, s * z_row, off_col], dim=1),
        torch.stack([-s * z_col, c * z_row, off_row], dim=1),
    ], dim=1)
    grid = F.affine_grid(grid_theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def recipe(args):
    device = setup(args)
    load_start = time.perf_counter()
    images, labels = common.load_csv(args.data, rows=args.limit)
    load_seconds = time.perf_counter() - load_start
    if labels is None:
        raise SystemExit("torch_ref: the recipe needs a labelled (train layout) CSV")
    val_rows, train_rows = common.digits_split(args.seed, images.shape[0], args.val_split)
    store = torch.from_numpy(images).to(device)
    targets = torch.from_numpy(labels.astype(np.int64)).to(device)
    train_rows = torch.from_numpy(train_rows).to(device)
    val_rows = torch.from_numpy(val_rows).to(device)
    model = build_model(args.channels_last).to(device)
    optimizer = make_optimizer(model, args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    lr, best_monitor, wait = args.lr, -np.inf, 0
    history = []
    train_start = time.perf_counter()
    for epoch in range(args.epochs):
        epoch_start = time.perf_counter()
        model.train()
        permutation = train_rows[torch.randperm(train_rows.numel(), generator=generator)
                                 .to(device)]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        for start in range(0, permutation.numel(), args.batch):
            rows = permutation[start:start + args.batch]
            x = store[rows].float().div_(255.0).view(-1, 1, 28, 28)
            if not args.no_augment:
                x = augment(x, generator)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = targets[rows]
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * rows.numel()
            correct += (logits.argmax(dim=1) == y).sum()
        model.eval()
        val_correct = 0
        val_loss = 0.0
        with torch.inference_mode():
            for start in range(0, val_rows.numel(), 1024):
                rows = val_rows[start:start + 1024]
                x = store[rows].float().div_(255.0).view(-1, 1, 28, 28)
                if args.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = model(x)
                val_loss += float(F.cross_entropy(logits, targets[rows], reduction="sum"))
                val_correct += int((logits.argmax(dim=1) == targets[rows]).sum())
        val_accuracy = val_correct / max(1, val_rows.numel())
        report = {"epoch": epoch + 1, "loss": float(loss_sum) / train_rows.numel(),
                  "accuracy": int(correct) / train_rows.numel(),
                  "val_loss": val_loss / max(1, val_rows.numel()),
                  "val_accuracy": val_accuracy, "lr": lr,
                  "seconds": time.perf_counter() - epoch_start}
        history.append(report)
        print("torch: epoch {epoch}: loss {loss:.4f} accuracy {accuracy:.4f} val_accuracy "
              "{val_accuracy:.4f} lr {lr:.3g} seconds {seconds:.1f}".format(**report),
              file=sys.stderr)
        # ReduceLROnPlateau(monitor=val_accuracy, patience 3, factor 0.5, min_delta 1e-4,
        # min_lr 1e-5), as Digits (and Keras) count patience
        if val_accuracy > best_monitor + 1e-4:
            best_monitor, wait = val_accuracy, 0
        else:
            wait += 1
            if wait >= 3:
                if lr > 1e-5:
                    lr = max(lr * 0.5, 1e-5)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                wait = 0
    sync(device)
    train_seconds = time.perf_counter() - train_start
    return {"framework": "pytorch", "version": torch.__version__, "device": str(device),
            "math": args.math if device.type == "cuda" else "fp32",
            "threads": torch.get_num_threads(), "rows": int(images.shape[0]),
            "train_rows": int(train_rows.numel()), "val_rows": int(val_rows.numel()),
            "epochs": args.epochs, "batch": args.batch, "augment": not args.no_augment,
            "load_seconds": load_seconds, "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - WALL_START,
            "final_val_accuracy": history[-1]["val_accuracy"] if history else None,
            "best_val_accuracy": max(h["val_accuracy"] for h in history) if history else None,
            "history": history}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Kaggle CSV (plain or .gz)")
    parser.add_argument("--rows", type=int, default=8192,
                        help="rows loaded for the throughput runs (8192)")
    parser.add_argument("--batches", default="86:12,256:4", help="BATCH:STEPS,...")
    parser.add_argument("--infer", default="256:8", help="BATCH:STEPS of the inference run")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--math", choices=["fp32", "tf32"], default="fp32")
    parser.add_argument("--config", choices=CONFIGS, default="eager",
                        help="throughput: eager, channels_last, bf16 (autocast + "
                        "channels_last) or compile (default eager)")
    parser.add_argument("--channels-last", action="store_true",
                        help="NHWC memory format (--recipe; --config channels_last in "
                        "throughput runs)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--net", choices=["reference", "deotte"], default="reference",
                        help="the network (throughput runs): Digits' preset of that name")
    parser.add_argument("--layers", action="store_true",
                        help="one training step layer by layer at each --batches BATCH")
    parser.add_argument("--recipe", action="store_true")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=86)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-split", type=float, default=0.1)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--out", help="write the JSON here instead of stdout")
    args = parser.parse_args()
    if args.channels_last and args.config == "eager":
        args.config = "channels_last"
    if args.recipe:
        common.emit(recipe(args), args.out)
    elif args.layers:
        common.emit(layers(args), args.out)
    else:
        common.emit(throughput_or_error(args), args.out)


if __name__ == "__main__":
    main()
