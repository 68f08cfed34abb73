"""The custom guard policy example, driven by a scripted model."""

import io

from test_examples import load

from agent.llm import ScriptedLLM
from agent.testing import call


def test_custom_policy_asks_blocks_and_redacts(tmp_path):
    from guards import terminal_approver

    example = load("custom_guard")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db.txt").write_text("root password\n")
    (tmp_path / "config.txt").write_text("api_key = sk-live-0123456789abcdefghijklmnopqrstuv\n")
    answers = io.StringIO("n\ny\n")  # refuse the first python cell, approve the second
    shown = io.StringIO()
    llm = ScriptedLLM(
        [
            call("python", code="print(1 + 1)"),
            call("python", code="cur.execute('drop table users')"),
            call("read_file", path="secrets/db.txt"),
            call("read_file", path="config.txt"),
            call("open_url", url="https://example.com/"),
            call("python", code="print(6 * 7)"),
            "Done: 42, and I left the tables alone.",
        ]
    )
    agent = example.make_agent(
        llm, workspace=str(tmp_path), approver=terminal_approver(answers, shown), run_dir=tmp_path / "runs"
    )
    with agent:
        result = agent.run_sync("clean up")
    assert result.ok, result.error
    outputs = [e for e in result.events if e.type == "tool_result"]
    kinds = [o.error_kind for o in outputs]
    # 1: refused by the person; 2: our drop_table pattern; 3: denied path; 5: host not allowed
    assert kinds[:3] == ["blocked"] * 3 and kinds[4] == "blocked"
    assert "refused" in outputs[0].content
    assert "drop_table" in outputs[1].content
    assert "protected location" in outputs[2].content
    assert "not on the allow list" in outputs[4].content
    assert "sk-live-0123456789" not in outputs[3].content and not outputs[3].is_error
    assert outputs[5].content.strip().endswith("42")
    verdicts = [e for e in result.events if e.type == "guard_verdict"]
    assert any(v.action == "allow" for v in verdicts)  # verbose policy records allows too
    assert "python" in shown.getvalue()
