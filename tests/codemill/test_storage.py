"""codemill/storage.py: one path API for local disk and object stores; S3 settings from Hadoop or the
environment; credentials never in what may be printed."""

from __future__ import annotations

from codemill import storage


def test_globs_match_like_the_shell_and_double_star_crosses_folders(tmp_path):
    for rel in ("a/x.jsonl", "a/b/y.jsonl", "a/b/z.parquet", "a/_w.jsonl", "c.jsonl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    base = str(tmp_path)
    assert storage.glob(f"{base}/a/*.jsonl") == [f"{base}/a/_w.jsonl", f"{base}/a/x.jsonl"]
    assert storage.glob(f"{base}/a/**/*.jsonl") == [f"{base}/a/_w.jsonl", f"{base}/a/b/y.jsonl", f"{base}/a/x.jsonl"]
    assert storage.glob(f"{base}/[ac]*") == [f"{base}/c.jsonl"]
    assert storage.glob(f"{base}/a/?.jsonl") == [f"{base}/a/x.jsonl"]
    assert storage.glob(f"{base}/c.jsonl") == [f"{base}/c.jsonl"] and storage.glob(f"{base}/nope") == []
    assert storage.glob_root(f"{base}/a/**/*.jsonl") == f"{base}/a"


def test_s3_settings_come_from_hadoop_keys_then_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    s = storage.s3_settings({"fs.s3a.endpoint": "minio.local:9000", "fs.s3a.access.key": "hadoop-key",
                             "fs.s3a.connection.ssl.enabled": "false"})
    assert (s.endpoint_url, s.access_key, s.secret_key, s.region, s.path_style) == (
        "http://minio.local:9000", "hadoop-key", "env-secret", "eu-west-1", True)
    assert "secret" not in repr(s) and "hadoop-key" not in repr(s)
    opts = storage.storage_options("s3a://b/lake", s)
    assert opts["AWS_ENDPOINT_URL"] == "http://minio.local:9000" and opts["AWS_ALLOW_HTTP"] == "true"
    assert opts["AWS_ACCESS_KEY_ID"] == "hadoop-key" and opts["AWS_SECRET_ACCESS_KEY"] == "env-secret"
    assert storage.storage_options("/local/lake") == {}
    conf = storage.s3a_conf(s)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://minio.local:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"


def test_uris_are_kept_and_local_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("lake") == str(tmp_path / "lake")
    assert storage.absolute("s3a://b/lake/") == "s3a://b/lake"
    assert storage.delta_uri("s3a://b/lake/t") == "s3://b/lake/t"
    assert storage.join("s3a://b/lake", "t", "_delta_log") == "s3a://b/lake/t/_delta_log"
    assert storage.fs_path("abfss://c@acct.dfs.core.windows.net/x/y") == "c/x/y"
    assert storage.is_local("file:///x") and not storage.is_local("gs://b/x")


def test_files_folders_and_globs_on_s3(s3, bucket, tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "config.json").write_text('{"a": 1}')
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"\x00\x01")
    remote = f"{bucket}/models/m"
    assert storage.upload_dir(str(tmp_path / "m"), remote) == ["config.json", "sub/w.bin"]
    assert storage.isdir(remote) and storage.isfile(f"{remote}/config.json") and not storage.exists(f"{remote}/x")
    assert storage.listdir(remote) == ["config.json", "sub"]
    assert storage.glob(f"{bucket}/models/**/*.bin") == [f"{remote}/sub/w.bin"]
    assert storage.read_text(f"{remote}/config.json") == '{"a": 1}'
    copy = storage.local_copy(remote, cache_root=str(tmp_path / "cache"))
    assert open(f"{copy}/sub/w.bin", "rb").read() == b"\x00\x01"
    assert storage.local_copy(remote, cache_root=str(tmp_path / "cache")) == copy  # unchanged: the same copy
    storage.delete_dir(remote)
    assert not storage.isdir(remote)
