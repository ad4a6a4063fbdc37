"""spark_jobs/redact.py and redact_detectors.py: every secret kind found and replaced by its placeholder, every
near-miss kept, salted hashes instead of secrets, the row cap, and the stage's three tables."""

from __future__ import annotations

import pytest

from codemill import schemas
from spark_jobs import redact
from spark_jobs.redact_detectors import KINDS, PLACEHOLDERS, Detectors, RedactRules, redact_text, salted_hash

# kind -> (a line of code holding one secret of that kind, the secret)
SECRETS = {
    "aws_access_key": ('aws_id = "AKIAZ7QWERTYUIOPASDF"', "AKIAZ7QWERTYUIOPASDF"),
    "github_token": ("token: ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5", "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5"),
    "slack_token": ('SLACK = "xoxb-482910375612-9928374650123-Qw8eRt6yUi4oPa2sDf0gHj1k"',
                    "xoxb-482910375612-9928374650123-Qw8eRt6yUi4oPa2sDf0gHj1k"),
    "stripe_key": ("stripe.api_key = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    "google_api_key": ('const MAPS = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY";',
                       "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    "jwt": ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MjQyIiwiaWF0IjoxNTE2fQ.SflKxwRJSMeKKF2QT4fwpMe",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MjQyIiwiaWF0IjoxNTE2fQ.SflKxwRJSMeKKF2QT4fwpMe"),
    "private_key": ("-----BEGIN RSA PRIVATE KEY-----\n"
                    "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi1aB2cD3eF4gH5iJ6kL7mN8oP9\n"
                    "qR0sT1uV2wX3yZ4aB5cD6eF7gH8iJ9kL0mN1oP2qR3sT4uV5wX6yZ7aB8cD9eF0g\n-----END RSA PRIVATE KEY-----",
                    None),
    "connection_password": ('DB = "postgres://orders:S3cr3tPw9x@db.prod.acme.io:5432/app"', "S3cr3tPw9x"),
    "password_assignment": ('password = "Tr0ub4dor&3x"', "Tr0ub4dor&3x"),
    "secret_assignment": ('CLIENT_SECRET = "q8Zr2LmX9vTb4NcW7yPe"', "q8Zr2LmX9vTb4NcW7yPe"),
    "email": ("# Author: Jane Doe <jane.doe@acme-corp.com>", "jane.doe@acme-corp.com"),
    "ip_address": ('SERVER = "52.14.7.201"', "52.14.7.201"),
}

# near-miss kind -> lines that must come out unchanged
NEAR_MISSES = {
    "test fixtures": ['aws_id = "AKIAIOSFODNN7EXAMPLE"', "stripe.api_key = 'sk_test_4eC39HqLyjWDarjtT1zdp7dc'",
                      'GH = "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"', 'password = "changeme"',
                      'password = "${DB_PASSWORD}"', 'api_key = "your_api_key_here"',
                      'url = "postgres://user:${PGPASSWORD}@localhost/db"', 'password = "hunter"'],
    "example e-mails": ["contact user@example.com", "jane@mail.example.org", "git@github.com:org/repo.git",
                        "icon@2x.png", "https://someone@github.com/org/repo"],
    "private and documentation IPs": ["10.0.0.1", "host = '192.168.1.10'", "127.0.0.1", "203.0.113.7",
                                      "198.51.100.23", "0.0.0.0", "255.255.255.0", "dns 8.8.8.8"],
    "versions": ['__version__ = "1.2.3.4"', "requests==2.31.0.1", "Version 10.0.19041.1", "v4.0.30319.1",
                 "see section 4.20.7.1", "oid 1.3.6.1.4.1", 'host = "26.0.0.73.com"'],
    "uuids": ['token_id = "123e4567-e89b-12d3-a456-426614174000"'],
    "hashes": ['sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"',
               'commit_token = "da39a3ee5e6b4b0d3255bfef95601890afd80709"'],
    "code": ["@property\ndef token(self):\n    return self._token", 'key = "name"', "x = a.b.c.d",
             'TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"',
             'private_key_path = "keys/deploy_private_key.pem"',
             'parser.add_argument("--password", help="the password")'],
}


@pytest.fixture(scope="module")
def detectors():
    return Detectors.get(RedactRules())


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_found_and_replaced(detectors, kind):
    line, secret = SECRETS[kind]
    text = f"import os\n\n{line}\nprint('done')\n"
    found = detectors.find(text)
    assert [f.kind for f in found] == [kind]
    out = redact_text(text, found)
    assert PLACEHOLDERS[kind] in out and out.startswith("import os\n") and out.endswith("print('done')\n")
    if secret is not None:
        assert secret not in out and text[found[0].start:found[0].end] == secret
    else:
        assert "PRIVATE KEY" not in out and "MIIEpAIB" not in out


def test_placeholders_follow_starcoder():
    assert set(PLACEHOLDERS.values()) == {"<KEY>", "<PASSWORD>", "<EMAIL>", "<IP_ADDRESS>"}
    d = Detectors.get(RedactRules())
    text = "mail a.b@acme.io from 52.14.7.201 with postgres://u:Pa55w0rd!x@h.io/x and key AKIAZ7QWERTYUIOPASDF"
    assert redact_text(text, d.find(text)) == \
        "mail <EMAIL> from <IP_ADDRESS> with postgres://u:<PASSWORD>@h.io/x and key <KEY>"


def test_base64_secret_starting_with_a_slash_is_not_a_path(detectors):
    line = 'var auth_token = "/5LH79+FM26vSza8KwyGyZVlyQ7qsVW8K+QTX9qI"'  # a miss of bench/redact.py, fixed
    assert [f.kind for f in detectors.find(line)] == ["secret_assignment"]
    assert [f.kind for f in detectors.find('SECRET = "/Qm9vTGVhbkZsYWdz9kLmN0aGVyU2VjcmV0S2V5MTIzNDU2Nzg"')] == \
        ["secret_assignment"]


@pytest.mark.parametrize("near", sorted(NEAR_MISSES))
def test_near_misses_are_kept(detectors, near):
    for line in NEAR_MISSES[near]:
        assert detectors.find(line) == [], (near, line, detectors.find(line))


def test_exceptions_are_configurable():
    strict = Detectors.get(RedactRules(email_allow_domains=[], email_allow_local_parts=[], ip_version_words=[],
                                       ip_allow_networks=[]))
    assert [f.kind for f in strict.find("user@example.com 1.1.1.1")] == ["email", "ip_address"]
    assert [f.kind for f in strict.find('__version__ = "52.14.7.201"')] == ["ip_address"]
    only_email = Detectors.get(RedactRules(kinds=["email"]))
    assert [f.kind for f in only_email.find('a.b@acme.io AKIAZ7QWERTYUIOPASDF')] == ["email"]
    fixtures = Detectors.get(RedactRules(keep_paths=["*/tests/fixtures/*"]))
    assert fixtures.find("a.b@acme.io", "repo/tests/fixtures/mail.txt") == []
    assert fixtures.find("a.b@acme.io", "repo/src/mail.py") != []
    with pytest.raises(ValueError, match="kinds: unknown kind"):
        Detectors(RedactRules(kinds=["emails"]))


def test_salted_hash_hides_the_secret():
    h1, h2 = salted_hash("S3cr3tPw9x", b"salt-1"), salted_hash("S3cr3tPw9x", b"salt-2")
    assert h1 != h2 and len(h1) == 64 and "S3cr3t" not in h1
    assert h1 == salted_hash("S3cr3tPw9x", b"salt-1")


def test_without_the_salt_variable_a_lake_keeps_one_private_salt(tmp_path, monkeypatch):
    """Re-runs (and runs recovered after a kill) must write identical hashes: the lake's salt file is made once,
    owner-only, and read back; the variable, when set, wins and nothing is written."""
    import os
    import stat

    cfg = redact.RedactConfig()
    monkeypatch.delenv(cfg.salt_env, raising=False)
    lake = str(tmp_path / "lake")
    first, second = redact.resolve_salt(cfg, lake), redact.resolve_salt(cfg, lake)
    assert first == second and len(first) == 64
    salt_file = tmp_path / "lake" / redact.SALT_FILE
    assert stat.S_IMODE(os.stat(salt_file).st_mode) == 0o600
    assert redact.resolve_salt(cfg, str(tmp_path / "other")) != first
    monkeypatch.setenv(cfg.salt_env, "from-the-secret-store")
    assert redact.resolve_salt(cfg, str(tmp_path / "third")) == b"from-the-secret-store"
    assert not (tmp_path / "third").exists()


def test_scan_text_row_cap(detectors):
    dump = "\n".join(f"key{i} = AKIA{i:016d}".replace("0", "Q") for i in range(5))
    text, rows, summary = redact.scan_text(dump, detectors, b"s", max_findings=4)
    assert text is None and len(rows) == 5 and summary == "aws_access_key 5"
    text, rows, _ = redact.scan_text(dump, detectors, b"s", max_findings=5)
    assert text is not None and text.count("<KEY>") == 5


def test_stage_tables(spark, monkeypatch):
    monkeypatch.setenv("CODEMILL_REDACT_SALT", "test-salt")
    cfg = redact.RedactConfig(max_findings=3)
    body = "x = 1\n" + SECRETS["email"][0] + "\n" + SECRETS["password_assignment"][0] + "\n"
    dump = "\n".join(f"a{i}.b@acme-corp.com" for i in range(4))
    rows = [("a", "s-a", "src", "r/x", "a.py", "python", body, len(body), None, None, "t"),
            ("b", "s-b", "src", "r/x", "b.py", "python", "print(1)\n", 9, None, None, "t"),
            ("c", "s-c", "src", "r/x", "c.txt", "text", dump, len(dump), None, None, "t")]
    files = spark.createDataFrame(rows, schemas.FILES)
    marked = redact.scan(files, rules=cfg.rules, salt=redact.resolve_salt(cfg), max_findings=cfg.max_findings)
    kept = {r.doc_id: r for r in redact.redacted_rows(marked, max_findings=3).collect()}
    assert sorted(kept) == ["a", "b"]
    assert kept["a"].content == "x = 1\n# Author: Jane Doe <<EMAIL>>\npassword = \"<PASSWORD>\"\n"
    assert kept["a"].size_bytes == len(kept["a"].content) and kept["b"].content == "print(1)\n"
    spans = sorted(redact.redaction_rows(marked, max_findings=3).collect(), key=lambda r: r.start)
    assert [(r.doc_id, r.kind) for r in spans] == [("a", "email"), ("a", "password_assignment")]
    assert body[spans[0].start:spans[0].end] == "jane.doe@acme-corp.com"
    assert spans[0].secret_hash == salted_hash("jane.doe@acme-corp.com", b"test-salt")
    assert spans[1].detector == "keyword:password"
    rejected = redact.rejected_rows(marked, max_findings=3).collect()
    assert [(r.doc_id, r.reason, r.n_findings) for r in rejected] == [("c", "too_many_findings", 4)]
    assert "4 findings > max_findings 3 (email 4)" in rejected[0].detail
    # nothing the stage writes holds a secret or the salt
    tables = (redact.redacted_rows(marked), redact.redaction_rows(marked),
              redact.rejected_rows(marked, max_findings=3))
    for table in tables:
        dumped = str([r.asDict() for r in table.collect()])
        assert "jane.doe@acme" not in dumped and "Tr0ub4dor" not in dumped and "test-salt" not in dumped


@pytest.mark.slow
def test_pipeline_runs_licences_and_redaction(spark, tmp_path, monkeypatch):
    """ingest -> licences -> ... -> redact -> decontaminate -> documents -> outcomes on JSON Lines records with
    licences, an opted-out owner, a file with secrets and a dump of keys."""
    import json
    import re
    import sysconfig
    from pathlib import Path

    from codemill.lake import Lake
    from spark_jobs.pipeline import main

    monkeypatch.setenv("CODEMILL_REDACT_SALT", "pipeline-salt")
    candidates = re.compile(r"(?i)@|\d+\.\d+\.\d+\.\d+|password|secret|token|key|://")
    stdlib = [p.read_text() for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
              if 3000 < p.stat().st_size < 20000]
    texts = [t for t in stdlib if not candidates.search(t)][:6]
    assert len(texts) == 6
    secret = '\nAWS_ACCESS_KEY_ID = "AKIAZ7QWERTYUIOPASDF"\nMAINTAINER = "jane.doe@acme-corp.com"\n'
    dump = "".join(f'KEY_{i} = "AKIA{chr(65 + i)}{"QWERTYUIOPASDFG"}"\n' for i in range(8))
    recs = [("r_mit", "acme/tools", ["MIT"], texts[0]), ("r_gpl", "acme/lib", ["GPL-3.0"], texts[1]),
            ("r_none", "acme/misc", None, texts[2]), ("r_opt", "withdrawn/x", ["MIT"], texts[3]),
            ("r_secret", "acme/app", ["Apache-2.0"], texts[4] + secret), ("r_dump", "acme/keys", ["MIT"],
                                                                          texts[5] + dump)]
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "part-0.jsonl").write_text("\n".join(json.dumps(
        {"id": i, "repo": r, "path": f"{i}.py", "content": c, **({"max_stars_repo_licenses": lic} if lic else {})})
        for i, r, lic, c in recs) + "\n")
    (tmp_path / "opt_out.txt").write_text("withdrawn\n")
    summary = main(["--input", str(raw), "--lake", str(tmp_path / "lake"), "--near_dedup.num_perm", "64",
                    "--licences.opt_out_file", str(tmp_path / "opt_out.txt"), "--redact.max_findings", "5"])
    assert [s["stage"] for s in summary["stages"]][:6] == ["ingest", "licences", "filter", "exact_dedup",
                                                          "near_dedup", "redact"]
    lake = Lake(spark, str(tmp_path / "lake"))
    outcomes = {r.source_id: (r.outcome, r.reason) for r in lake.read("outcomes").collect()}
    assert {k: v[0] for k, v in outcomes.items()} == {
        "r_mit": "kept", "r_gpl": "licence_rejected", "r_none": "kept", "r_opt": "opted_out", "r_secret": "kept",
        "r_dump": "redaction_rejected"}
    assert outcomes["r_gpl"][1] == "licence_not_allowed: gpl-3.0"
    assert outcomes["r_opt"][1] == "opt-out: owner withdrawn"
    assert outcomes["r_dump"][1].startswith("too_many_findings: 8 findings > max_findings 5")
    clean = {r.source_id: r.content for r in lake.read("clean").collect()}
    assert 'AWS_ACCESS_KEY_ID = "<KEY>"\nMAINTAINER = "<EMAIL>"' in clean["r_secret"]
    docs = " ".join(r.text for r in lake.read("documents").collect())
    assert "AKIA" not in docs and "jane.doe" not in docs and "<KEY>" in docs
    spans = lake.read("redactions").collect()
    assert sorted(r.kind for r in spans) == ["aws_access_key", "email"]
    assert all(r.secret_hash and "pipeline-salt" not in str(r) for r in spans)
    stages = {r.stage for r in lake.read("stage_stats").collect()}
    assert {"licences", "redact"} <= stages
