"""The MinHash kernels: tokenisation, shingles, signatures, LSH parameters, exact Jaccard."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from spark_jobs import minhash


def _code(seed: int, n_lines: int = 60) -> str:
    rng = random.Random(seed)
    words = [f"{a}{b}" for a in ("get", "set", "load", "parse", "emit", "scan") for b in ("row", "key", "node", "buf")]
    lines = []
    for i in range(n_lines):
        lhs, rhs = rng.choice(words), rng.choice(words)
        lines.append(f"    {lhs}_{i} = {rhs}({rng.randint(0, 999)}, {rng.choice(words)})")
    return "def main():\n" + "\n".join(lines) + "\n"


def test_layout_and_case_do_not_change_shingles():
    text = _code(1)
    reformatted = text.replace("    ", "\t").replace(", ", " ,  ").replace(" = ", "=").upper()
    a, b = minhash.shingle_sets([text, reformatted])
    assert len(a) > 100
    assert np.array_equal(a, b)


def test_tokens_are_identifiers_numbers_and_words_without_punctuation():
    texts = ["foo_bar(x, 42)", "foo bar(x)[42]", "", "a b", "Foo_Bar x 42 # ;;"]
    hashes, docs = minhash.shingle_hashes(texts, ngram=3)
    counts = np.bincount(docs, minlength=len(texts))
    assert counts.tolist() == [1, 2, 0, 1, 1]  # 3 tokens -> 1 trigram; 4 -> 2; none -> 0; 2 (< n) -> 1 short one
    assert hashes[0] == hashes[-1]  # case, punctuation and spacing do not matter
    assert hashes[3] != hashes[0]


def test_non_ascii_identifiers_and_nulls():
    sets = minhash.shingle_sets(["naïve_λ = größe + 1", None, "naïve_λ = größe + 2"], ngram=2)
    assert len(sets[1]) == 0
    assert 0 < minhash.jaccard(sets[0], sets[2]) < 1


def test_signature_estimates_jaccard():
    base = _code(2, 200)
    lines = base.splitlines()
    variants = [base, "\n".join(lines[:150]), "\n".join(lines + [f"x{i} = y{i}" for i in range(40)]),
                _code(3, 200)]
    sig, n_shingles = minhash.signatures(variants, num_perm=256, ngram=5)
    sets = minhash.shingle_sets(variants, ngram=5)
    assert n_shingles.tolist() == [len(s) for s in sets]
    for i in range(1, len(variants)):
        exact = minhash.jaccard(sets[0], sets[i])
        est = minhash.estimated_similarity(sig[0], sig[i])
        # MinHash standard error sqrt(J(1-J)/256) <= 0.031: 4 sigma.
        assert abs(est - exact) < 0.125, (i, exact, est)
    assert minhash.estimated_similarity(sig[0], sig[0]) == 1.0


def test_signatures_and_shingles_do_not_depend_on_batching_or_chunking(monkeypatch):
    texts = [_code(s, 30 + s) for s in range(12)] + [""]
    full, n_full = minhash.signatures(texts, num_perm=64)
    single = [minhash.signatures([t], num_perm=64) for t in texts]
    assert np.array_equal(full, np.vstack([sig for sig, _ in single]))
    assert n_full.tolist() == [int(n[0]) for _, n in single]
    assert (full[-1] == np.uint32(0xFFFFFFFF)).all() and n_full[-1] == 0
    hashes, docs = minhash.shingle_hashes(texts)
    monkeypatch.setattr(minhash, "_CHUNK_BYTES", 700)
    chunked, chunked_docs = minhash.shingle_hashes(texts)
    assert np.array_equal(hashes, chunked) and np.array_equal(docs, chunked_docs)


M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _reference_shingles(text: str | None, ngram: int) -> list[int]:
    """The documented definition, one Python int at a time: tokens are runs of [A-Za-z0-9_] or non-ASCII bytes,
    hashed over their lowercased bytes; a shingle mixes n consecutive token hashes with per-position weights."""
    tokens = re.findall(rb"[A-Za-z0-9_\x80-\xff]+", (text or "").encode())
    hashes = []
    for token in tokens:
        h, p = 0, 1
        for byte in token.lower():
            h = (h + (byte + 1) * p) & M64
            p = (p * int(minhash._BASE)) & M64
        hashes.append(_mix((h + len(token)) & M64))
    weights = [int(w) for w in np.resize(minhash._POS_WEIGHTS, ngram)]
    if not hashes:
        return []
    if len(hashes) < ngram:  # one partial shingle, marked so that it never equals a full one
        return [_mix((sum(h * w for h, w in zip(hashes, weights)) + 0x5851F42D4C957F2D) & M64)]
    return [_mix(sum(hashes[i + j] * weights[j] for j in range(ngram)) & M64)
            for i in range(len(hashes) - ngram + 1)]


@pytest.mark.parametrize("ngram", [1, 3, 5, 9])
def test_compiled_shingles_and_signatures_equal_the_plain_python_definition(ngram):
    texts = [_code(7, 25), "", None, "x", "naïve_λ = größe + 1", "A b\tC;;d(e) [f] g_1 2 3 Hh", _code(8, 3)]
    hashes, docs = minhash.shingle_hashes(texts, ngram=ngram)
    for i, text in enumerate(texts):
        assert hashes[docs == i].tolist() == _reference_shingles(text, ngram), i
    a, b = minhash.permutations(16, 7)
    sig, n_shingles = minhash.signatures(texts, num_perm=16, ngram=ngram, seed=7)
    for i, text in enumerate(texts):
        unique = {h >> 16 for h in _reference_shingles(text, ngram)}  # the signature uses the top 48 bits
        assert n_shingles[i] == len(unique)
        expected = [min(((int(ak) * s + int(bk)) & M64) >> 32 for s in unique) if unique else 0xFFFFFFFF
                    for ak, bk in zip(a, b)]
        assert sig[i].tolist() == expected, i


def test_split_32_bit_minima_equal_64_bit_arithmetic_at_the_carry_and_wrap_extremes():
    from spark_jobs import minhash_kernels

    rng = np.random.default_rng(3)
    # Shingles at the ends of the 48-bit range and random ones; multipliers/offsets whose low halves are all ones
    # (every low product carries into the top half) and whose sums wrap mod 2^64.
    sh = np.array([0, 1, (1 << 48) - 1, (1 << 32) - 1, 1 << 32, *rng.integers(0, 1 << 48, 59)], dtype=np.uint64)
    a = np.array([M64, (1 << 32) - 1, 1, M64 - 2, *(rng.integers(0, 1 << 63, 12) * 2 + 1)], dtype=np.uint64)
    b = np.array([M64, (1 << 32) - 1, 0, 1 << 63, *rng.integers(0, 1 << 63, 12)], dtype=np.uint64)
    seg = [0, 1, 5, 5, 64]  # documents of 1, 4, 0 and 59 shingles
    halves = [(x & 0xFFFFFFFF).astype(np.uint32) for x in (a, a >> np.uint64(32), b, b >> np.uint64(32))]
    row = np.empty(16, dtype=np.uint32)
    for d in range(4):
        minhash_kernels._minima(sh[seg[d]:seg[d + 1]], halves[0], halves[1], halves[2], halves[3], row)
        members = [int(s) for s in sh[seg[d]:seg[d + 1]]]
        expected = ([min(((int(ak) * s + int(bk)) & M64) >> 32 for s in members) for ak, bk in zip(a, b)]
                    if members else [0xFFFFFFFF] * 16)  # no shingle: nothing below the all-ones start
        assert row.tolist() == expected, d


def test_string_and_large_string_arrays_and_slices_give_the_same_signatures():
    import pyarrow as pa

    texts = [_code(s, 20 + s) for s in range(6)] + [None, ""]
    expected, n_expected = minhash.signatures(texts, num_perm=32)
    for arrow_type in (pa.string(), pa.large_string()):  # Spark sends `string` (int32 offsets)
        arr = pa.array(texts, type=arrow_type)
        sig, n = minhash.signatures(arr, num_perm=32)
        assert np.array_equal(sig, expected) and np.array_equal(n, n_expected)
        sig, n = minhash.signatures(arr.slice(2, 4), num_perm=32)  # an offset into the buffers
        assert np.array_equal(sig, expected[2:6]) and np.array_equal(n, n_expected[2:6])


def test_signatures_are_those_persisted_by_earlier_releases():
    """minhash-v2 signatures stored in `minhash_signatures` must stay comparable: values of the first release."""
    sig, n = minhash.signatures(["def area(w, h):\n    return w * h  # Rectangle", "x"], num_perm=4, ngram=3)
    assert sig.tolist() == [[330450334, 84234656, 768486541, 1514005539],
                            [2810188173, 2840826684, 3728464861, 1126598914]]
    assert n.tolist() == [6, 1]
    hashes, _ = minhash.shingle_hashes(["Foo_bar = naïve(1)"], ngram=2)
    assert hashes.tolist() == [0x10D9348A23DC91F3, 0x1B1BE5AE70B7A3DF]


def test_shingle_sets_and_jaccard_equal_python_sets():
    texts = [_code(s, 15 + s) for s in range(5)] + ["", None, "a b c d e f a b c d e f"]
    hashes, docs = minhash.shingle_hashes(texts)
    sets = minhash.shingle_sets(texts)
    for i in range(len(texts)):
        assert sets[i].tolist() == sorted(set(hashes[docs == i].tolist())), i
    for i in range(len(texts)):
        for j in range(len(texts)):
            a, b = set(sets[i].tolist()), set(sets[j].tolist())
            expected = len(a & b) / len(a | b) if a and b else 0.0
            assert minhash.jaccard(sets[i], sets[j]) == pytest.approx(expected), (i, j)


def test_pair_jaccard_matches_set_jaccard():
    texts = [_code(s, 40) for s in range(6)]
    a = texts[:3] + [""]
    b = [texts[0].replace("get", "fetch"), texts[4], "\n".join(texts[2].splitlines()[:30]), texts[5]]
    sets_a, sets_b = minhash.shingle_sets(a), minhash.shingle_sets(b)
    expected = [minhash.jaccard(x, y) for x, y in zip(sets_a, sets_b)]
    assert minhash.pair_jaccard(a, b).tolist() == pytest.approx(expected)
    assert expected[2] > 0.6 and expected[1] < 0.2 and expected[3] == 0.0


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.85])
def test_optimal_bands_put_the_s_curve_at_the_threshold(threshold):
    bands, rows = minhash.optimal_bands(threshold, 256)
    assert bands * rows <= 256
    p = lambda s: float(minhash.collision_probability(s, bands=bands, rows=rows))  # noqa: E731
    assert p(threshold + 0.15) > 0.95
    assert p(threshold - 0.25) < 0.1
    # Weighting missed duplicates more moves the curve left (higher recall before verification).
    b2, r2 = minhash.optimal_bands(threshold, 256, fp_weight=0.2, fn_weight=0.8)
    assert minhash.collision_probability(threshold, bands=b2, rows=r2) >= p(threshold)


def test_band_keys_equal_exactly_when_a_band_is_equal():
    rng = np.random.default_rng(3)
    sig = rng.integers(0, 2**32, size=(3, 12), dtype=np.uint64).astype(np.uint32)
    sig[1, 4:8] = sig[0, 4:8]  # doc 1 shares band 1 (rows 4..7) with doc 0, nothing else
    sig[2, :4] = sig[0, 4:8]  # doc 2 has doc 0's band-1 values, but in band 0
    keys = minhash.band_keys(sig, bands=3, rows=4)
    assert keys.shape == (3, 3) and keys.dtype == np.int64
    assert keys[1, 1] == keys[0, 1]
    assert keys[1, 0] != keys[0, 0] and keys[1, 2] != keys[0, 2]
    assert keys[2, 0] != keys[0, 1]  # the same values in another band are another bucket
    with pytest.raises(ValueError, match="exceeds the signature length"):
        minhash.band_keys(sig, bands=4, rows=4)
