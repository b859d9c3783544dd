#!/usr/bin/env python3
"""Writes a validation shard for the script tests: DIR/val_00000.bin holding one
document of N tokens of the tiny model's vocabulary (512), the fixed pattern of
tests/support/val_shard.h, in the shard format of src/data/shard_format.h (written here
from that layout, not by the C++ writer).
    tests/scripts/write_val_shard.py DIR N"""
import os
import struct
import sys

out_dir, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out_dir, exist_ok=True)
# magic, version 1, 2 bytes per token, vocab 512, bos -1, eos 0, pad -1,
# token count, document count 1, tokenizer hash 0; zero-padded to 256 bytes.
header = b"MOELFBTK" + struct.pack("<IIIiiiQQQ", 1, 2, 512, -1, 0, -1, n, 1, 0)
header += b"\0" * (256 - len(header))
tokens = struct.pack("<%dH" % n, *[(i * 37 + 5) % 512 for i in range(n)])
with open(os.path.join(out_dir, "val_00000.bin"), "wb") as f:
    f.write(header + tokens)
