"""Model resolution: a model folder on an object store loads from a cached local copy with a stable revision."""

from __future__ import annotations

from pathlib import Path

from codemill.models import _folder_revision, resolve_model


def test_model_folder_on_s3_resolves_to_a_local_copy_with_the_folders_revision(s3, bucket, tmp_path, monkeypatch):
    from codemill import storage

    monkeypatch.setenv("CODEMILL_CACHE_DIR", str(tmp_path / "cache"))
    local = tmp_path / "model"
    local.mkdir()
    (local / "config.json").write_text('{"model_type": "llama"}')
    (local / "model.safetensors").write_bytes(b"\0" * 64)
    storage.upload_dir(str(local), f"{bucket}/runs/phase3/hf")
    path, revision = resolve_model(f"{bucket}/runs/phase3/hf")
    assert path.startswith(str(tmp_path / "cache"))
    assert (Path(path) / "config.json").read_text() == '{"model_type": "llama"}'
    assert revision == _folder_revision(local)  # the same files give the same provenance, wherever they live
    assert resolve_model(f"{bucket}/runs/phase3/hf")[0] == path  # reused, not downloaded again
