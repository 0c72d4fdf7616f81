#!/usr/bin/env python3
"""Writes a libFuzzer dictionary of every public suffix the `psl` crate knows.

The crate compiles the Public Suffix List into nested `match` statements over
byte-string labels, one arm per label. A fuzzer spelling suffixes byte by byte
finds each arm as new coverage for hours, so the `referrer` target is given the
suffixes themselves (".s3.amazonaws.com") and reaches the whole table quickly.

Usage: psl_dict.py PATH/TO/psl-X.Y.Z/src/list.rs > referrer.dict
"""
import re
import sys

src = open(sys.argv[1]).read()
fn_re = re.compile(r"^(?:pub\(super\) )?fn (lookup[0-9_]*)\b", re.M)
arm_re = re.compile(r"\[([0-9, ]+)\] => (lookup[0-9_]*)\(")

bodies = {}
starts = [(m.start(), m.group(1)) for m in fn_re.finditer(src)]
for i, (at, name) in enumerate(starts):
    end = starts[i + 1][0] if i + 1 < len(starts) else len(src)
    bodies[name] = [
        (bytes(int(b) for b in m.group(1).split(",")), m.group(2))
        for m in arm_re.finditer(src, at, end)
    ]

suffixes = set()
stack = [(b"", "lookup")]
while stack:
    suffix, fn = stack.pop()
    for label, callee in bodies.get(fn, []):
        s = label + (b"." + suffix if suffix else b"")
        suffixes.add(s)
        stack.append((s, callee))

# libFuzzer keeps at most 16,384 entries of at most 64 bytes.
words = sorted(s for s in suffixes if len(s) < 63)
if len(words) > 16000:
    words = sorted(words, key=lambda s: (s.count(b"."), len(s)))[:16000]


def escape(word):
    return "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else "\\x%02x" % b for b in word
    )


for w in sorted(words):
    print('".%s"' % escape(w))
