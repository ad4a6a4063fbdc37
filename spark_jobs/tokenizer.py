"""Train, load and save codemill's tokenizer (one tokenizer for the trainer, the synthetic job and the shards).

    # train a byte-level BPE on a sample of phase-1 documents and save it as a Hugging Face folder
    python -m spark_jobs.tokenizer --lake lake --out shards/tokenizer --vocab_size 64000 --sample_docs 200000
    # or adopt an existing tokenizer (tokenizer.json, sentencepiece .model or HF folder)
    python -m spark_jobs.tokenizer --load path/to/tokenizer.json --out shards/tokenizer

Keys (`--help` lists them; `--config FILE` reads them from YAML): `out`, `load`, `lake`, `vocab_size`, `sample_docs`,
`max_chars`, `seed` (`TokenizerJobConfig`). The pipeline's `tokenizer` stage (before `select`, which counts its
budget in these tokens) and the tokenize stage call the same functions (`spark_jobs.tokenize_shards.ensure_tokenizer`),
so normally this module is not run on its own. The saved folder (`tokenizer.json`,
`tokenizer_config.json`, `special_tokens_map.json`) loads with `transformers.AutoTokenizer.from_pretrained` and
`tokenizers.Tokenizer.from_file(<dir>/tokenizer.json)`.

Paths (`--out`, `--load`) may be local or object-store URIs (`s3a://bucket/shards/tokenizer`): a folder is written
locally and uploaded (`tokenizer.json` last), a remote folder or file is read through a local copy.

Why byte-level BPE: code holds arbitrary Unicode and whitespace runs; a byte-level alphabet never produces an
unknown token, so decode(encode(text)) == text for every document (the round-trip tests rely on it). The paper
(Arctic-SnowCoder §3) trains with a 64k vocabulary (inherited from its base tokenizer); the size is configurable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from codemill import storage
from codemill.config import parse_config
from codemill.lake import Lake
from codemill.session import get_spark

if TYPE_CHECKING:
    from tokenizers import Tokenizer

EOS = "<|endoftext|>"
FILE_SEP = "<|file_sep|>"
REPO_NAME = "<|repo_name|>"
PAD = "<|pad|>"
# Order fixes the ids of a trained tokenizer: <|endoftext|> = 0, <|file_sep|> = 1, <|repo_name|> = 2, <|pad|> = 3.
SPECIAL_TOKENS = (EOS, FILE_SEP, REPO_NAME, PAD)


def train_bpe(texts: Iterable[str], *, vocab_size: int = 64000, min_frequency: int = 2,
              special_tokens: tuple[str, ...] = SPECIAL_TOKENS) -> Tokenizer:
    """A byte-level BPE trained on `texts` (an iterator is streamed, not materialised)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: a document must encode to the same ids whether or not it starts a sequence.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load(path: str) -> Tokenizer:
    """A `tokenizers.Tokenizer` from a `tokenizer.json`, a sentencepiece `.model` or a Hugging Face folder.

    Missing codemill special tokens are added (appended to the vocabulary), so every loaded tokenizer has
    end-of-document, file separator, repository name and padding tokens. `path` may be an object-store URI: a
    folder is read from its local copy (`storage.local_copy`, cached), a single file is downloaded first.
    """
    from tokenizers import Tokenizer

    if not storage.is_local(path):
        if storage.isfile(path):
            if not path.endswith((".json", ".model")):
                raise ValueError(f"tokenizer {path!r}: expected a tokenizer.json, a sentencepiece .model or a folder")
            with tempfile.TemporaryDirectory(prefix="codemill-tok-") as tmp:
                local = os.path.join(tmp, path.rsplit("/", 1)[-1])
                with open(local, "wb") as fh:
                    fh.write(storage.read_bytes(path))
                return load(local)
        return load(storage.local_copy(path))
    if os.path.isdir(path):
        inner = os.path.join(path, "tokenizer.json")
        if os.path.exists(inner):
            tok = Tokenizer.from_file(inner)
        else:  # a slow-only HF folder (e.g. sentencepiece files): let transformers convert it
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path, use_fast=True).backend_tokenizer
    elif path.endswith(".model"):
        tok = _from_sentencepiece(path)
    elif path.endswith(".json"):
        tok = Tokenizer.from_file(path)
    else:
        raise ValueError(f"tokenizer {path!r}: expected a tokenizer.json, a sentencepiece .model or a folder")
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        from tokenizers import AddedToken

        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return tok


def _from_sentencepiece(path: str) -> Tokenizer:
    """A `tokenizers` equivalent of a sentencepiece BPE or unigram model (vocabulary, merges, normaliser).

    Exact round trips need a model trained with `byte_fallback` (sentencepiece otherwise maps unseen characters,
    e.g. newlines under the default normaliser, to <unk>); the byte-level BPE of `train_bpe` has no such gap.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    extractor = SentencePieceExtractor(path)
    spec = extractor.proto.trainer_spec
    parts = extractor.extract(None)
    if "merges" in parts:
        model = models.BPE(parts["vocab"], parts["merges"], unk_token=spec.unk_piece, fuse_unk=True,
                           byte_fallback=spec.byte_fallback)
    else:
        model = models.Unigram(parts["vocab"], unk_id=parts["unk_id"], byte_fallback=spec.byte_fallback)
    tok = Tokenizer(model)
    steps = [normalizers.Precompiled(parts["_spm_precompiled_charsmap"])] if parts["_spm_precompiled_charsmap"] else []
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    dec = [decoders.Metaspace(replacement="\u2581", prepend_scheme="first")]
    if spec.byte_fallback:
        dec = [decoders.ByteFallback(), *dec]
    tok.decoder = decoders.Sequence(dec)
    if parts["additional_special_tokens"]:
        tok.add_special_tokens(parts["additional_special_tokens"])
    return tok


def save(tok: Tokenizer, out_dir: str, *, model_max_length: int = 8192) -> str:
    """Saves `tok` as a Hugging Face tokenizer folder (docs/CONTRACTS.md) and returns the folder; an object-store
    folder is written locally, then uploaded (`upload_folder`)."""
    from transformers import PreTrainedTokenizerFast

    if not storage.is_local(out_dir):
        with tempfile.TemporaryDirectory(prefix="codemill-tok-") as tmp:
            save(tok, tmp, model_max_length=model_max_length)
            upload_folder(tmp, out_dir)
        return out_dir
    os.makedirs(out_dir, exist_ok=True)
    pad = PAD if tok.token_to_id(PAD) is not None else EOS
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=None,
        unk_token=None,
        pad_token=pad,
        additional_special_tokens=[FILE_SEP, REPO_NAME],
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(out_dir)
    # transformers 5 no longer writes special_tokens_map.json and names its own backend class; the contract
    # (docs/CONTRACTS.md) wants the map, and the generic class name keeps the folder loadable by transformers 4.x.
    config_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(config_path) as fh:
        config = json.load(fh)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(config_path, "w") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
    special_map = {"eos_token": EOS, "pad_token": pad, "additional_special_tokens": [FILE_SEP, REPO_NAME]}
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as fh:
        json.dump(special_map, fh, indent=2, sort_keys=True)
    return out_dir


def upload_folder(local_dir: str, uri: str) -> list[str]:
    """Copies a saved tokenizer folder to `uri`, `tokenizer.json` last: the jobs take a folder holding it for a
    complete one (`tokenize_shards.ensure_tokenizer` reuses it)."""
    names = sorted(os.listdir(local_dir), key=lambda n: (n == "tokenizer.json", n))
    for name in names:
        with open(os.path.join(local_dir, name), "rb") as fh:
            storage.write_bytes(storage.join(uri, name), fh.read())
    return names


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """Ids of codemill's special tokens (`eos`, `file_sep`, `repo_name`, `pad`)."""
    ids = {name: tok.token_to_id(t) for name, t in zip(("eos", "file_sep", "repo_name", "pad"), SPECIAL_TOKENS)}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens {missing}; load it through spark_jobs.tokenizer.load")
    return ids


def sample_texts(df, *, column: str, max_docs: int, max_chars: int, seed: int) -> Iterator[str]:
    """A deterministic sample of at most `max_docs` texts (each cut to `max_chars`) streamed to the driver."""
    from pyspark.sql import functions as F

    picked = (df.select(F.substring(F.col(column), 1, max_chars).alias("t"),
                        F.xxhash64(F.lit(seed), F.col(column)).alias("h"))
              .where(F.col("t").isNotNull())
              .orderBy("h").limit(max_docs).select("t"))
    for row in picked.toLocalIterator():
        yield row["t"]


def prepare(*, out_dir: str, load_from: str | None, texts: Iterable[str] | None, vocab_size: int,
            min_frequency: int = 2, model_max_length: int = 8192) -> Tokenizer:
    """Loads or trains the tokenizer, saves it to `out_dir` (local or a URI) and returns the saved (reloaded) one."""
    tok = load(load_from) if load_from else train_bpe(texts or [], vocab_size=vocab_size, min_frequency=min_frequency)
    if storage.is_local(out_dir):
        save(tok, out_dir, model_max_length=model_max_length)
        return load(out_dir)
    with tempfile.TemporaryDirectory(prefix="codemill-tok-") as tmp:  # reload the local copy, then upload it
        save(tok, tmp, model_max_length=model_max_length)
        saved = load(tmp)
        upload_folder(tmp, out_dir)
    return saved


@dataclasses.dataclass
class TokenizerJobConfig:
    """`python -m spark_jobs.tokenizer` keys (the tokenize stage has its own `tokenize.tokenizer` section)."""

    # Output Hugging Face tokenizer folder (local or a URI).
    out: str | None = None
    # An existing tokenizer.json, sentencepiece .model or HF folder to adopt; None = train a byte-level BPE.
    load: str | None = None
    # Lake root holding the `documents` table, sampled to train the BPE.
    lake: str | None = None
    vocab_size: int = 64000  # paper §3: 64k vocabulary
    sample_docs: int = 200_000
    max_chars: int = 20_000  # characters kept per sampled document
    seed: int = 1234

    def validate(self) -> list[str]:
        problems = []
        if not self.out:
            problems.append("out: the folder to write the tokenizer to is required")
        if not self.load and not self.lake:
            problems.append("lake: needed to train a tokenizer (or pass --load)")
        return problems


def main(argv: list[str] | None = None) -> dict:
    """Trains (on a sample of the lake's `documents`) or adopts a tokenizer, saves it to `out`; prints and returns
    the folder, the vocabulary size and the special token ids."""
    cfg = parse_config(TokenizerJobConfig, argv, prog="python -m spark_jobs.tokenizer",
                       description=__doc__.splitlines()[0])
    texts = None
    if not cfg.load:
        lake = Lake.open(get_spark("codemill-tokenizer"), cfg.lake)
        texts = sample_texts(lake.read("documents"), column="text", max_docs=cfg.sample_docs,
                             max_chars=cfg.max_chars, seed=cfg.seed)
    tok = prepare(out_dir=cfg.out, load_from=cfg.load, texts=texts, vocab_size=cfg.vocab_size)
    result = {"out": storage.absolute(cfg.out), "vocab_size": tok.get_vocab_size(), **special_ids(tok)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
