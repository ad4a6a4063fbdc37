"""Compiled loops of `spark_jobs.minhash`: code tokens -> shingle hashes, and shingles -> MinHash minima.

Why compiled loops (numba) and not numpy: numpy evaluates an expression one whole array at a time, so the
(permutations x shingles) products of a chunk went through memory three times (multiply, add, minimum), and
tokenising took a dozen passes over the bytes (lowercase, classify, boundaries, prefix sums, gathers). Here one
pass over the bytes makes the shingles, and each shingle updates a document's 256 running minima that stay in
the L1 cache (the inner loop over permutations vectorises). Measured on bench/dedup.py's 170 MB corpus, in one
process, alternating: numpy 6.2-7.2 CPU-s, these kernels about a third of that (docs/near_dedup.md has the
figures of the commit). No maintained MinHash library fits: they take a Python list of tokens per document
(datasketch, rensa) or tokenise in their own way (gaoya), so the per-document Python loop comes back and the
persisted signatures would change.

The results are bit-identical to the definitions in `spark_jobs.minhash` (tests/spark_jobs/test_minhash.py
checks them against a plain-Python reference). All arithmetic is on uint64 and wraps mod 2^64: every constant
and variable is typed uint64 explicitly, since numba would turn a uint64/int64 mix into float64.

numba compiles these on first use and caches the machine code next to this file (`cache=True`), so a new
process (a Spark Python worker) loads them in well under a second.
"""

from __future__ import annotations

import numba
import numpy as np

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_SHORT = np.uint64(0x5851F42D4C957F2D)  # added to a document's one partial shingle when it has < n tokens


@numba.vectorize(["uint64(uint64)"], cache=True, nopython=True)
def mix64(x):
    """splitmix64 finaliser: spreads every input bit over the whole word. A ufunc: numpy code (LSH band keys)
    calls it on arrays, the kernels below on scalars."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@numba.njit(cache=True, nogil=True)
def shingles(data, offsets, lo, hi, ngram, weights, lower, word, base):
    """(hashes uint64, chunk-local doc index int64) of the shingles of documents lo..hi-1, in document order.

    `data` holds every document's UTF-8 bytes, `offsets` their bounds. A token is a maximal run of word bytes
    (`word`, indexed by the raw byte, is true for upper- and lowercase letters alike); its hash is
    mix64(sum_k (lower(byte_k) + 1) * base^k + length). A shingle of tokens t_i .. t_{i+n-1} of one document
    hashes to mix64(sum_j t_{i+j} * weights[j]); a document with 1 .. n-1 tokens gets one partial shingle over
    all of them, plus `_SHORT`.
    """
    start = offsets[lo]
    # A token takes at least one byte and a separator, so a document of L bytes has at most (L + 1) // 2 tokens
    # and as many shingles.
    cap = (offsets[hi] - start) // 2 + (hi - lo) + 1
    out_h = np.empty(cap, dtype=np.uint64)
    out_d = np.empty(cap, dtype=np.int64)
    tok = np.empty(cap, dtype=np.uint64)  # the current document's token hashes (no ring buffer: no modulo)
    k = 0
    for d in range(lo, hi):
        i = offsets[d]
        end = offsets[d + 1]
        m = 0
        while i < end:
            if not word[data[i]]:
                i += 1
                continue
            h = _U0
            p = _U1
            length = _U0
            while i < end and word[data[i]]:
                h += (np.uint64(lower[data[i]]) + _U1) * p
                p *= base
                length += _U1
                i += 1
            tok[m] = mix64(h + length)
            m += 1
        if m >= ngram:
            for t in range(m - ngram + 1):
                acc = _U0
                for j in range(ngram):
                    acc += tok[t + j] * weights[j]
                out_h[k] = mix64(acc)
                out_d[k] = d - lo
                k += 1
        elif m > 0:
            acc = _U0
            for j in range(m):
                acc += tok[j] * weights[j]
            out_h[k] = mix64(acc + _SHORT)
            out_d[k] = d - lo
            k += 1
    return out_h[:k], out_d[:k]


@numba.njit(cache=True, nogil=True)
def permutation_minima(sh, seg, a, b, out):
    """out[d, k] = top 32 bits of min over document d's shingles s of (a[k] * s + b[k]) mod 2^64.

    `sh` holds the shingles grouped by document, document d's being sh[seg[d]:seg[d + 1]]; a document without
    shingles keeps its row of `out` as it was. The minimum of the full 64-bit values has the minimal top 32 bits,
    so only the minima are shifted.
    """
    n_perm = a.shape[0]
    row = np.empty(n_perm, dtype=np.uint64)
    top = np.uint64(32)
    for d in range(seg.shape[0] - 1):
        if seg[d] == seg[d + 1]:
            continue
        row[:] = np.uint64(0xFFFFFFFFFFFFFFFF)
        for i in range(seg[d], seg[d + 1]):
            s = sh[i]
            for k in range(n_perm):  # the running minima stay in L1; this loop vectorises
                v = a[k] * s + b[k]
                if v < row[k]:
                    row[k] = v
        for k in range(n_perm):
            out[d, k] = np.uint32(row[k] >> top)
