"""ShardDataModule: manifest contract, batch shapes and exact loader position restore."""

from __future__ import annotations

import json
import os

import pytest

from codemill.config import ConfigError
from tests.fixtures.train.helpers import VOCAB_SIZE, write_shards
from trainer.data import ShardDataModule


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), train_sequences=48, val_sequences=8, repeat=3,
                        phases=("phase1",))


def test_manifest_facts(shards):
    dm = ShardDataModule(str(shards), phase="phase1", batch_size=4)
    assert (dm.seq_len, dm.vocab_size, dm.repeat) == (64, VOCAB_SIZE, 3)
    assert dm.tokenizer_dir is None  # the fixture ships no tokenizer folder


def test_config_errors_name_the_key(tmp_path, shards):
    with pytest.raises(ConfigError) as err:
        ShardDataModule(str(tmp_path), phase="phase9", batch_size=0)
    keys = [p.split(":")[0] for p in err.value.problems]
    assert keys == ["data.batch_size", "data.phase", "data.shards_root"]
    manifest = json.loads((shards / "phase1" / "manifest.json").read_text())
    del manifest["splits"]["val"]
    broken = tmp_path / "broken" / "phase1"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="no 'val' split"):
        ShardDataModule(str(tmp_path / "broken"))


def test_batches_are_int64_rows_of_seq_len_plus_one(shards):
    dm = ShardDataModule(str(shards), batch_size=4, shuffle=False)
    batches = list(dm.train_dataloader())
    assert len(batches) == 12
    assert batches[0].shape == (4, 65) and str(batches[0].dtype) == "torch.int64"
    assert int(max(b.max() for b in batches)) < VOCAB_SIZE
    val = list(dm.val_dataloader())
    assert len(val) == 2


def test_loader_state_restores_the_exact_position(shards):
    dm = ShardDataModule(str(shards), batch_size=4, shuffle=True, seed=7)
    loader = dm.train_dataloader()
    it = iter(loader)
    seen = [next(it) for _ in range(5)]
    state = loader.state_dict()
    rest = [b.tolist() for b in it]
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == rest
    # Shuffling covers every sequence once per pass.
    rows = {tuple(r) for b in seen for r in b.tolist()} | {tuple(r) for b in rest for r in b}
    assert len(rows) == 48


# ---------------------------------------------------------------------- on object storage
def test_shards_on_s3_stream_the_same_batches_as_local_disk(shards, s3, bucket, tmp_path, monkeypatch):
    from codemill import storage

    for key, value in s3.env.items():  # what a trainer process has: the standard AWS_* variables
        monkeypatch.setenv(key, value)
    storage.upload_dir(str(shards / "phase1"), f"{bucket}/shards/phase1")
    remote = ShardDataModule(f"s3://{bucket[len('s3a://'):]}/shards", batch_size=4, shuffle=False,
                             cache_dir=str(tmp_path / "chunks"))
    local = ShardDataModule(str(shards), batch_size=4, shuffle=False)
    assert (remote.seq_len, remote.vocab_size, remote.repeat) == (64, VOCAB_SIZE, 3)
    got = [b.tolist() for b in remote.train_dataloader()]
    assert got == [b.tolist() for b in local.train_dataloader()] and len(got) == 12
    assert len(list(remote.val_dataloader())) == 2
    assert any(name.endswith(".bin") for _, _, names in os.walk(tmp_path / "chunks") for name in names)
    with pytest.raises(ConfigError, match=f"data.shards_root: no phase1/manifest.json under {bucket}/nothing"):
        ShardDataModule(f"{bucket}/nothing")
