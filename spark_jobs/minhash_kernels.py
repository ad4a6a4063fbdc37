"""Compiled loops of `spark_jobs.minhash`: code tokens -> shingle hashes -> MinHash signatures, and shingle sets.

Why compiled loops (numba) and not numpy: numpy evaluates an expression one whole array at a time, so the
(permutations x shingles) products of a chunk went through memory three times (multiply, add, minimum), and
tokenising took a dozen passes over the bytes (lowercase, classify, boundaries, prefix sums, gathers). Here
`signatures` takes one document at a time: one pass over its bytes makes the shingles, a small hash set skips
repeats, and each new shingle updates the document's 256 running minima, which stay in the L1 cache (the loop
over permutations vectorises, on 32-bit lanes: `_minima`). No maintained MinHash library fits: they take a
Python list of tokens per document (datasketch, rensa) or tokenise in their own way (gaoya), so the
per-document Python loop comes back and the persisted signatures would change. Figures: docs/near_dedup.md.

The results are bit-identical to the definitions in `spark_jobs.minhash` (tests/spark_jobs/test_minhash.py
checks them against a plain-Python reference and against values pinned from the first release). Arithmetic is
on uint64 (uint32 in `_minima`) and wraps: every constant and variable is typed explicitly, since numba would
turn a uint64/int64 mix into float64.

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
def document_shingles(data, start, end, ngram, weights, value, base, tok, out):
    """Writes the shingle hashes of the document data[start:end] to out[0:k] and returns k.

    A token is a maximal run of word bytes, those with a nonzero `value` (indexed by the raw byte: the lowercased
    byte plus one, the same for upper- and lowercase letters); its hash is mix64(sum_k value(byte_k) * base^k +
    length). A shingle of tokens t_i .. t_{i+n-1} hashes to mix64(sum_j t_{i+j} * weights[j]); a document with
    1 .. n-1 tokens gets one partial shingle over all of them, plus `_SHORT`. `tok` and `out` need room for
    (end - start + 1) // 2 + 1 values: a token takes at least one byte and a separator. One table look-up per byte
    (earlier: a class table and a lowercase table, ~15% slower).
    """
    m = 0
    i = start
    while i < end:
        v = value[data[i]]
        if v == _U0:
            i += 1
            continue
        first = i
        h = v
        p = base
        i += 1
        while i < end:
            v = value[data[i]]
            if v == _U0:
                break
            h += v * p
            p *= base
            i += 1
        tok[m] = mix64(h + np.uint64(i - first))
        m += 1
    k = 0
    if m >= ngram:
        for t in range(m - ngram + 1):
            acc = _U0
            for j in range(ngram):
                acc += tok[t + j] * weights[j]
            out[k] = mix64(acc)
            k += 1
    elif m > 0:
        acc = _U0
        for j in range(m):
            acc += tok[j] * weights[j]
        out[k] = mix64(acc + _SHORT)
        k += 1
    return k


@numba.njit(cache=True, nogil=True)
def _longest(offsets, lo, hi):
    longest = 0
    for d in range(lo, hi):
        longest = max(longest, offsets[d + 1] - offsets[d])
    return longest


@numba.njit(cache=True, nogil=True)
def shingles(data, offsets, lo, hi, ngram, weights, value, base):
    """(hashes uint64, chunk-local doc index int64) of the shingles of documents lo..hi-1, in document order
    (`document_shingles` of each; `data` holds every document's UTF-8 bytes, `offsets` their bounds)."""
    cap = (offsets[hi] - offsets[lo]) // 2 + (hi - lo) + 1
    out_h = np.empty(cap, dtype=np.uint64)
    out_d = np.empty(cap, dtype=np.int64)
    room = _longest(offsets, lo, hi) // 2 + 2
    tok = np.empty(room, dtype=np.uint64)
    k = 0
    for d in range(lo, hi):
        n = document_shingles(data, offsets[d], offsets[d + 1], ngram, weights, value, base, tok, out_h[k:])
        out_d[k:k + n] = d - lo
        k += n
    return out_h[:k], out_d[:k]


@numba.njit(cache=True, nogil=True)
def signatures(data, offsets, lo, hi, ngram, weights, value, base, a_lo, a_hi, b_lo, b_hi, sig, n_shingles):
    """MinHash signatures of documents lo..hi-1 into sig[d] and their distinct shingle counts into n_shingles[d].

    One document at a time: its shingle hashes (`document_shingles`), cut to their top 48 bits; the first
    occurrence of each (code repeats itself a lot: 20-40% of a file's shingles are repeats) goes through
    `_minima`, repeats are skipped by an open-addressing hash set. Everything a document needs stays in a few KB
    of cache; the earlier form hashed a whole chunk, sorted it in one numpy call and took the minima in a second
    pass, moving every shingle through memory three times. A document without shingles keeps its row of `sig`.
    """
    room = _longest(offsets, lo, hi) // 2 + 2
    tok = np.empty(room, dtype=np.uint64)
    buf = np.empty(room, dtype=np.uint64)
    size = 16
    while size < 2 * room:
        size *= 2
    table = np.empty(size, dtype=np.uint64)
    empty = np.uint64(0xFFFFFFFFFFFFFFFF)  # never a 48-bit value
    row = np.empty(a_lo.shape[0], dtype=np.uint32)
    cut = np.uint64(16)
    for d in range(lo, hi):
        k = document_shingles(data, offsets[d], offsets[d + 1], ngram, weights, value, base, tok, buf)
        if k == 0:
            n_shingles[d] = 0
            continue
        slots = 16
        while slots < 2 * k:  # at most half full: short probe runs
            slots *= 2
        mask = np.uint64(slots - 1)
        table[:slots] = empty
        n = 0
        for i in range(k):
            s = buf[i] >> cut
            j = mix64(s) & mask
            while table[j] != empty and table[j] != s:
                j = (j + np.uint64(1)) & mask
            if table[j] == empty:
                table[j] = s
                buf[n] = s  # the distinct values, in first-seen order (n <= i: never overwrites unread ones)
                n += 1
        n_shingles[d] = n
        _minima(buf[:n], a_lo, a_hi, b_lo, b_hi, row)
        sig[d, :] = row


@numba.njit(cache=True, nogil=True)
def _minima(sh, a_lo, a_hi, b_lo, b_hi, row):
    """row[k] = top 32 bits of min over the 48-bit shingle hashes s in `sh` of (a_k * s + b_k) mod 2^64.

    a_k and b_k come split into 32-bit halves (`a_lo`, `a_hi`, `b_lo`, `b_hi`, uint32 arrays). Only the top 32
    bits are ever kept, and the minimum of the full 64-bit values has the minimal top 32 bits, so the minima are
    taken over the top halves directly. With s = s_hi * 2^32 + s_lo (s_hi < 2^16):

        top32((a * s + b) mod 2^64) = hi32(a_lo * s_lo + b_lo) + a_hi * s_lo + a_lo * s_hi + b_hi   (mod 2^32)

    (a_lo * s_lo + b_lo < 2^64 never overflows). That is one 32 x 32 -> 64-bit multiply and two 32-bit ones per
    permutation, all of which AVX2 has as vector instructions, where a 64-bit multiply and an unsigned 64-bit
    compare are emulated with several instructions each. Bit-identical to the 64-bit form
    (tests/spark_jobs/test_minhash.py) at 3-8x less CPU (docs/near_dedup.md).
    """
    low32 = np.uint64(0xFFFFFFFF)
    top = np.uint64(32)
    row[:] = np.uint32(0xFFFFFFFF)
    for i in range(sh.shape[0]):
        s = sh[i]
        s_lo = s & low32
        s_lo32 = np.uint32(s_lo)
        s_hi32 = np.uint32(s >> top)
        for k in range(row.shape[0]):  # the running minima stay in L1; this loop vectorises (8 lanes)
            carry = np.uint32((np.uint64(a_lo[k]) * s_lo + np.uint64(b_lo[k])) >> top)
            v = np.uint32(carry + np.uint32(a_hi[k] * s_lo32) + np.uint32(a_lo[k] * s_hi32) + b_hi[k])
            row[k] = min(row[k], v)


@numba.njit(cache=True, nogil=True)
def unique_segments(values, seg):
    """(sorted distinct values of each segment values[seg[d]:seg[d + 1]], one after the other; their bounds)."""
    out = np.empty_like(values)
    bounds = np.zeros_like(seg)
    k = 0
    for d in range(seg.shape[0] - 1):
        part = np.sort(values[seg[d]:seg[d + 1]])
        for i in range(part.shape[0]):
            if i == 0 or part[i] != part[i - 1]:
                out[k] = part[i]
                k += 1
        bounds[d + 1] = k
    return out[:k], bounds


@numba.njit(cache=True, nogil=True)
def intersection_size(a, b):
    """Number of values two sorted arrays of distinct values share (one merge pass)."""
    i = j = n = 0
    while i < a.shape[0] and j < b.shape[0]:
        if a[i] < b[j]:
            i += 1
        elif a[i] > b[j]:
            j += 1
        else:
            n += 1
            i += 1
            j += 1
    return n
