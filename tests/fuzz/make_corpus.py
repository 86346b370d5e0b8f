#!/usr/bin/env python3
"""Writes the small seed inputs committed in tests/fuzz/corpus/<target>/ (except picture/,
which `fuzz_make_seeds --pictures` writes with libpng / libjpeg):
    tests/fuzz/make_corpus.py BUILD/seeds     (BUILD/seeds: what `fuzz_make_seeds` wrote)
The large valid model / checkpoint / safetensors files are not committed: fuzz_make_seeds
writes them at run time. Re-running this rewrites the same files (deterministic)."""
import gzip, os, struct, sys, zlib

here = os.path.dirname(os.path.abspath(__file__))
seeds = sys.argv[1] if len(sys.argv) > 1 else None


def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def gz(data, name=None, comment=None, extra=None, hcrc=False, mtime=0):
    flg = (2 if hcrc else 0) | (4 if extra is not None else 0) | (8 if name else 0) | (16 if comment else 0)
    h = b"\x1f\x8b\x08" + bytes([flg]) + struct.pack("<I", mtime) + b"\x00\x03"
    if extra is not None:
        h += struct.pack("<H", len(extra)) + extra
    if name:
        h += name + b"\0"
    if comment:
        h += comment + b"\0"
    if hcrc:
        h += struct.pack("<H", zlib.crc32(h) & 0xFFFF)
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return h + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


# ---- json: the parser alone ----
J = {
    "object": '{"a": 1, "b": [true, false, null], "c": {"d": "e"}}',
    "safetensors-like": '{"__metadata__":{"format":"pt"},"conv1.bias":{"dtype":"F32","shape":[32],"data_offsets":[0,128]}}',
    "numbers": '[0, -0, 1, 18446744073709551615, 18446744073709551616, 1.5, -2e10, 1E+2, 0.0e-0]',
    "escapes": '["\\"\\\\\\/\\b\\f\\n\\r\\t", "\\u00e9\\u4e2d", "\\ud83d\\ude00", "\\u0000x"]',
    "utf8": '["caf\u00e9", "\u4e2d\u6587", "\U0001F600"]',
    "whitespace": ' \t\r\n {} \n',
    "empty-array": '[]',
    "string": '"just a string"',
    "depth-16": '[' * 16 + ']' * 16,
    "depth-17": '[' * 17 + ']' * 17,
    "bad-lone-surrogate": '["\\ud800"]',
    "bad-trailing-comma": '{"a": 1,}',
    "bad-leading-zero": '[01]',
    # issue 19: duplicate keys were accepted (the last one won)
    "regress-duplicate-keys": '{"a": 1, "b": 2, "a": 3}',
    "regress-duplicate-escaped-key": '{"a": 1, "\\u0061": 2}',
}
for k, v in J.items():
    put("json", k, v)
put("json", "bad-utf8", b'["\xc3\x28", "\xed\xa0\x80", "\xf4\x90\x80\x80"]')
put("json", "bad-control", b'["a\x01b"]')
# issue 19: a header with very many keys (values, not depth): 3000 members, small on disk
put("json", "regress-many-keys", "{" + ",".join('"k%d":%d' % (i, i) for i in range(3000)) + "}")

# ---- data: CSV (train / test layouts), IDX, gzip ----
header_train = "label," + ",".join("pixel%d" % i for i in range(784)) + "\n"
header_test = ",".join("pixel%d" % i for i in range(784)) + "\n"


def row(seed):
    return ",".join(str((i * 37 + seed * 11) % 256 if (i + seed) % 5 == 0 else 0) for i in range(784))


train = header_train + "".join("%d,%s\n" % (r % 10, row(r)) for r in range(3))
test = header_test + "".join(row(r) + "\n" for r in range(2))
put("data", "train.csv", train)
put("data", "test.csv", test)
put("data", "train-crlf.csv", train.replace("\n", "\r\n"))
put("data", "train-no-final-newline.csv", train.rstrip("\n"))
put("data", "header-only.csv", header_train)
put("data", "bad-label.csv", header_train + "10," + row(1) + "\n")
put("data", "bad-pixel.csv", header_train + "3," + row(1).replace("0", "256", 1) + "\n")
put("data", "short-row.csv", header_train + "3,0,0,0\n")
put("data", "train.csv.gz", gz(train.encode()))
put("data", "test.csv.gz-name-comment-extra-hcrc",
    gz(test.encode(), name=b"test.csv", comment=b"c", extra=b"AB\x02\x00xy", hcrc=True))
put("data", "two-members.csv.gz", gz(train[:2000].encode()) + gz(train[2000:].encode()))
put("data", "bad-gzip-crc.gz", gz(train.encode())[:-8] + b"\0\0\0\0" + gz(train.encode())[-4:])
images = struct.pack(">IIII", 0x00000803, 3, 28, 28) + bytes((i * 7) % 256 for i in range(3 * 784))
labels = struct.pack(">II", 0x00000801, 3) + bytes([1, 7, 9])
put("data", "idx-images", images)
put("data", "idx-images+labels", images + labels)
put("data", "idx-images+bad-labels", images + struct.pack(">II", 0x00000801, 3) + bytes([1, 12, 9]))
put("data", "idx-images.gz", gz(images))
put("data", "idx-truncated", images[:16 + 784 + 100])
put("data", "idx-other-size", struct.pack(">IIII", 0x00000803, 1, 14, 14) + bytes(196))
put("data", "idx-labels-alone", labels)
put("data", "empty", b"")

# ---- model / checkpoint: small inputs (the valid ones come from fuzz_make_seeds) ----
def crc_fixed(b):
    return b + struct.pack("<I", zlib.crc32(b))


put("model", "magic-only", b"DGTMODEL")
put("model", "bad-version", crc_fixed(b"DGTMODEL" + struct.pack("<II", 3, 1)))
put("model", "zero-layers", crc_fixed(b"DGTMODEL" + struct.pack("<II", 1, 0) + struct.pack("<QI", 0, 0)))
put("model", "huge-settings-length",
    crc_fixed(b"DGTMODEL" + struct.pack("<II", 1, 1) + bytes(20) + struct.pack("<QI", 1, 0xFFFFFFF0) + bytes(4)))
put("checkpoint", "magic-only", b"DGTCKPT\0")
put("checkpoint", "a-model-file", crc_fixed(b"DGTMODEL" + struct.pack("<II", 1, 1)))
put("checkpoint", "huge-counts",
    crc_fixed(b"DGTCKPT\0" + struct.pack("<II", 1, 1) + bytes(20) + struct.pack("<QII", 1 << 40, 3, 10) + b"epochs=2\n\n"))

# ---- safetensors: headers (the complete files come from fuzz_make_seeds) ----
def st(header, data=b""):
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "empty-object", st("{}"))
put("safetensors", "one-tensor", st('{"conv1.bias":{"dtype":"F32","shape":[32],"data_offsets":[0,128]}}', bytes(128)))
put("safetensors", "members", st('{"members.0.conv1.bias":{"dtype":"F32","shape":[32],"data_offsets":[0,128]},'
                                  '"__metadata__":{"digits.members":"1"}}', bytes(128)))
put("safetensors", "bad-dtype", st('{"conv1.bias":{"dtype":"F16","shape":[32],"data_offsets":[0,64]}}', bytes(64)))
put("safetensors", "length-beyond-end", struct.pack("<Q", 1 << 40) + b"{}")
put("safetensors", "regress-duplicate-keys",
    st('{"conv1.bias":{"dtype":"F32","shape":[32],"data_offsets":[0,128]},'
       '"conv1.bias":{"dtype":"F32","shape":[32],"data_offsets":[0,128]}}', bytes(128)))
put("safetensors", "regress-many-keys",
    st("{" + ",".join('"t%d":{"dtype":"F32","shape":[1],"data_offsets":[%d,%d]}' % (i, 4 * i, 4 * i + 4)
                      for i in range(2000)) + "}", bytes(8000)))
if seeds:
    for name, target in (("valid", "header-of-valid"), ("ensemble-2", "header-of-ensemble-2")):
        with open(os.path.join(seeds, "safetensors", name), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            f.seek(0)
            put("safetensors", target, f.read(8 + n))  # the header, no tensor data
    with open(os.path.join(seeds, "model", "valid-v1"), "rb") as f:
        put("model", "head-of-valid-v1", f.read(1024))
    with open(os.path.join(seeds, "checkpoint", "valid-3-blocks"), "rb") as f:
        put("checkpoint", "head-of-valid-3-blocks", f.read(4096))
