"""Secret and PII detectors of the redaction stage (spark_jobs/redact.py): pure Python, no Spark, so the stage's
Arrow UDF, synth/postprocess.py and bench/redact.py share one implementation.

    from spark_jobs.redact_detectors import Detectors, RedactRules
    found = Detectors.get(RedactRules()).find(text)        # [Finding(kind, start, end, detector, value)]
    new_text = redact_text(text, found)                    # each span -> its StarCoder placeholder

Why our own rules and not detect-secrets' plugins or a PII library (numbers: `python bench/redact.py`, which runs
detect-secrets 1.5 on the same labelled set as its baseline): detect-secrets scans line by line with every plugin's
regexes in turn and reports the secret's value, not its position, at well under 1 MB/s; it has no e-mail detector,
its keyword plugin flags any quoted value after `password`/`secret` (placeholders and test fixtures included) and its
entropy plugins flag every long hex string (commit hashes, checksums). Presidio needs a spaCy model and is slower
still; datatrove and StarCoder use regexes for e-mails and IPs, as we do. The rules below follow the formats the
detect-secrets plugins (aws, github_token, slack, stripe, jwt, private_key, basic_auth, keyword) and BigCode's
`pii` scripts look for; each kind is measured separately (docs/curation.md#redaction).

Speed (goal 5 MB/s per core): a file is first checked with plain substring tests (`str.__contains__` runs at memory
speed) for the literal each format must contain (`AKIA`, `ghp_`, `-----BEGIN`, `@`, `://`, ...), on the original
text and once on the lowercased text for the assignment keywords; only kinds whose literal is present run their
regex. Most files then run one or two regexes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import hmac
import ipaddress
import math
import re
import string
from collections import Counter
from collections.abc import Iterable

# kind -> StarCoder placeholder (BigCode's pii redaction: <EMAIL>, <KEY>, <IP_ADDRESS>, <PASSWORD>)
PLACEHOLDERS: dict[str, str] = {
    "aws_access_key": "<KEY>",
    "github_token": "<KEY>",
    "slack_token": "<KEY>",
    "stripe_key": "<KEY>",
    "google_api_key": "<KEY>",
    "jwt": "<KEY>",
    "private_key": "<KEY>",
    "secret_assignment": "<KEY>",
    "connection_password": "<PASSWORD>",
    "password_assignment": "<PASSWORD>",
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
}
KINDS = tuple(PLACEHOLDERS)


@dataclasses.dataclass(frozen=True)
class Finding:
    kind: str
    start: int  # character offsets into the original text, end exclusive
    end: int
    detector: str
    value: str  # the secret itself: hashed by the stage, never written


@dataclasses.dataclass
class RedactRules:
    """The exceptions and thresholds (`redact.rules.*`; defaults documented in docs/curation.md#redaction)."""

    # Kinds to look for (default: all of KINDS).
    kinds: list[str] = dataclasses.field(default_factory=lambda: list(KINDS))
    # E-mail domains kept: the reserved example and test names (RFC 2606, RFC 6761) and their subdomains.
    email_allow_domains: list[str] = dataclasses.field(default_factory=lambda: [
        "example.com", "example.org", "example.net", "example.edu", "example", "test", "invalid", "localhost",
        "local", "domain.com", "email.com", "users.noreply.github.com"])
    # Local parts kept whatever the domain (`git@github.com:org/repo` is an SSH address, not a person).
    email_allow_local_parts: list[str] = dataclasses.field(default_factory=lambda: [
        "git", "noreply", "no-reply", "user", "username", "name", "your.name", "yourname", "you", "me", "someone",
        "foo", "bar", "test", "example"])
    # IP addresses kept: private, loopback, link-local, documentation (RFC 5737: 192.0.2/24, 198.51.100/24,
    # 203.0.113/24), multicast, reserved and unspecified ranges, i.e. everything `ipaddress` does not call global,
    # plus these networks (CIDR). Well-known public resolvers are kept too: they identify no one.
    ip_allow_networks: list[str] = dataclasses.field(default_factory=lambda: [
        "8.8.8.8/32", "8.8.4.4/32", "1.1.1.1/32", "1.0.0.1/32", "9.9.9.9/32", "208.67.222.222/32"])
    # A dotted quad preceded (within this many characters on its line) by one of these words is a version string
    # or a section number (`section 4.20.7.1`), not an address.
    ip_version_words: list[str] = dataclasses.field(default_factory=lambda: [
        "version", "ver", "release", "build", "v", "oid", "sdk", "api-version", "section", "sec", "clause",
        "chapter", "rfc", "iso", "posix", "figure", "table", "step"])
    ip_version_window: int = 24
    # A value containing one of these (case-insensitive) is a test fixture or placeholder and is kept
    # (AWS's documented AKIAIOSFODNN7EXAMPLE, `sk_test_`, `your_api_key_here`, `changeme`, `${DB_PASSWORD}`).
    fixture_markers: list[str] = dataclasses.field(default_factory=lambda: [
        "example", "sample", "dummy", "fake", "placeholder", "changeme", "change_me", "your", "xxxx", "****",
        "redacted", "${", "{{", "$(", "todo", "insert", "replace", "mock", "abcdefgh",
        "password", "secret", "foobar", "test"])
    # Files whose path matches one of these globs are not redacted (e.g. "*/tests/fixtures/*"); default none: a
    # real key in a test file is still a leak.
    keep_paths: list[str] = dataclasses.field(default_factory=list)
    # Assigned values: at least this long and this Shannon entropy (bits per character) to count as a secret.
    secret_min_length: int = 16
    secret_min_entropy: float = 3.0
    password_min_length: int = 8
    password_min_entropy: float = 2.5

    def validate(self) -> list[str]:
        problems = []
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            problems.append(f"kinds: unknown kind(s) {unknown}; known: {list(KINDS)}")
        for net in self.ip_allow_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                problems.append(f"ip_allow_networks: {net!r}: {exc}")
        if self.ip_version_window < 0:
            problems.append("ip_version_window: must be >= 0")
        return problems


# Assignment keywords: each hit of an anchor (in the lowercased text) is tried as `<identifier> = "<value>"`; the
# identifier decides the kind (a password word: password_assignment; a secret word: secret_assignment).
_ANCHORS = ("pass", "pwd", "secret", "token", "key", "credential")
_PASSWORD_WORDS = ("password", "passwd", "pwd", "passphrase")
_SECRET_WORDS = ("secret", "token", "api_key", "apikey", "api-key", "access_key", "accesskey", "private_key",
                 "auth_key", "credential", "signing_key", "encryption_key", "master_key", "secret_key")
_ASSIGN_AT = re.compile(r"""[\w.-]*["'\]]?\s*(?:=|:=|:|=>|,)\s*[rbuRBU]{0,2}(["'`])([^"'`\s]{6,256})\1""")
_IDENT_CHARS = frozenset(string.ascii_letters + string.digits + "_-.")
# A value that is a template or a reference, not a secret: ${VAR}, $VAR, %(name)s, {name}, {{ var }}, <name>.
_TEMPLATE = re.compile(r"\$\{?[\w.]+\}?|%\(?[\w.]*\)?[sdr]|\{\{?\s*[\w.]*\s*\}?\}|<[\w .-]+>|"
                       r"(?:os\.|env\.|process\.env)\S*")

_PATTERNS: dict[str, tuple[tuple[str, ...], str, int]] = {
    # kind: (literals, at least one of which the text must contain; regex; group holding the secret)
    "aws_access_key": (("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA"),
                       r"(?<![A-Z0-9])((?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16})(?![A-Z0-9])", 1),
    "github_token": (("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
                     r"(?<![A-Za-z0-9_])((?:gh[pousr]_[A-Za-z0-9]{36,251})|(?:github_pat_[A-Za-z0-9_]{80,90}))"
                     r"(?![A-Za-z0-9_])", 1),
    "slack_token": (("xox",), r"(?<![A-Za-z0-9])(xox[abposr]-[0-9A-Za-z]{8,}(?:-[0-9A-Za-z]{4,}){1,4})", 1),
    "stripe_key": (("_live_",), r"(?<![A-Za-z0-9])((?:sk|rk|pk)_live_[0-9A-Za-z]{20,99})(?![A-Za-z0-9])", 1),
    "google_api_key": (("AIza",), r"(?<![A-Za-z0-9_-])(AIza[0-9A-Za-z_\-]{35})(?![A-Za-z0-9_-])", 1),
    "jwt": (("eyJ",), r"(?<![A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})", 1),
    "private_key": (("-----BEGIN",),
                    r"(-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----[\s\S]{16,16384}?"
                    r"-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----)", 1),
    # scheme://user:password@host: the password alone is replaced (detect-secrets' basic_auth)
}
# One pass finds which of the formats above can occur at all: one regex whose alternatives are factored by their
# first characters (about 2x faster than the plain alternation of the literals, 3x faster than testing each literal
# with `in`); only the formats whose literal it met run their own regex.
_ANCHOR = re.compile(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|NPA|Iza)|gh(?:[pousr]_|ithub_pat_)|xox|_live_|eyJ|-----BEGIN")
_ANCHOR_KIND = {"AIza": "google_api_key", "gh": "github_token", "xox": "slack_token", "_live_": "stripe_key",
                "eyJ": "jwt", "-----BEGIN": "private_key", "AK": "aws_access_key", "AS": "aws_access_key",
                "AB": "aws_access_key", "AC": "aws_access_key", "AG": "aws_access_key", "AI": "aws_access_key",
                "AR": "aws_access_key", "AN": "aws_access_key"}
assert all(k in _ANCHOR_KIND.values() for k in _PATTERNS)

# These three are found from a literal anchor (`re` scans for a leading literal at memory speed, while a pattern
# that starts with a character class or a look-behind is tried at every position: 3-5 MB/s for the IP pattern).
_CONNECTION = re.compile(r"://[^\s:/@'\"<>]{1,100}:([^\s@/'\"<>]{3,200})@[A-Za-z0-9.\[-]")
_SCHEME_END = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{1,30}$")
_EMAIL_DOMAIN = re.compile(r"@((?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24})(?![A-Za-z0-9-]|\.[A-Za-z0-9])")
_EMAIL_LOCAL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}$")
_IP_HINT = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d")
_IP = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                 r"(?!\w|\.\w)")  # not inside a longer dotted run: an OID, a 5-part version, a host name
# A later kind whose span overlaps an earlier one's is dropped (specific formats first).
_PRIORITY = ("private_key", "aws_access_key", "github_token", "slack_token", "stripe_key", "google_api_key", "jwt",
             "connection_password", "password_assignment", "secret_assignment", "email", "ip_address")
# Things after `@` that look like a domain but are file names (`icon@2x.png`) or code (`obj@v1.method`).
_NOT_TLDS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "ts", "css", "py", "java", "json", "yaml",
             "yml", "xml", "html", "md", "txt", "so", "dll", "exe", "zip", "gz", "lock", "min", "map", "tsx", "jsx",
             "cpp", "rs", "go", "rb", "sh", "h", "c", "cc", "hpp", "php", "kt", "swift", "scala", "vue", "mjs",
             "cjs", "wasm", "pdf", "bak", "tmp", "log", "cfg", "ini", "toml", "lst", "dat", "bin", "pem"}


def shannon_entropy(s: str) -> float:
    """Bits per character of `s` (detect-secrets' high-entropy plugins use the same measure)."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _char_classes(s: str) -> int:
    return sum((any(c.islower() for c in s), any(c.isupper() for c in s), any(c.isdigit() for c in s),
                any(not c.isalnum() for c in s)))


class Detectors:
    """The compiled detectors of one `RedactRules` (built once per Python worker: `Detectors.get(rules)`)."""

    _cache: dict[str, Detectors] = {}

    def __init__(self, rules: RedactRules):
        problems = rules.validate()
        if problems:
            raise ValueError("redact.rules: " + "; ".join(problems))
        self.rules = rules
        self.kinds = set(rules.kinds)
        self.patterns = {k: (lits, re.compile(rx), g) for k, (lits, rx, g) in _PATTERNS.items() if k in self.kinds}
        self.assign = "password_assignment" in self.kinds or "secret_assignment" in self.kinds
        self.markers = tuple(m.lower() for m in rules.fixture_markers)
        self.email_domains = tuple(d.lower().lstrip(".") for d in rules.email_allow_domains)
        self.email_locals = {p.lower() for p in rules.email_allow_local_parts}
        self.ip_nets = [ipaddress.ip_network(n, strict=False) for n in rules.ip_allow_networks]
        words = "|".join(re.escape(w) for w in sorted(rules.ip_version_words, key=len, reverse=True))
        self.version_re = re.compile(rf"(?i)(?:\b|_)(?:{words})(?:\b|_|\d|$)[^\n]*$") if words else None

    @classmethod
    def get(cls, rules: RedactRules) -> Detectors:
        key = repr(rules)
        if key not in cls._cache:
            cls._cache[key] = Detectors(rules)
        return cls._cache[key]

    # ------------------------------------------------------------------ exceptions
    def is_fixture(self, value: str) -> bool:
        low = value.lower()
        return any(m in low for m in self.markers) or len(set(value)) <= 3

    def keep_email(self, text: str, start: int, value: str) -> bool:
        local, _, domain = value.lower().rpartition("@")
        if domain.rsplit(".", 1)[-1] in _NOT_TLDS or local in self.email_locals:
            return True
        if any(domain == d or domain.endswith("." + d) for d in self.email_domains):
            return True
        return text[max(0, start - 2):start] == "//"  # userinfo of a URL without a password (https://user@host)

    def keep_ip(self, text: str, start: int, end: int, value: str) -> bool:
        ip = ipaddress.ip_address(value)
        if not ip.is_global or ip.is_multicast or ip.is_reserved or any(ip in n for n in self.ip_nets):
            return True
        if text[max(0, start - 2):start] in ("==", ">=", "<=", "~=", "!="):  # a pinned version: pkg==1.2.3.4
            return True
        if self.version_re is None:
            return False
        line_start = text.rfind("\n", 0, start) + 1
        before = text[max(line_start, start - self.rules.ip_version_window):start]
        return bool(self.version_re.search(before))

    # ------------------------------------------------------------------ detection
    def find(self, text: str, path: str | None = None) -> list[Finding]:
        """Every finding in `text`, non-overlapping, in text order."""
        if not text or (path and any(fnmatch.fnmatch(path, g) for g in self.rules.keep_paths)):
            return []
        found: list[Finding] = []
        present = {_ANCHOR_KIND.get(a) or _ANCHOR_KIND[a[:2]] for a in set(_ANCHOR.findall(text))}
        for kind, (_, rx, group) in self.patterns.items():
            if kind not in present:
                continue
            for m in rx.finditer(text):
                s, e = m.span(group)
                value = m.group(group)
                if kind == "private_key":
                    if "EXAMPLE" in value or "..." in value:  # a long random body contains short markers by chance
                        continue
                elif self.is_fixture(value):
                    continue
                found.append(Finding(kind, s, e, f"regex:{kind}", value))
        if "connection_password" in self.kinds and "://" in text:
            found.extend(self._connections(text))
        if "email" in self.kinds and "@" in text:
            found.extend(self._emails(text))
        if "ip_address" in self.kinds:
            found.extend(self._ips(text))
        if self.assign:
            found.extend(self._assignments(text))
        return _resolve(found)

    def is_template(self, value: str) -> bool:
        return bool(_TEMPLATE.fullmatch(value)) or self.is_fixture(value)

    def _connections(self, text: str) -> Iterable[Finding]:
        for m in _CONNECTION.finditer(text):
            if not _SCHEME_END.search(text, max(0, m.start() - 31), m.start()):
                continue
            value = m.group(1)
            if not self.is_template(value):
                yield Finding("connection_password", *m.span(1), "regex:connection_password", value)

    def _emails(self, text: str) -> Iterable[Finding]:
        for m in _EMAIL_DOMAIN.finditer(text):
            at = m.start()
            local = _EMAIL_LOCAL.search(text, max(0, at - 64), at)
            if local is None:
                continue
            value = text[local.start():m.end()]
            if not self.keep_email(text, local.start(), value):
                yield Finding("email", local.start(), m.end(), "regex:email", value)

    def _ips(self, text: str) -> Iterable[Finding]:
        last = -1
        for hint in _IP_HINT.finditer(text):
            if hint.start() < last:
                continue
            m = _IP.search(text, max(0, hint.start() - 3), min(len(text), hint.end() + 8))
            if m is None:
                continue
            last = m.end()
            if not self.keep_ip(text, m.start(), m.end(), m.group()):
                yield Finding("ip_address", m.start(), m.end(), "regex:ip_address", m.group())

    def _assignments(self, text: str) -> Iterable[Finding]:
        r = self.rules
        low = text.lower()
        seen: set[int] = set()
        for anchor in _ANCHORS:
            i = low.find(anchor)
            while i >= 0:
                m = _ASSIGN_AT.match(text, i + len(anchor))
                i = low.find(anchor, i + 1)
                if m is None or m.start(2) in seen:
                    continue
                seen.add(m.start(2))
                key_start = m.start() - len(anchor)
                while key_start > 0 and text[key_start - 1] in _IDENT_CHARS:
                    key_start -= 1
                key = low[key_start:m.start(1)]
                value = m.group(2)
                if self.is_template(value) or value.startswith(("http", "@")) or _is_path(value):
                    continue
                s, e = m.span(2)
                if any(w in key for w in _PASSWORD_WORDS):
                    if ("password_assignment" in self.kinds and len(value) >= r.password_min_length
                            and shannon_entropy(value) >= r.password_min_entropy and _char_classes(value) >= 2):
                        yield Finding("password_assignment", s, e, "keyword:password", value)
                elif any(w in key for w in _SECRET_WORDS):
                    if ("secret_assignment" in self.kinds and len(value) >= r.secret_min_length
                            and shannon_entropy(value) >= r.secret_min_entropy and _char_classes(value) >= 2
                            and not _is_hash_or_uuid(value)):
                        yield Finding("secret_assignment", s, e, "entropy:assignment", value)


_HEX = re.compile(r"[0-9a-fA-F]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


_PATH = re.compile(r"/?(?:[\w.-]+/)*[\w.-]*")


def _is_path(value: str) -> bool:
    """`/etc/app/token`, `keys/private_key.pem`: a file, not a secret. A base64 secret may start with or contain `/`
    too, but not as path segments: those are short, or hold a dot, dash or underscore."""
    if "/" not in value or not _PATH.fullmatch(value):
        return False
    return all(len(seg) < 24 or any(c in seg for c in "._-") for seg in value.split("/"))


def _is_hash_or_uuid(value: str) -> bool:
    """Digests (md5/sha1/sha256 hex) and UUIDs name content, not credentials: the near-misses of the bench."""
    return bool(_UUID.fullmatch(value)) or (len(value) in (32, 40, 56, 64, 96, 128) and bool(_HEX.fullmatch(value)))


def _resolve(found: list[Finding]) -> list[Finding]:
    """Non-overlapping findings: by priority of kind, then earliest start; returned in text order."""
    rank = {k: i for i, k in enumerate(_PRIORITY)}
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (rank[f.kind], f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def redact_text(text: str, findings: list[Finding]) -> str:
    """`text` with every finding's span replaced by its kind's placeholder (findings non-overlapping, in order)."""
    out, pos = [], 0
    for f in findings:
        out.append(text[pos:f.start])
        out.append(PLACEHOLDERS[f.kind])
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def salted_hash(value: str, salt: bytes) -> str:
    """HMAC-SHA256 of a secret under the salt (hex): the same secret is recognisable across files, never readable."""
    return hmac.new(salt, value.encode("utf-8"), hashlib.sha256).hexdigest()
