#!/usr/bin/env python3
"""gen_nfc_vectors.py - writes tests/fixtures/nfc_vectors.txt for tests/test_nfc.c.

Each line is "<input hex> <expected hex>" (UTF-8 bytes; an empty string is
"-"); '#' lines are comments. The expectation is Python's
unicodedata.normalize('NFC', ...) (its Unicode version is in the header line;
keep it equal to src/tokenizer/nfc_tables.h's). Inputs with invalid UTF-8
bytes expect those bytes copied through, each acting as a starter that
composes with nothing: NFC of each valid piece, joined by the bytes.

Run from the repository root:  python3 tools/gen_nfc_vectors.py
"""
import random
import sys
import unicodedata

NFC = lambda s: unicodedata.normalize("NFC", s)

HAND = [
    "", "hello, world", "caf\u00e9", "cafe\u0301", "e\u0301", "\u00e9",
    "a\u0301\u0323", "a\u0323\u0301", "a\u0323\u0302", "a\u0302\u0323", "\u1ea5\u0323",
    "o\u0308\u0304", "o\u0304\u0308", "u\u031b\u0301\u0323", "u\u0301\u0323\u031b",
    "a\u0301\u0301", "a\u0305\u0301", "a\u0315\u0301", "\u0301a", "\u0301\u0301", "\u0327c\u0301",
    "\u212b", "A\u030a", "\u2126", "\u212a", "\u0340", "\u0341", "\u0343", "\u0374", "\u037e", "\u0387",
    "e\u0340", "\u1f71", "\u1fbb", "\u2000", "\u2001", "\u2329", "\u232a", "\uf900", "\uf9ff", "\ufa10",
    "\U0002f800", "\U0002fa1d",
    "\u0958", "\u0915\u093c", "\u095f", "\u09dc", "\u0a33", "\u0b5c", "\u0f43", "\u0f73", "\u0f75",
    "\u0f81", "\u0344", "\u0308\u0301", "\ufb1d", "\u05d9\u05b4", "\ufb2a", "\ufb4e", "\u2adc",
    "\u2add\u0338", "\U0001d15e", "\U0001d15f", "\U0001d1bb", "\U0001d160",
    "\u0b47\u0b3e", "\u0b4b", "\u1025\u102e", "\u0627\u0653", "\u0622", "\u09c7\u09be", "\u0cc6\u0cc2\u0cd5",
    "\u0dd9\u0dcf\u0dca", "\U00011099\U000110ba", "\U00011131\U00011127", "\U00011347\U0001133e",
    "\ud55c\uad6d\uc5b4", "\u1112\u1161\u11ab", "\u1112\u1161", "\u1100\u1161\u11a8", "\uac00\u11a8",
    "\uac01\u11a8", "\u1100\u1100\u1161", "\u1100\u0301\u1161", "\u1161\u11a8", "\u11a7", "\uac00\u11a7",
    "\uac00\u11c2", "\uac00\u11c3", "\u1113\u1161", "\u1100\u1176", "\u1100\u1175\u11c2",
    "\u1100\u1161\u0301\u11a8", "\ud7a3", "\ud7a3\u11a8", "\u3131\u314f",
    "\u65e5\u672c\u8a9e", "\u4f60\u597d\uff0c\u4e16\u754c", "\U0001f600\U0001f44d\U0001f3fd",
    "\u00c5\u00f1\u00fc\u00df", "\u0041\u030a\u0301", "\u1e9b\u0323", "\u0073\u0323\u0307",
    "\u0064\u0307\u0323", "\u0071\u0307\u0323", "\u1e0b\u0323", "\u0045\u0300\u0300",
    "\u03b1\u0313\u0300\u0345", "\u1f82", "\u03b1\u0345\u0313\u0300", "\u03b9\u0308\u0301", "\u0390",
    "\u0399\u0308\u0301", "\u0418\u0306", "\u0419", "\u0435\u0308", "\u3099", "\u304b\u3099", "\u304c",
    "\u30cf\u309a", "\uff76\uff9e", "\u0061\u0300\u0062\u0301\u0063\u0302",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e",
    "\u0300", "\u05b0\u05b1\u05b2", "\u05b2\u05b1\u05b0", "\u0e40\u0e01\u0e48\u0e32",
    "\ufdfa", "\ufb01", "\u00bd", "\u2460", "\u1e0a\u0323", "\u1e0c\u0307", "\u0044\u0307\u0323",
    "\u0044\u0323\u0307", "\u01c4", "\u0149", "\u0f77", "\u0f79", "\u0fb5", "\u0f40\u0fb5",
    "\U0001d15e\U0001d165", "\U000110ab", "\U00011099", "\u0928\u093c", "\u0929",
]

INVALID = [  # (pieces, with bytes objects for invalid bytes)
    ["a", b"\xff", "\u0301"], ["e", b"\x80", "\u0301b"], [b"\xc3"], [b"\xc3", "\u0301"],
    ["\u1100", b"\xfe", "\u1161"], ["caf", b"\xe6\x97", " x"], [b"\xed\xa0\x80"], [b"\xf4\x90\x80\x80"],
    [b"\xc0\xaf"], ["\u212b", b"\xff", "\u212b"], ["A", b"\xe0\x80", "\u030a"], [b"\xf0\x9f\x98", "e\u0301"],
    ["\u0301", b"\xc2", "\u0323"], [b"\xff\xfe\xfd"],
]


def hexs(b):
    return b.hex() if b else "-"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/nfc_vectors.txt"
    rng = random.Random(20260415)
    cases = []
    for s in HAND:
        cases.append((s.encode(), NFC(s).encode()))
    for pieces in INVALID:
        inp = b"".join(p if isinstance(p, bytes) else p.encode() for p in pieces)
        exp = b"".join(p if isinstance(p, bytes) else NFC(p).encode() for p in pieces)
        cases.append((inp, exp))
    # every character with a canonical decomposition, alone, after "x" and before a mark
    decomp = [cp for cp in range(0x110000)
              if unicodedata.decomposition(chr(cp)) and not unicodedata.decomposition(chr(cp)).startswith("<")]
    for cp in decomp:
        cases.append((chr(cp).encode(), NFC(chr(cp)).encode()))
        nfd = unicodedata.normalize("NFD", chr(cp))
        if nfd != chr(cp):
            cases.append((nfd.encode(), NFC(nfd).encode()))
    # random strings over a pool of interesting code points
    marks = [cp for cp in range(0x300, 0x2000) if unicodedata.combining(chr(cp))][:120] + \
            [0x3099, 0x309A, 0x0345, 0x0338, 0x05B4, 0x093C, 0x0F71, 0x0F72, 0x0F80, 0x1D165, 0x1D16E]
    bases = [ord(c) for c in "aeiouAEIOUcnsyzCNSYZ "] + [0x3B1, 0x3B9, 0x3C5, 0x3C9, 0x397, 0x418, 0x435,
                                                          0x627, 0x648, 0x64A, 0x915, 0x928, 0x9C7, 0xB47,
                                                          0x1025, 0x304B, 0x30CF, 0x5D9, 0x5E9, 0x0DD9]
    jamo = list(range(0x1100, 0x1114)) + list(range(0x1161, 0x1177)) + list(range(0x11A7, 0x11C4))
    special = [0x212B, 0x2126, 0x0958, 0x0344, 0x0F73, 0x1F82, 0xAC00, 0xAC01, 0xD7A3, 0x0B3E, 0x102E,
               0x0653, 0x09BE, 0x0CD5, 0x0DCF, 0x0DCA, 0x1D15E, 0x00C5, 0x00E9, 0x1E0B, 0x0340, 0x2ADC]
    pool = bases + marks + jamo + special
    for _ in range(600):
        n = rng.randint(1, 12)
        s = "".join(chr(rng.choice(pool)) for _ in range(n))
        cases.append((s.encode(), NFC(s).encode()))
    for _ in range(200):
        n = rng.randint(1, 8)
        s = "".join(chr(rng.choice(jamo + [0xAC00 + 28 * rng.randrange(399), 0x1100, 0x1161, 0x11A8]))
                    for _ in range(n))
        cases.append((s.encode(), NFC(s).encode()))
    with open(path, "w") as f:
        f.write("# GENERATED by tools/gen_nfc_vectors.py; do not edit. Unicode %s (Python %s unicodedata).\n" %
                (unicodedata.unidata_version, sys.version.split()[0]))
        f.write("# <input UTF-8 hex> <NFC hex>; '-' is the empty string\n")
        for a, b in cases:
            f.write("%s %s\n" % (hexs(a), hexs(b)))
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
