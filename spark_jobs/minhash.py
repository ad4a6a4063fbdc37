"""MinHash for source code, used by near dedup (`spark_jobs.near_dup_pairs` inside `mapInArrow`,
`spark_jobs.near_dup_clusters` in its one task).

Everything here works on a whole Arrow string array at once: the per-byte and per-shingle loops are compiled
(`spark_jobs.minhash_kernels`, numba), the rest is numpy; Python only loops over memory-bounded chunks.

- `shingle_hashes(contents, ngram=5)`: 64-bit hashes of the n-grams of *normalised code tokens*: lowercased runs
  of letters, digits, underscore or non-ASCII bytes (identifiers, keywords, numbers, words of strings and
  comments). Punctuation, whitespace and layout are dropped, as in BigCode's near-dedup of The Stack and StarCoder
  (split on non-alphanumerics): re-indenting, re-wrapping or re-punctuating a file does not change its shingles,
  and operator-heavy shingles such as `) ) : return self` that all code shares do not inflate similarity.
- `signatures(contents, num_perm=256, ngram=5, seed=42)`: (n_docs, num_perm) uint32 MinHash signatures with the
  multiply-shift family h_k(s) = ((a_k * s + b_k) mod 2^64) >> 32 (Dietzfelbinger et al. 1996) over 64-bit
  shingle hashes.
- `optimal_bands(threshold, num_perm)`: LSH bands x rows minimising the weighted false positive/negative areas of
  the S-curve 1 - (1 - s^r)^b around the threshold (Leskovec et al., Mining of Massive Datasets §3.4).
- `jaccard(a, b)`: exact Jaccard similarity of two documents' shingle sets, for candidate verification.
- `signature_matrix(lists)`: signatures held as an Arrow list array (what Spark sends) as one numpy matrix.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spark_jobs import minhash_kernels

# Odd 64-bit constants: the polynomial base for token hashes and the per-position weights of shingle hashes.
_BASE = np.uint64(0x100000001B3)
_POS_WEIGHTS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                         0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
                        dtype=np.uint64)
# Bytes of text hashed per chunk: bounds the temporary arrays to ~15 x this many bytes of memory.
_CHUNK_BYTES = 4 << 20
_LOW32 = np.uint64((1 << 32) - 1)

# Per byte: 0 for a separator, else its lowercased value plus one (what a token's hash sums). Word bytes are ASCII
# letters, digits and "_", and every byte >= 128 (UTF-8 lead and continuation bytes: identifiers and strings in any
# script stay whole tokens).
_TOKEN_VALUE = np.zeros(256, dtype=np.uint64)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789_":
    _TOKEN_VALUE[_c] = _c + 1
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    _TOKEN_VALUE[_c] = _c + 32 + 1
_TOKEN_VALUE[128:] = np.arange(128, 256) + 1


def _as_bytes(contents) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (n+1,), data uint8) of a string array; nulls read as empty strings. Zero-copy for Arrow arrays
    without nulls: `string` arrays (what Spark sends) keep their int32 offsets, `large_string` their int64 ones."""
    if not isinstance(contents, pa.Array | pa.ChunkedArray):
        contents = pa.array(list(contents), type=pa.large_string())
    if isinstance(contents, pa.ChunkedArray):
        contents = contents.combine_chunks() if contents.num_chunks != 1 else contents.chunk(0)
    if not (pa.types.is_string(contents.type) or pa.types.is_large_string(contents.type)):
        contents = contents.cast(pa.large_string())
    if contents.null_count:
        contents = contents.fill_null("")
    n = len(contents)
    bufs = contents.buffers()
    width = np.int32 if pa.types.is_string(contents.type) else np.int64
    offsets = np.frombuffer(bufs[1], dtype=width)[contents.offset:contents.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def shingle_hashes(contents, ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(hashes uint64, doc index int64) of every shingle of every document, in document order."""
    offsets, data = _as_bytes(contents)
    out_h, out_d = [], []
    for lo, hi in _doc_chunks(offsets):
        sh, sh_doc = _shingles(data, offsets, lo, hi, ngram)
        out_h.append(sh)
        out_d.append(sh_doc + lo)
    if not out_h:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    return np.concatenate(out_h), np.concatenate(out_d)


def _shingles(data: np.ndarray, offsets: np.ndarray, lo: int, hi: int, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of documents lo..hi-1 with their chunk-local document index (compiled kernel)."""
    return minhash_kernels.shingles(data, offsets, lo, hi, ngram, np.resize(_POS_WEIGHTS, ngram), _TOKEN_VALUE,
                                    _BASE)


@functools.lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) parameters of the multiply-shift hash family; a is odd."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    return a, b


def _doc_chunks(offsets: np.ndarray):
    """[lo, hi) document ranges of at most _CHUNK_BYTES bytes (at least one doc)."""
    n_docs = len(offsets) - 1
    lo = 0
    while lo < n_docs:
        # Chunk on whole documents so that no shingle crosses a chunk.
        # Capped at the last offset: int32 offsets (Arrow `string`) must not overflow.
        limit = min(int(offsets[lo]) + _CHUNK_BYTES, int(offsets[-1]))
        hi = int(np.searchsorted(offsets, limit, side="right")) - 1
        hi = min(max(hi, lo + 1), n_docs)
        yield lo, hi
        lo = hi


def signatures(contents, *, num_perm: int = 256, ngram: int = 5, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(signatures uint32 (n_docs, num_perm), n_shingles int64 (n_docs,)).

    Permutations act on the top 48 bits of the shingle hashes, each document's distinct ones (code repeats itself
    a lot: 20-40% of shingles). 48-bit hashes collide within a document with probability < n^2 / 2^49 (< 2e-5 for
    10^5 shingles): no visible effect on Jaccard estimates. One compiled pass per document
    (`minhash_kernels.signatures`). A document without any token has n_shingles 0 and an all-0xFFFFFFFF
    signature; callers keep it out of LSH.
    """
    offsets, data = _as_bytes(contents)
    n_docs = len(offsets) - 1
    n_shingles = np.zeros(n_docs, dtype=np.int64)
    sig = np.full((n_docs, num_perm), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    if n_docs:
        minhash_kernels.signatures(data, offsets, 0, n_docs, ngram, np.resize(_POS_WEIGHTS, ngram), _TOKEN_VALUE,
                                   _BASE, *_split_permutations(num_perm, seed), sig, n_shingles)
    return sig, n_shingles


@functools.lru_cache(maxsize=8)
def _split_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, ...]:
    """`permutations` as the 32-bit halves the kernels take: (a_lo, a_hi, b_lo, b_hi), uint32."""
    a, b = permutations(num_perm, seed)
    return tuple(half.astype(np.uint32) for x in (a, b) for half in (x & _LOW32, x >> np.uint64(32)))


def band_keys(sig: np.ndarray, *, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) int64 LSH bucket keys: band i of a document hashes its values i*rows .. (i+1)*rows - 1.

    Each key mixes the band's index with its values, so keys of different bands never meet by construction (only
    by a 2^-64 collision) and one column of keys can be grouped on without a band column. Vectorised over
    documents and bands; the loop is over the `rows` positions of a band.
    """
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands x rows = {bands * rows} exceeds the signature length {sig.shape[1]}")
    cells = sig[:, :bands * rows].reshape(len(sig), bands, rows).astype(np.uint64)
    acc = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15),
                          (len(sig), bands)).copy()
    for r in range(rows):
        acc = minhash_kernels.mix64(acc ^ cells[:, :, r])
    return acc.view(np.int64)


def shingle_sets(contents, ngram: int = 5) -> list[np.ndarray]:
    """Sorted distinct shingle hashes per document (views into one array)."""
    n_docs = len(contents)
    sh, sh_doc = shingle_hashes(contents, ngram)  # in document order: each document's shingles are one slice
    values, bounds = minhash_kernels.unique_segments(sh, np.searchsorted(sh_doc, np.arange(n_docs + 1)))
    return [values[bounds[i]:bounds[i + 1]] for i in range(n_docs)]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted distinct shingle-hash arrays (0 when either is empty)."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    inter = minhash_kernels.intersection_size(a, b)
    return inter / (len(a) + len(b) - inter)


def _unique_per_doc(sh: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((sh, doc))
    sh, doc = sh[order], doc[order]
    new = np.ones(len(sh), dtype=bool)
    new[1:] = (sh[1:] != sh[:-1]) | (doc[1:] != doc[:-1])
    return sh[new], doc[new]


def pair_jaccard(contents_a, contents_b, ngram: int = 5) -> np.ndarray:
    """Exact Jaccard similarity of the shingle sets of contents_a[i] and contents_b[i], for every i at once.

    Both sides' unique (pair, shingle) keys are concatenated and sorted; a key present twice is in the
    intersection. Pairs where either side has no shingle get 0.
    """
    ha, da = _unique_per_doc(*shingle_hashes(contents_a, ngram))
    hb, db = _unique_per_doc(*shingle_hashes(contents_b, ngram))
    n = len(contents_a)
    size_a = np.bincount(da, minlength=n)
    size_b = np.bincount(db, minlength=n)
    h = np.concatenate([ha, hb])
    d = np.concatenate([da, db])
    order = np.lexsort((h, d))
    h, d = h[order], d[order]
    dup = (h[1:] == h[:-1]) & (d[1:] == d[:-1])
    inter = np.bincount(d[1:][dup], minlength=n)
    union = size_a + size_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where((size_a > 0) & (size_b > 0), inter / np.maximum(union, 1), 0.0)
    return out.astype(np.float64)


def estimated_similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal MinHash values: an unbiased estimate of the Jaccard similarity."""
    return (np.asarray(sig_a) == np.asarray(sig_b)).mean(axis=-1)


def signature_matrix(lists: pa.Array) -> np.ndarray:
    """An Arrow list<int> array of signatures as an (n, num_perm) numpy matrix (no copy without nulls)."""
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    if len(lists) and ((lengths != lengths[0]).any() or lists.null_count):
        raise ValueError("MinHash signatures of different lengths cannot be compared (different num_perm?)")
    width = int(lengths[0]) if len(lists) else 0
    return lists.flatten().to_numpy(zero_copy_only=False).reshape(len(lists), width) if width else np.zeros((0, 0))


def collision_probability(s, *, bands: int, rows: int):
    """Probability that two documents with Jaccard similarity s share at least one LSH bucket."""
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands


@functools.lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, *, fp_weight: float = 0.5,
                  fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising fp_weight * FP area + fn_weight * FN area.

    FP area: integral of the collision probability below the threshold; FN area: of its complement above it.
    """
    lo = np.linspace(0.0, threshold, 512)
    hi = np.linspace(threshold, 1.0, 512)
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        rows_max = num_perm // bands
        rows = np.arange(1, rows_max + 1)[:, None]
        fp = np.trapezoid(1.0 - (1.0 - lo[None, :] ** rows) ** bands, lo, axis=1)
        fn = np.trapezoid((1.0 - hi[None, :] ** rows) ** bands, hi, axis=1)
        cost = fp_weight * fp + fn_weight * fn
        i = int(np.argmin(cost))
        if cost[i] < best_cost - 1e-12:
            best, best_cost = (bands, int(rows[i, 0])), float(cost[i])
    return best


def as_int32(sig: np.ndarray) -> np.ndarray:
    """uint32 signature values reinterpreted as int32 for Spark's array<int> (equality is what matters)."""
    return np.ascontiguousarray(sig).view(np.int32)


__all__: Sequence[str] = (
    "as_int32", "band_keys", "collision_probability", "estimated_similarity", "jaccard", "optimal_bands",
    "pair_jaccard", "permutations", "shingle_hashes", "shingle_sets", "signature_matrix", "signatures",
)
