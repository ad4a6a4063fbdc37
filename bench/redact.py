"""Redaction detectors on a labelled set: recall and precision per kind, speed per core, vs detect-secrets.

    .venv/bin/python bench/redact.py [--hosts 160] [--seed 24] [--speed-mb 40]
    .venv/bin/python bench/redact.py --baseline-mb 0.5 --baseline-hosts 48   # detect-secrets' share

The labelled set is built in the run (seeded, so the same every time) from real code on this machine, the sources
`scripts/local_corpus.py` also uses: the Python standard library, C headers under /usr/include, the JDK's src.zip
(Java), Go's own sources, npm's JavaScript and shell scripts. A host file is taken only when a broad,
detector-independent check finds no candidate in it (no `@x.y`, no dotted quad, no secret keyword, no `-----BEGIN`),
so every finding lands on a labelled span (a host with unlabelled real addresses could not be scored). Into each
host, at random lines and in the language's own syntax (assignments, comments, string literals), go:
- planted secrets, each kind evenly: AWS access key ids, GitHub tokens, Slack tokens, Stripe live keys, Google API
  keys, JWTs, PEM private keys, passwords in connection strings, password assignments, high-entropy secret
  assignments, e-mail addresses, public IP addresses (12 kinds; `--hosts 160` plants 3 per host, 480 in all);
- near-misses (labelled "none"): AWS's documented example key, `sk_test_` keys, `ghp_xxxx...`, placeholder passwords
  (`changeme`, `${DB_PASSWORD}`), `your_api_key_here`, example/test e-mail domains, `@2x.png` names, private,
  loopback and documentation IPs, version strings (`__version__ = "1.2.3.4"`, `pkg==4.5.6.7`), UUIDs and hex
  digests assigned to id/hash names.

Scoring: a finding is a true positive when it overlaps a planted span of its own kind; every other finding is a
false positive of its kind (on a near-miss, on a planted span of another kind or in host code). recall[k] = found
planted k / planted k, precision[k] = true positives of kind k / findings of kind k. `recall` and `precision` in
RESULT are the minimum over kinds.

Speed: single-threaded (one core) `Detectors.find` + `redact_text` over `--speed-mb` MB of the host files as they
are (real code, no planted secrets), after one untimed pass. Baseline in the same run: detect-secrets 1.5 with its
default plugins, `scan_line` over every line of the first `--baseline-mb` MB (its throughput), and its recall per
kind (matching by the planted value) and the near-misses it flags on the first `--baseline-hosts` labelled files
(it runs at ~0.015 MB/s, so not all of them). Ends with one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import random
import re
import string
import sys
import sysconfig
import time
import zipfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(REPO / "bench")]
sys.path.insert(0, str(REPO))

from spark_jobs.redact_detectors import KINDS, Detectors, RedactRules, redact_text  # noqa: E402

# Broad, detector-independent: anything that could be a secret, an address or an IP disqualifies a host file.
CANDIDATE = re.compile(r"(?i)[\w.+-]@[\w-]+\.\w|\d+\.\d+\.\d+\.\d+|password|passwd|secret|token|api_?key|"
                       r"-----BEGIN|://\S*:\S*@|AKIA|AIza|eyJ|xox[a-z]-|gh[pousr]_|_live_")

# language -> (assignment template, comment prefix, block comment (open, close) or None)
SYNTAX = {
    "python": ('{name} = "{value}"', "# ", ('"""', '"""')),
    "c": ('static const char *{name} = "{value}";', "// ", ("/*", "*/")),
    "java": ('    private static final String {name} = "{value}";', "// ", ("/*", "*/")),
    "go": ('var {name} = "{value}"', "// ", ("/*", "*/")),
    "javascript": ("const {name} = '{value}';", "// ", ("/*", "*/")),
    "shell": ('export {name}="{value}"', "# ", ("cat > id_key <<'EOF'", "EOF")),
}


def _files_of(lang: str) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    if lang == "python":
        root = Path(sysconfig.get_paths()["stdlib"])
        out = [(str(p), p.read_bytes()) for p in sorted(root.glob("*.py"))]
    elif lang == "c":
        out = [(str(p), p.read_bytes()) for p in sorted(Path("/usr/include").glob("*.h"))]
    elif lang == "java":
        for z in sorted(Path("/usr/lib/jvm").glob("*/lib/src.zip"))[:1]:
            with zipfile.ZipFile(z) as zf:
                names = sorted(n for n in zf.namelist()
                               if n.startswith("java.base/java/util/") and n.endswith(".java"))
                out = [(n, zf.read(n)) for n in names]
    elif lang == "go":
        out = [(str(p), p.read_bytes()) for p in sorted(Path("/usr/local/go/src").glob("*/*.go"))]
    elif lang == "javascript":
        out = [(str(p), p.read_bytes()) for p in sorted(Path("/usr/lib/node_modules/npm/lib").rglob("*.js"))]
    elif lang == "shell":
        for d in ("/usr/bin", "/usr/sbin", "/usr/share/debconf", "/etc/init.d"):
            for p in sorted(Path(d).glob("*")) if os.path.isdir(d) else []:
                try:
                    if p.is_file() and not p.is_symlink() and p.stat().st_size < 200_000:
                        head = p.open("rb").read(64)
                        if head.startswith((b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash")):
                            out.append((str(p), p.read_bytes()))
                except OSError:
                    continue
    texts = []
    for name, data in out:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if 300 < len(text) < 200_000:
            texts.append((name, text))
    return texts


# ---------------------------------------------------------------------- planted values
def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"
DOMAINS = ["gmail.com", "acme-corp.io", "fastmail.fm", "uni-heidelberg.de", "corp.initech.com", "outlook.com",
           "protonmail.ch", "company.co.uk"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _public_ip(rng: random.Random) -> str:
    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        # a host's address: global unicast (multicast and reserved ranges are kept by design, docs/curation.md)
        unicast = ip.is_global and not ip.is_multicast and not ip.is_reserved
        if unicast and str(ip).split(".")[0] not in ("8", "9", "1"):
            return str(ip)


def secret_value(kind: str, rng: random.Random) -> tuple[str, str]:
    """(key name, value) of one planted secret of `kind`."""
    if kind == "aws_access_key":
        return "AWS_ACCESS_KEY_ID", "AKIA" + _rand(rng, string.ascii_uppercase + "234567", 16)
    if kind == "github_token":
        return "GH_DEPLOY", "ghp_" + _rand(rng, ALNUM, 36)
    if kind == "slack_token":
        return "SLACK_BOT", "xoxb-" + _rand(rng, string.digits, 12) + "-" + _rand(rng, string.digits, 13) + "-" + \
            _rand(rng, ALNUM, 24)
    if kind == "stripe_key":
        return "STRIPE", "sk_live_" + _rand(rng, ALNUM, rng.choice([24, 32, 99]))
    if kind == "google_api_key":
        return "MAPS", "AIza" + _rand(rng, B64URL, 35)
    if kind == "jwt":
        head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64url(json.dumps({"sub": _rand(rng, string.digits, 8), "name": _rand(rng, string.ascii_lowercase, 6),
                                   "iat": rng.randint(1.5e9, 1.8e9)}).encode())
        return "SESSION_JWT", f"{head}.{body}.{_b64url(rng.randbytes(32))}"
    if kind == "connection_password":
        scheme = rng.choice(["postgres", "mysql", "mongodb+srv", "redis", "amqp"])
        user = rng.choice(["admin", "app", "svc_orders", "root"])
        pw = _rand(rng, ALNUM + "!*~", rng.randint(10, 20))
        host = rng.choice(["db.prod.internal-corp.net", "cluster0.ab1cd.mongodb.net", "10.2.3.4", "cache.acme.io"])
        return "DATABASE_URL", f"{scheme}://{user}:{pw}@{host}:5432/main"
    if kind == "password_assignment":
        return rng.choice(["password", "DB_PASSWORD", "adminPassword", "smtp_passwd"]), \
            _rand(rng, ALNUM + "!#%^&*", rng.randint(10, 18))
    if kind == "secret_assignment":
        return rng.choice(["api_key", "SECRET_KEY", "client_secret", "auth_token", "ACCESS_TOKEN"]), \
            rng.choice([_rand(rng, ALNUM, 32), _rand(rng, string.hexdigits.lower(), 36),
                        base64.b64encode(rng.randbytes(30)).decode()])
    if kind == "email":
        first, last = _rand(rng, string.ascii_lowercase, rng.randint(3, 8)), _rand(rng, string.ascii_lowercase, 6)
        return "", f"{first}.{last}@{rng.choice(DOMAINS)}"
    if kind == "ip_address":
        return "", _public_ip(rng)
    if kind == "private_key":
        body = base64.b64encode(rng.randbytes(rng.choice([120, 600, 1190]))).decode()
        label = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        return "", "\n".join([f"-----BEGIN {label}PRIVATE KEY-----", *lines, f"-----END {label}PRIVATE KEY-----"])
    raise ValueError(kind)


def _dotted(rng: random.Random, *ranges: tuple[int, int]) -> str:
    return ".".join(str(rng.randint(lo, hi)) for lo, hi in ranges)


def near_miss(rng: random.Random) -> tuple[str, str, str]:
    """(near-miss kind, key name or "", value)."""
    hexs = string.hexdigits.lower()[:16]
    choices = [
        ("test_key", "AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        ("test_key", "STRIPE", "sk_test_" + _rand(rng, ALNUM, 24)),
        ("test_key", "GH", "ghp_" + "x" * 36),
        ("test_key", "password", rng.choice(["changeme", "${DB_PASSWORD}", "<password>", "********", "hunter"])),
        ("test_key", "api_key", rng.choice(["your_api_key_here", "REPLACE_ME_WITH_KEY", "dummy-api-key-000"])),
        ("test_key", "DATABASE_URL", "postgres://user:${PGPASSWORD}@localhost/db"),
        ("example_email", "", rng.choice(["user@example.com", "jane.doe@example.org", "ops@test", "a@b.example"])),
        ("example_email", "", rng.choice(["icon@2x.png", "logo@3x.webp"])),
        ("private_ip", "", rng.choice(["10.0.0.1", "192.168.1.10", "127.0.0.1", "172.16.4.20", "203.0.113.7",
                                       "198.51.100.23", "0.0.0.0", "255.255.255.0"])),
        ("version", "__version__", _dotted(rng, (1, 20), (0, 9), (0, 9), (1, 99))),
        ("version", "", "requests==" + _dotted(rng, (2, 9), (0, 30), (0, 9), (1, 9))),
        ("uuid", rng.choice(["request_id", "trace_id", "token_id"]),
         "-".join(_rand(rng, hexs, n) for n in (8, 4, 4, 4, 12))),
        ("hash", rng.choice(["sha256", "checksum", "commit", "token_digest"]), _rand(rng, hexs, rng.choice([40, 64]))),
    ]
    return rng.choice(choices)


def _line(lang: str, name: str, value: str, rng: random.Random) -> str:
    assign, comment, block = SYNTAX[lang]
    if "\n" in value:  # a PEM block: inside a block comment/docstring, or commented line by line
        if block:
            return f"{block[0]}\n{value}\n{block[1]}"
        return "\n".join(comment + v for v in value.split("\n"))
    if not name:
        return rng.choice([f"{comment}contact: {value}", f"{comment}see {value} for details",
                           assign.format(name="HOST" if value[0].isdigit() else "OWNER", value=value)])
    return assign.format(name=name, value=value)


def build_set(hosts: list[tuple[str, str, str]], *, per_host: int, near_per_host: int, seed: int):
    """-> [(lang, text, [(start, end, kind)], [(start, end, near kind)])]"""
    rng = random.Random(seed)
    kinds = list(KINDS)
    plan = [kinds[i % len(kinds)] for i in range(len(hosts) * per_host)]
    rng.shuffle(plan)
    out = []
    for i, (lang, _, text) in enumerate(hosts):
        lines = text.split("\n")
        inserts = [("secret", k) for k in plan[i * per_host:(i + 1) * per_host]] + \
            [("near", None)] * near_per_host
        positions = sorted(rng.randrange(len(lines) + 1) for _ in inserts)
        rng.shuffle(inserts)
        # rebuild the text with each insertion on its own line(s), recording the planted spans
        pieces: list[str] = []
        labels, nears = [], []
        cursor = 0
        pos = 0
        for (what, kind), at in zip(inserts, positions):
            chunk = "\n".join(lines[cursor:at])
            if chunk or cursor < at:
                pieces.append(chunk + "\n")
                pos += len(chunk) + 1
            cursor = at
            if what == "secret":
                name, value = secret_value(kind, rng)
                if kind == "connection_password":
                    value_span = value.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
                line = _line(lang, name, value, rng)
                target = value_span if kind == "connection_password" else value
                s = pos + line.index(target)
                labels.append((s, s + len(target), kind))
            else:
                nkind, name, value = near_miss(rng)
                line = SYNTAX[lang][1] + value if value.startswith("requests==") else _line(lang, name, value, rng)
                s = pos + line.index(value)
                nears.append((s, s + len(value), nkind))
            pieces.append(line + "\n")
            pos += len(line) + 1
        pieces.append("\n".join(lines[cursor:]))
        out.append((lang, "".join(pieces), labels, nears))
    return out


def score(dataset, detectors: Detectors) -> tuple[dict, dict, Counter]:
    planted, found_k, tp_find, tp_plant = Counter(), Counter(), Counter(), Counter()
    fp_where: Counter = Counter()
    for _, text, labels, nears in dataset:
        findings = detectors.find(text)
        assert redact_text(text, findings) is not None
        for s, e, k in labels:
            planted[k] += 1
            if any(f.kind == k and f.start < e and s < f.end for f in findings):
                tp_plant[k] += 1
        for f in findings:
            found_k[f.kind] += 1
            if any(f.kind == k and f.start < e and s < f.end for s, e, k in labels):
                tp_find[f.kind] += 1
            else:
                near = next((nk for s, e, nk in nears if f.start < e and s < f.end), None)
                fp_where[f"{f.kind} on {near or 'other'}"] += 1
    recall = {k: tp_plant[k] / planted[k] for k in KINDS if planted[k]}
    precision = {k: (tp_find[k] / found_k[k] if found_k[k] else 1.0) for k in KINDS if planted[k]}
    return {"recall": recall, "precision": precision, "planted": dict(planted), "findings": dict(found_k)}, \
        fp_where, planted


def detect_secrets_baseline(dataset, speed_texts: list[str], baseline_mb: float, baseline_hosts: int) -> dict:
    """detect-secrets with its default plugins, line by line: throughput and recall per kind (by value)."""
    try:
        from detect_secrets.core.scan import scan_line
        from detect_secrets.settings import default_settings
    except ImportError:
        return {"error": "detect-secrets not installed (pip install detect-secrets)"}
    with default_settings():
        budget, lines = int(baseline_mb * 1e6), []
        for t in speed_texts:
            for line in t.split("\n"):
                lines.append(line)
                budget -= len(line) + 1
            if budget <= 0:
                break
        nbytes = sum(len(x.encode()) + 1 for x in lines)
        t0 = time.perf_counter()
        for line in lines:
            for _ in scan_line(line):
                pass
        mbps = nbytes / 1e6 / (time.perf_counter() - t0)
        planted, hit, near_hits, n_near = Counter(), Counter(), 0, 0
        for _, text, labels, nears in dataset[:baseline_hosts]:
            values = set()
            for line in text.split("\n"):
                values.update(str(s.secret_value) for s in scan_line(line))
            for s, e, k in labels:
                planted[k] += 1
                target = text[s:e]
                first = target.split("\n", 1)[0]
                if any(first in v or (v and v in target) for v in values):
                    hit[k] += 1
            for s, e, _ in nears:
                n_near += 1
                near_hits += any(v and (v in text[s:e] or text[s:e] in v) for v in values)
    return {"mb_per_s_per_core": round(mbps, 3), "hosts": min(baseline_hosts, len(dataset)),
            "recall": {k: round(hit[k] / planted[k], 3) for k in planted},
            "near_misses_flagged": f"{near_hits}/{n_near}"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=160)
    ap.add_argument("--per-host", type=int, default=3)
    ap.add_argument("--near-per-host", type=int, default=3)
    ap.add_argument("--seed", type=int, default=24)
    ap.add_argument("--speed-mb", type=float, default=40.0)
    ap.add_argument("--baseline-mb", type=float, default=0.5)
    ap.add_argument("--baseline-hosts", type=int, default=48)
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    pools = {lang: _files_of(lang) for lang in SYNTAX}
    usable = {lang: [(n, t) for n, t in files if not CANDIDATE.search(t)] for lang, files in pools.items()}
    langs = [lang for lang in SYNTAX if usable[lang]]
    hosts = []
    for i in range(args.hosts):
        lang = langs[i % len(langs)]
        name, text = rng.choice(usable[lang])
        hosts.append((lang, name, text))
    dataset = build_set(hosts, per_host=args.per_host, near_per_host=args.near_per_host, seed=args.seed)
    detectors = Detectors.get(RedactRules())
    quality, fp_where, planted = score(dataset, detectors)
    near_counts = Counter(nk for *_, nears in dataset for *_, nk in nears)

    # speed on real code as it is (every file of every pool, round robin, up to --speed-mb)
    speed_texts, budget = [], int(args.speed_mb * 1e6)
    for files in pools.values():
        random.Random(args.seed).shuffle(files)
    iters = [iter(v) for v in pools.values()]
    while budget > 0 and iters:
        for it in list(iters):
            item = next(it, None)
            if item is None:
                iters.remove(it)
                continue
            speed_texts.append(item[1])
            budget -= len(item[1].encode())
    nbytes = sum(len(t.encode()) for t in speed_texts)
    for t in speed_texts[:200]:
        detectors.find(t)
    t0 = time.perf_counter()
    n_found = 0
    for t in speed_texts:
        f = detectors.find(t)
        n_found += len(f)
        redact_text(t, f)
    secs = time.perf_counter() - t0
    mbps = nbytes / 1e6 / secs
    baseline = detect_secrets_baseline(dataset, speed_texts, args.baseline_mb, args.baseline_hosts)

    print(f"labelled set: {len(dataset)} host files ({dict(Counter(h[0] for h in hosts))}), "
          f"{sum(planted.values())} planted secrets of {len(planted)} kinds, {sum(near_counts.values())} near-misses "
          f"{dict(near_counts)}")
    print(f"{'kind':<22} {'planted':>7} {'found':>6} {'recall':>7} {'precision':>9}  detect-secrets recall")
    for k in KINDS:
        if k in quality["recall"]:
            print(f"{k:<22} {quality['planted'][k]:>7} {quality['findings'].get(k, 0):>6} "
                  f"{quality['recall'][k]:>7.3f} {quality['precision'][k]:>9.3f}  "
                  f"{baseline.get('recall', {}).get(k, float('nan')):.3f}")
    if fp_where:
        print("false positives:", dict(fp_where))
    print(f"speed: {nbytes / 1e6:.1f} MB of real code in {secs:.2f} s = {mbps:.2f} MB/s on one core "
          f"({n_found} findings in host code); detect-secrets: {baseline.get('mb_per_s_per_core')} MB/s")
    result = {
        "recall": round(min(quality["recall"].values()), 4),
        "precision": round(min(quality["precision"].values()), 4),
        "mb_per_s_per_core": round(mbps, 2),
        "recall_per_kind": {k: round(v, 4) for k, v in quality["recall"].items()},
        "precision_per_kind": {k: round(v, 4) for k, v in quality["precision"].items()},
        "planted": sum(planted.values()), "kinds": len(planted), "near_misses": sum(near_counts.values()),
        "host_files": len(dataset), "languages": sorted({h[0] for h in hosts}),
        "speed_mb": round(nbytes / 1e6, 1), "findings_in_host_code": n_found,
        "detect_secrets": baseline,
        "speedup_vs_detect_secrets": (round(mbps / baseline["mb_per_s_per_core"], 1)
                                      if baseline.get("mb_per_s_per_core") else None),
    }
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
