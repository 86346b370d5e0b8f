#!/usr/bin/env python3
"""The Python side of tests/test_export.c: outside tools read what `digits export` wrote.

  onnx    --model M.onnx --test T.csv.gz --probs P.csv --submission S.csv
          onnx.checker (when the onnx package is there) and onnxruntime on every image of T;
          the probabilities must agree with `digits predict --probs` to 1e-5 (max abs)
  numpy   --weights W.safetensors --test ... --probs ... --submission ...
          the network rebuilt in numpy (float64) from the safetensors file (read by the
          safetensors package when installed, else by the small reader below); another
          network than the reference is built from its spec (metadata digits.net): strided
          and "valid" convolutions, batchnorm in inference mode
  torch   --weights W.safetensors --test ... --probs ... --submission ...
          the network rebuilt as a torch.nn.Module, load_state_dict(strict=True), float32
  rewrite --weights W.safetensors --out OUT.safetensors [--alias]
          the tensors written again by the safetensors package (as PyTorch users save them;
          --alias: dense1/dense2 named fc1/fc2), for `digits import`

An ensemble (several members: ONNX metadata digits.members, safetensors tensors named
members.M.NAME) is checked the same way: onnxruntime runs the one graph (its Mean node averages
the members), numpy averages the members' probabilities in float64, torch loads the file into an
nn.ModuleList named `members` (strict) and averages in float32; `digits predict --probs` of the
ensemble is the reference.
numpy and torch must reproduce digits' labels exactly and its probabilities to 1e-5.
Exit status: 0 agreement, 1 disagreement or error, 77 a package is missing (a line says which).
Images: Kaggle CSV (gzip or not), pixel / 255 as float32, NCHW (N, 1, 28, 28).
"""
import argparse
import gzip
import json
import os
import struct
import sys

SKIP = 77
TOLERANCE = 1e-5
NAMES = [f"{layer}.{kind}" for layer in ("conv1", "conv2", "conv3", "conv4", "dense1", "dense2")
         for kind in ("weight", "bias")]
SHAPES = {
    "conv1.weight": (32, 1, 5, 5), "conv1.bias": (32,),
    "conv2.weight": (32, 32, 5, 5), "conv2.bias": (32,),
    "conv3.weight": (64, 32, 3, 3), "conv3.bias": (64,),
    "conv4.weight": (64, 64, 3, 3), "conv4.bias": (64,),
    "dense1.weight": (256, 3136), "dense1.bias": (256,),
    "dense2.weight": (10, 256), "dense2.bias": (10,),
}


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(SKIP)


def fail(why):
    print(f"FAIL: {why}")
    sys.exit(1)


def need_numpy():
    try:
        import numpy
    except ImportError as e:
        skip(f"{sys.executable} has no numpy ({e})")
    return numpy


def open_text(path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gz else open(path, "r")


def load_images(np, path):
    """(N, 1, 28, 28) float32 pixel / 255, as digits assembles a batch."""
    with open_text(path) as f:
        header = f.readline().strip().split(",")
        rows = [line.strip().split(",") for line in f if line.strip()]
    pixels = np.array(rows, dtype=np.int64)
    if header[0] == "label":
        pixels = pixels[:, 1:]
    if pixels.shape[1] != 784 or pixels.min() < 0 or pixels.max() > 255:
        fail(f"{path}: not 784 pixels 0..255 per row")
    return (pixels.astype(np.float32) / np.float32(255)).reshape(-1, 1, 28, 28)


def load_probs(np, path):
    with open(path) as f:
        header = f.readline().strip()
        if header != "ImageId,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9":
            fail(f"{path}: unexpected header {header!r}")
        table = np.array([line.strip().split(",") for line in f], dtype=np.float64)
    return table[:, 1:]


def load_labels(np, path):
    with open(path) as f:
        if f.readline().strip() != "ImageId,Label":
            fail(f"{path}: not a submission")
        return np.array([int(line.strip().split(",")[1]) for line in f])


def read_safetensors(np, path):
    """Tensors and metadata: the safetensors package when installed, else a plain reader."""
    try:
        from safetensors import safe_open
        from safetensors.numpy import load_file
        tensors = load_file(path)
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
        return tensors, metadata, "the safetensors package"
    except ImportError:
        pass
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if info["dtype"] == "I64" and name.endswith(".num_batches_tracked"):
            tensors[name] = np.frombuffer(data[base + begin:base + end], dtype="<i8").reshape(
                info["shape"])
            continue
        if info["dtype"] != "F32":
            fail(f"{name}: dtype {info['dtype']}")
        tensors[name] = np.frombuffer(data[base + begin:base + end], dtype="<f4").reshape(
            info["shape"]).astype(np.float32)
    return tensors, metadata, "a plain reader (no safetensors package)"


def split_members(tensors, metadata):
    """The members' tensors, each under its plain names: one model gives one member; an ensemble
    (every name members.M.NAME, M = 0..K-1) gives K, as metadata digits.members says."""
    if not any(name.startswith("members.") for name in tensors):
        if "digits.members" in metadata:
            fail(f"one model, yet metadata digits.members = {metadata['digits.members']!r}")
        return [tensors]
    members = {}
    for name, value in tensors.items():
        prefix, index, rest = name.split(".", 2)
        if prefix != "members" or not index.isdigit():
            fail(f"tensor {name!r} in an ensemble file")
        members.setdefault(int(index), {})[rest] = value
    count = len(members)
    if sorted(members) != list(range(count)):
        fail(f"member indices {sorted(members)}")
    if metadata.get("digits.members") != str(count):
        fail(f"{count} members, metadata digits.members = {metadata.get('digits.members')!r}")
    return [members[m] for m in range(count)]


def check_tensors(tensors, metadata):
    if sorted(tensors) != sorted(NAMES):
        fail(f"tensor names {sorted(tensors)}, expected {sorted(NAMES)}")
    for name in NAMES:
        if tuple(tensors[name].shape) != SHAPES[name]:
            fail(f"{name}: shape {tuple(tensors[name].shape)}, expected {SHAPES[name]}")
        if str(tensors[name].dtype) not in ("float32", "torch.float32"):
            fail(f"{name}: dtype {tensors[name].dtype}")
    if metadata.get("format") != "pt" or "digits.architecture" not in metadata:
        fail(f"metadata without format=pt and digits.architecture: {metadata}")


def compare(np, what, probs, labels, digits_probs, digits_labels):
    if probs.shape != digits_probs.shape:
        fail(f"{what}: {probs.shape} probabilities, digits wrote {digits_probs.shape}")
    diff = float(np.abs(probs.astype(np.float64) - digits_probs).max())
    same = int((labels == digits_labels).sum())
    print(f"{what}: {len(labels)} images, labels equal to digits predict: {same}/{len(labels)}, "
          f"max abs difference of the probabilities vs digits predict --probs: {diff:.3g} "
          f"(bound {TOLERANCE:g})")
    return diff, same


def mode_onnx(args):
    np = need_numpy()
    try:
        import onnxruntime as ort
    except ImportError as e:
        skip(f"{sys.executable} has no onnxruntime ({e})")
    try:
        import onnx
        model = onnx.load(args.model)
        onnx.checker.check_model(model, full_check=True)
        opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        dims = [d.dim_param or d.dim_value
                for d in model.graph.input[0].type.tensor_type.shape.dim]
        ops = [n.op_type for n in model.graph.node]
        meta = {p.key: p.value for p in model.metadata_props}
        members = int(meta.get("digits.members", "1"))
        print(f"onnx {onnx.__version__} checker (full_check): ok; ir_version {model.ir_version}, "
              f"opsets {opsets}, input {model.graph.input[0].name} {dims}, "
              f"{len(model.graph.initializer)} initializers, metadata {sorted(meta)}, ops "
              f"{ops if members == 1 else ops[:len(ops) // members] + ['...', ops[-1]]}")
        if dims != ["N", 1, 28, 28]:
            fail(f"input dims {dims}, expected ['N', 1, 28, 28]")
        if [o.name for o in model.graph.output] != ["probabilities"]:
            fail(f"outputs {[o.name for o in model.graph.output]}")
        # a weight and a bias per convolution (NcK) and dense layer (N) of the network's spec
        # (metadata digits.net, written for every network but the reference: 6 such layers)
        # and four per batchnorm layer (B: scale, bias, running mean and variance)
        spec = meta.get("digits.net")
        tokens = [] if spec is None else spec.upper().split("-")
        weighted = 6 if spec is None else sum(1 for t in tokens if t[:1].isdigit())
        initializers = 2 * weighted + 4 * tokens.count("B")
        if ops.count("BatchNormalization") != tokens.count("B") * members:
            fail(f"{ops.count('BatchNormalization')} BatchNormalization nodes for "
                 f"{tokens.count('B')} batchnorm layers x {members}")
        if ops.count("Softmax") != members or len(model.graph.initializer) != initializers * members:
            fail(f"{members} members, {ops.count('Softmax')} Softmax nodes, "
                 f"{len(model.graph.initializer)} initializers")
        if members > 1 and (ops[-1] != "Mean" or ops.count("Mean") != 1 or
                            len(model.graph.node[-1].input) != members):
            fail(f"an ensemble of {members} whose last node is not one Mean of the members")
        if members == 1 and "Mean" in ops:
            fail("one model with a Mean node")
    except ImportError:
        print("onnx package not installed: no checker run")
    images = load_images(np, args.test)
    digits_probs = load_probs(np, args.probs)
    digits_labels = load_labels(np, args.submission)
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    inputs = [(i.name, i.shape) for i in session.get_inputs()]
    outputs = [(o.name, o.shape) for o in session.get_outputs()]
    print(f"onnxruntime {ort.__version__}: inputs {inputs}, outputs {outputs}")
    probs = session.run(None, {"input": images})[0]
    # the batch dimension is dynamic: a batch of 7 gives the same rows
    small = session.run(None, {"input": images[3:10]})[0]
    if small.shape != (7, 10) or float(np.abs(small - probs[3:10]).max()) > 1e-6:
        fail("a batch of 7 images does not give the rows of the whole batch")
    sums = float(np.abs(probs.sum(axis=1) - 1).max())
    if sums > 1e-5:
        fail(f"probabilities do not sum to 1 (off by {sums:.3g})")
    diff, _ = compare(np, f"onnxruntime ({args.model})", probs, probs.argmax(axis=1),
                      digits_probs, digits_labels)
    if not diff <= TOLERANCE:
        fail(f"max abs difference {diff:.3g} > {TOLERANCE:g}")
    print("onnx: ok")


def conv_same(np, x, w, b):
    """x (N, C, H, W), w (O, C, k, k): stride 1, zero padding k // 2, as Digits' conv; one
    matrix product over the (N*H*W, C*k*k) patches."""
    k = w.shape[2]
    p = k // 2
    n, c, h, width = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # N C H W k k
    cols = patches.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * width, c * k * k)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(n, h, width, -1).transpose(0, 3, 1, 2)


def conv_any(np, x, w, b, stride, valid):
    """x (N, C, H, W), w (O, C, k, k): zero padding k // 2 ("same") or 0 ("valid") each side,
    stride 1 or 2, output side (H + 2 pad - k) // stride + 1, as Digits' conv."""
    k = w.shape[2]
    p = 0 if valid else k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    patches = patches[:, :, ::stride, ::stride]  # N C OH OW k k
    n, c, oh, ow = patches.shape[:4]
    cols = patches.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


BN_EPSILON = 1e-3  # Keras' BatchNormalization default, as Digits states it


def spec_forward(np, spec, t, x):
    """The network of a --net spec (metadata digits.net) in numpy, in inference mode: dropout
    the identity, batchnorm with its running statistics."""
    relu = lambda v: np.maximum(v, 0)
    counts = {}
    tokens = spec.upper().split("-")

    def name(kind):
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    for i, tok in enumerate(tokens):
        if tok == "B":
            n = name("batchnorm")
            shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
            scale = t[f"{n}.weight"] / np.sqrt(t[f"{n}.running_var"] + BN_EPSILON)
            x = (x - t[f"{n}.running_mean"].reshape(shape)) * scale.reshape(shape) + \
                t[f"{n}.bias"].reshape(shape)
        elif tok == "P2":
            x = maxpool(np, x)
        elif tok.startswith("D"):
            pass
        elif tok == "F":
            x = x.reshape(x.shape[0], -1)
        elif tok == "G":
            x = x.mean(axis=(2, 3))
        elif "C" in tok:
            n = name("conv")
            rest = tok.split("C", 1)[1]
            x = conv_any(np, x, t[f"{n}.weight"], t[f"{n}.bias"], 2 if "S2" in rest else 1,
                         "V" in rest)
            if not rest.endswith("L"):
                x = relu(x)
        else:
            n = name("dense")
            x = x @ t[f"{n}.weight"].T + t[f"{n}.bias"]
            if not tok.endswith("L") and i != len(tokens) - 1:
                x = relu(x)
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def maxpool(np, x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def what_of(members):
    return "" if len(members) == 1 else f", ensemble of {len(members)}"


def numpy_forward(np, t, x):
    relu = lambda v: np.maximum(v, 0)
    x = relu(conv_same(np, x, t["conv1.weight"], t["conv1.bias"]))
    x = relu(conv_same(np, x, t["conv2.weight"], t["conv2.bias"]))
    x = maxpool(np, x)
    x = relu(conv_same(np, x, t["conv3.weight"], t["conv3.bias"]))
    x = relu(conv_same(np, x, t["conv4.weight"], t["conv4.bias"]))
    x = maxpool(np, x)
    x = x.reshape(x.shape[0], -1)  # NCHW order, as torch.flatten(x, 1)
    x = relu(x @ t["dense1.weight"].T + t["dense1.bias"])
    z = x @ t["dense2.weight"].T + t["dense2.bias"]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def mode_numpy(args):
    np = need_numpy()
    tensors, metadata, reader = read_safetensors(np, args.weights)
    print(f"numpy {np.__version__}: {args.weights} read by {reader}; metadata keys "
          f"{sorted(metadata)}")
    members = split_members(tensors, metadata)
    images = load_images(np, args.test).astype(np.float64)
    probs = np.zeros((len(images), 10))
    spec = metadata.get("digits.net")
    for member in members:  # in member order, in float64, as digits predict
        if spec is None:
            check_tensors(member, metadata)
        t = {name: v.astype(np.float64) for name, v in member.items()
             if not name.endswith(".num_batches_tracked")}
        forward = (lambda v: numpy_forward(np, t, v)) if spec is None else \
            (lambda v: spec_forward(np, spec, t, v))
        probs += np.concatenate([forward(images[i:i + 50]) for i in range(0, len(images), 50)])
    probs /= len(members)
    diff, same = compare(np, f"numpy (float64{what_of(members)})", probs, probs.argmax(axis=1),
                         load_probs(np, args.probs), load_labels(np, args.submission))
    if same != len(probs) or not diff <= TOLERANCE:
        fail("numpy does not reproduce digits predict")
    print("numpy: ok")


def mode_torch(args):
    np = need_numpy()
    try:
        import torch
        from torch import nn
    except ImportError as e:
        skip(f"{sys.executable} has no torch ({e})")
    torch.set_num_threads(os.cpu_count() or 1)

    class Digits(nn.Module):
        """The reference network in PyTorch (the Keras kernel's): names as digits exports."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
            self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
            self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
            self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
            self.dense1 = nn.Linear(3136, 256)
            self.dense2 = nn.Linear(256, 10)
            self.drop1, self.drop2, self.drop3 = nn.Dropout(0.25), nn.Dropout(0.25), nn.Dropout(0.5)

        def forward(self, x):
            x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            x = self.drop1(nn.functional.max_pool2d(x, 2))
            x = torch.relu(self.conv4(torch.relu(self.conv3(x))))
            x = self.drop2(nn.functional.max_pool2d(x, 2))
            x = self.drop3(torch.relu(self.dense1(torch.flatten(x, 1))))
            return torch.softmax(self.dense2(x), dim=1)

    class Ensemble(nn.Module):
        """Several networks in an nn.ModuleList named members: its state_dict names are
        members.M.conv1.weight, ..., as digits exports an ensemble."""

        def __init__(self, count):
            super().__init__()
            self.members = nn.ModuleList([Digits() for _ in range(count)])

        def forward(self, x):
            return torch.stack([member(x) for member in self.members]).mean(dim=0)

    tensors, metadata, reader = read_safetensors(np, args.weights)
    print(f"torch {torch.__version__}: {args.weights} read by {reader}")
    members = split_members(tensors, metadata)
    for member in members:
        check_tensors(member, metadata)
    net = Digits() if len(members) == 1 else Ensemble(len(members))
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()},
                        strict=True)
    net.eval()
    with torch.no_grad():
        probs = net(torch.from_numpy(load_images(np, args.test))).numpy()
    diff, same = compare(np, f"torch (float32{what_of(members)})", probs, probs.argmax(axis=1),
                         load_probs(np, args.probs), load_labels(np, args.submission))
    if same != len(probs) or not diff <= TOLERANCE:
        fail("torch does not reproduce digits predict")
    print("torch: ok")


def mode_rewrite(args):
    np = need_numpy()
    try:
        from safetensors.numpy import load_file, save_file
    except ImportError as e:
        skip(f"{sys.executable} has no safetensors package ({e})")
    tensors = load_file(args.weights)
    if args.alias:
        tensors = {k.replace("dense", "fc"): v for k, v in tensors.items()}
    save_file(tensors, args.out, metadata={"format": "pt"})
    print(f"rewrote {args.weights} as {args.out} with the safetensors package "
          f"({sorted(tensors)})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["onnx", "numpy", "torch", "rewrite"])
    parser.add_argument("--model")
    parser.add_argument("--weights")
    parser.add_argument("--test")
    parser.add_argument("--probs")
    parser.add_argument("--submission")
    parser.add_argument("--out")
    parser.add_argument("--alias", action="store_true")
    args = parser.parse_args()
    {"onnx": mode_onnx, "numpy": mode_numpy, "torch": mode_torch,
     "rewrite": mode_rewrite}[args.mode](args)


if __name__ == "__main__":
    main()
