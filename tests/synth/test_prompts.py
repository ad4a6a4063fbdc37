from __future__ import annotations

import pytest

from synth.prompts import PROMPTS_DIR, load_template, template_problems


def test_shipped_templates_load_and_keep_seed_braces_verbatim():
    files = sorted(PROMPTS_DIR.glob("*.yaml"))
    assert files
    for path in files:
        tpl = load_template(str(path))
        assert tpl.version >= 1
    tpl = load_template("oss_instruct_pretrain")
    seed = "int main() { return f\"{x}\"[0]; }"
    messages = tpl.messages(lang="cpp", seed=seed)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert seed in messages[1]["content"] and "```cpp" in messages[1]["content"]
    assert "C++" in messages[0]["content"]


def test_template_problems_name_the_key(tmp_path):
    assert template_problems({"id": "x", "version": 1, "user": "no seed {nope}"}, "t.yaml") == [
        "t.yaml: user: unknown placeholders ['nope']; use ['lang', 'language', 'seed']",
        "t.yaml: user: must contain {seed}",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nuser: '{seed}'\n")
    with pytest.raises(ValueError, match="missing key 'version'"):
        load_template(str(bad))


def test_chat_template_rendering(engine):
    tpl = load_template("oss_instruct_pretrain")
    prompt = engine.render_chat(tpl.messages(lang="python", seed="x = 1"))
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    assert "x = 1" in prompt
