"""Every example runs, driven by a scripted model."""

import importlib.util
import json
import sys
from pathlib import Path

from agent.llm import ScriptedLLM
from agent.testing import call

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_file_refactor_asks_before_each_write(tmp_path):
    example = load("file_refactor")
    (tmp_path / "app.py").write_text("def fetch(url):\n    return url\n\nprint(fetch('x'))\n")
    llm = ScriptedLLM(
        [
            "1. read app.py\n2. rename\n3. summarise",  # plan
            call("read_file", path="app.py"),
            call("edit_file", path="app.py", old="def fetch(url):", new="def load_page(url):"),
            call("edit_file", path="app.py", old="print(fetch('x'))", new="print(load_page('x'))"),
            call("write_file", path="NOTES.md", content="renamed"),
            "The user refused the notes file; I will not write it.",  # reflection after the refusal
            "Renamed fetch to load_page in app.py.",
        ]
    )
    decisions = iter([True, True, False])
    asked = []

    def approver(request):
        asked.append((request.name, request.arguments["path"]))
        return next(decisions)

    agent = example.make_agent(str(tmp_path), llm, approver=approver, run_dir=tmp_path / "runs", replan_every=0)
    result = agent.run_sync("Rename fetch to load_page")
    assert result.ok
    assert (tmp_path / "app.py").read_text() == "def load_page(url):\n    return url\n\nprint(load_page('x'))\n"
    assert not (tmp_path / "NOTES.md").exists()
    assert asked == [("edit_file", "app.py"), ("edit_file", "app.py"), ("write_file", "NOTES.md")]


def test_batch_script_over_a_jsonl_file(tmp_path):
    example = load("batch_tasks")
    answers = {"France": "Paris.", "Japan": "Tokyo.", "sky": "Blue.", "hot": "Cold."}

    def answer(request):
        question = request.messages[-1].content
        return next(text for key, text in answers.items() if key in question)

    model = ScriptedLLM([answer] * 4)
    out = tmp_path / "results.jsonl"
    summary = example.run(str(EXAMPLES / "tasks.jsonl"), str(out), model=model)
    assert summary["all_ok"] and summary["correct"] == 4
    assert len(out.read_text().splitlines()) == 4
    # rerunning resumes: nothing left to do, no duplicate lines
    summary = example.run(str(EXAMPLES / "tasks.jsonl"), str(out), model=ScriptedLLM([]))
    assert summary["tasks"] == 4 and len(out.read_text().splitlines()) == 4
    assert {json.loads(line)["id"] for line in out.read_text().splitlines()} == {
        "capital-fr", "capital-jp", "colour-sky", "opposite-hot"
    }  # fmt: skip


def test_data_analysis_writes_a_csv_reads_it_back_and_plots(tmp_path):
    example = load("data_analysis")
    make_csv = (
        "import csv\n"
        "with open('squares.csv', 'w', newline='') as f:\n"
        "    w = csv.writer(f)\n"
        "    w.writerow(['n', 'square'])\n"
        "    w.writerows([(n, n * n) for n in range(1, 11)])\n"
        "print('wrote squares.csv')"
    )
    plot = (
        "import csv\n"
        "import matplotlib\n"
        "matplotlib.use('module://matplotlib_inline.backend_inline')\n"
        "import matplotlib.pyplot as plt\n"
        "rows = list(csv.DictReader(open('squares.csv')))\n"
        "plt.plot([int(r['n']) for r in rows], [int(r['square']) for r in rows])\n"
        "plt.title('squares')\n"
        "plt.show()"
    )
    llm = ScriptedLLM(
        [
            call("python", code=make_csv),
            call("read_file", path="squares.csv", start_line=1, end_line=3),
            call("python", code=plot),
            "squares.csv holds n and n squared for 1..10; the plot is in outputs/.",
        ]
    )
    with example.make_agent(str(tmp_path), llm, run_dir=tmp_path / "runs") as agent:
        result = agent.run_sync("Make a CSV of squares and plot it")
    assert result.ok, result.error
    outputs = [e for e in result.events if e.type == "tool_result"]
    assert [o.is_error for o in outputs] == [False, False, False], [o.content for o in outputs]
    assert "wrote squares.csv" in outputs[0].content
    assert "n,square" in outputs[1].content and "1,1" in outputs[1].content
    images = list((tmp_path / "outputs").glob("*.png"))
    assert len(images) == 1 and images[0].read_bytes().startswith(b"\x89PNG")
    assert images[0].name in outputs[2].content
    assert (tmp_path / "squares.csv").read_text().splitlines()[-1] == "10,100"
