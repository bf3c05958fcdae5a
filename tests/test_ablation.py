"""The RAFT ablation: training formats differ only in their data, fixed test prompts, the verdict, and
one end-to-end run at the smallest size (three adapters, four evaluations, every table cell)."""
from __future__ import annotations

import copy
import json
import statistics

import pytest

from workshop_utils import ablation as A
from workshop_utils.ablation import AblationPlan, AblationResult
from workshop_utils.config import load_config

FMT = {f.key: f for f in A.FORMATS}


def train_rows(prepared, key: str, k: int = 2, seed: int = 0, limit: int = 0) -> list[dict]:
    return A.training_examples(prepared.records, prepared.split_of, prepared.corpus, FMT[key],
                               load_config(size="tiny").data, k, seed, limit)


def test_golden_only_format_holds_the_golden_document_alone(prepared):
    rows = train_rows(prepared, "golden_only")
    assert len(rows) == prepared.summary["splits"]["train"]
    assert all(r["doc_ids"] == [r["golden_doc_id"]] and r["golden_index"] == 0 for r in rows)
    assert all("##begin_quote##" in r["cot"] for r in rows)


def test_raft_formats_share_contexts_and_differ_only_in_the_cot_target(prepared):
    b, c = train_rows(prepared, "raft"), train_rows(prepared, "raft_no_cot")
    assert [r["context"] for r in b] == [r["context"] for r in c]
    assert all("cot" in r for r in b) and not any("cot" in r for r in c)
    without = [r for r in b if r["golden_index"] is None]
    assert 0.12 < len(without) / len(b) < 0.28  # P = 0.8
    assert all(len(r["context"]) == 2 for r in without)
    assert all(len(r["context"]) == 3 and r["doc_ids"][r["golden_index"]] == r["golden_doc_id"]
               for r in b if r["golden_index"] is not None)
    # distractors come from training documents only
    assert all(prepared.split_of[d] == "train" for r in b for d in r["doc_ids"])
    # another seed draws other distractors; the limit is a seeded sample
    assert [r["doc_ids"] for r in train_rows(prepared, "raft", seed=1)] != [r["doc_ids"] for r in b]
    sample = train_rows(prepared, "raft", limit=5)
    assert len(sample) == 5 and sample == train_rows(prepared, "raft", limit=5)


def test_test_sets_ask_the_same_questions_with_k_documents(prepared, tiny_cfg):
    test = prepared.splits["test"][:3]
    sets = A.test_sets(test, prepared.corpus.records(), tiny_cfg, (1, 3, 5))
    assert list(sets) == A.setting_keys((1, 3, 5))
    for key, es in sets.items():
        assert [e["question"] for e in es.examples] == [e["question"] for e in test]
        assert {len(e["context"]) for e in es.examples} == {A.setting_docs(key, tiny_cfg.data.num_distractors)}, key
    assert all(e["golden_index"] is not None for e in sets["golden_distractors"].examples)


def result(values: dict[tuple[str, str], list[float]], seeds=(0, 1, 2)) -> AblationResult:
    rows = []
    for (fmt, setting), vals in values.items():
        for seed, v in zip(seeds if fmt != A.BASE else [None], vals):
            rows.append({"format": fmt, "seed": seed, "setting": setting, "docs": A.setting_docs(setting, 2),
                         **{m: v for m in A.METRICS}})
    return AblationResult(rows=rows, meta={"seeds": list(seeds), "rag_ks": [1, 3, 5], "num_distractors": 2,
                                           "metric": "rougeL"})


def full_grid(raft_rag: list[float], golden_rag: list[float]) -> dict:
    grid = {}
    for s in A.setting_keys((1, 3, 5)):
        rag = s.startswith("rag_top")
        grid[(A.BASE, s)] = [0.05]
        grid[("golden_only", s)] = golden_rag if rag else [0.40, 0.42, 0.41]
        grid[("raft", s)] = raft_rag if rag else [0.41, 0.40, 0.42]
        grid[("raft_no_cot", s)] = [0.30, 0.31, 0.29]
    return grid


def test_verdict_says_reproduced_only_beyond_the_seed_spread():
    beyond = result(full_grid([0.50, 0.52, 0.51], [0.30, 0.31, 0.29]))
    rag = ["rag_top1", "rag_top3", "rag_top5"]
    assert [c.outcome for c in beyond.compare("golden_only", "raft", rag)] == ["higher"] * 3
    assert "논문의 방향이 재현됩니다" in beyond.verdict()
    within = result(full_grid([0.32, 0.28, 0.36], [0.30, 0.34, 0.29]))
    assert "편차 안" in within.verdict() and "재현됩니다" not in within.verdict()
    opposite = result(full_grid([0.20, 0.21, 0.19], [0.30, 0.31, 0.29]))
    assert "반대 방향" in opposite.verdict()
    one_seed = result({k: v[:1] for k, v in full_grid([0.5] * 3, [0.3] * 3).items()}, seeds=(0,))
    assert "시드가 하나뿐" in one_seed.verdict()


def test_table_has_mean_and_spread_in_every_cell():
    res = result(full_grid([0.1, 0.3, 0.2], [0.30, 0.31, 0.29]))
    table = res.table()
    assert table.shape == (4, 5) and (table != "").all().all()
    sd = statistics.stdev([0.1, 0.3, 0.2])
    assert table.loc[A.FORMAT_LABELS["raft"], "RAG top-3"] == f"0.200 ± {sd:.3f}"
    assert table.loc[A.BASE_LABEL, "골든+방해 (문서 3)"] == "0.050"
    assert res.markdown().count("\n|") == 5  # separator + 4 formats
    assert res.plot() is not None


def test_plan_and_overrides_refuse_bad_input():
    with pytest.raises(ValueError, match="서로 다른"):
        AblationPlan(seeds=(1, 1)).validate()
    with pytest.raises(ValueError, match="k는 1 이상"):
        AblationPlan(rag_ks=(0, 3)).validate()
    with pytest.raises(ValueError, match="지표"):
        AblationPlan(metric="accuracy").validate()
    assert AblationPlan.for_size("tiny", max_steps=3).max_steps == 3  # an explicit value beats the size
    assert AblationPlan.for_size("full").seeds == (0, 1, 2)


def test_cli_rejects_bad_ablation_input_in_one_korean_line(tmp_path, capsys):
    from workshop_utils.cli import main

    assert main(["ablate", "--size", "tiny", "--seeds", "1", "1", "--out", str(tmp_path / "a")]) == 2
    assert "시드는 서로 다른" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("내 메모")
    assert main(["ablate", "--size", "tiny", "--out", str(tmp_path / "mine")]) == 2
    assert "ablation 결과가 아닌 파일" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_cli_ablate_prints_the_table_and_the_verdict(tmp_path, capsys, monkeypatch):
    calls = []

    def fake_run(cfg, plan, out):
        calls.append((cfg, plan, out))
        return result(full_grid([0.50, 0.52, 0.51], [0.30, 0.31, 0.29]))

    monkeypatch.setattr("workshop_utils.ablation.run_ablation", fake_run)
    from workshop_utils.cli import main

    argv = ["ablate", "--size", "tiny", "--seeds", "0", "1", "2", "--max-steps", "3", "--num-examples", "5",
            "--train.learning_rate", "5e-4", "--data.max_context_len", "120", "--out", str(tmp_path / "gpu")]
    assert main(argv) == 0
    cfg, plan, out = calls[0]
    assert (plan.seeds, plan.max_steps, plan.num_examples) == ((0, 1, 2), 3, 5)  # flags beat the tiny plan
    assert (cfg.train.learning_rate, cfg.data.max_context_len, cfg.size) == (5e-4, 120, "tiny")
    printed = capsys.readouterr().out
    assert "RAG top-5" in printed and "논문의 방향이 재현됩니다" in printed


def on_model(cfg, model_id: str):
    """A copy of `cfg` (its build folder, so the prepared data too) with another model."""
    cfg = copy.deepcopy(cfg)
    cfg.model.model_id = model_id
    return cfg


@pytest.mark.slow
def test_unloading_the_adapter_restores_the_base_model(tiny_cfg, tiny_model):
    import torch

    from workshop_utils.model.load import load_model
    from workshop_utils.model.lora import apply_lora

    tiny_cfg = on_model(tiny_cfg, tiny_model)  # the same 4-bit + LoRA layers as the offline model, smaller
    base = load_model(tiny_cfg.model, verbose=False).model
    before = {k: v.detach().float().clone() for k, v in base.state_dict().items()}
    peft_model = apply_lora(base, tiny_cfg.lora)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(0.5)
    restored = A.release_adapter(peft_model, tiny_cfg, reuse=True)
    after = restored.state_dict()
    assert after.keys() == before.keys() and not hasattr(restored, "peft_config")
    assert all(torch.equal(before[k], after[k].float()) for k in before)
    assert not any(p.requires_grad for p in restored.parameters())
    fresh = A.release_adapter(apply_lora(restored, tiny_cfg.lora), tiny_cfg, reuse=False)  # the GPU path: reload
    assert fresh is not restored and not hasattr(fresh, "peft_config")
    assert all(torch.equal(before[k], v.float()) for k, v in fresh.state_dict().items())


@pytest.mark.slow
def test_ablation_trains_three_adapters_and_fills_every_cell(tiny_cfg, tiny_model, tmp_path):
    from safetensors.torch import load_file

    # the plan of CI's run of notebook 06 (one step per format, one question, a few tokens) on the tiny random
    # model: this checks what the run writes and fills in; notebook 06 runs the same plan with the offline model
    cfg = on_model(tiny_cfg, tiny_model)
    res = A.run_ablation(cfg, AblationPlan.for_size("tiny"), tmp_path / "ablation", verbose=False)
    assert [(r["format"], r["steps"]) for r in res.runs] == [(f.key, 1) for f in A.FORMATS]
    for run in res.runs:  # trained: LoRA B starts at zero and moved
        weights = load_file(f"{run['adapter_dir']}/adapter_model.safetensors")
        assert any(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name), run["format"]
        assert run["truncated"] == 0
    evaluated = {(r["format"], r["seed"]) for r in res.rows}
    assert evaluated == {(A.BASE, None), ("golden_only", 0), ("raft", 0), ("raft_no_cot", 0)}
    assert len(res.rows) == 4 * 4  # golden only, golden + distractors, RAG top-1 and top-3 (the tiny plan)
    assert (res.table() != "").all().all() and res.table().shape == (4, 4)
    preds = [json.loads(line) for line in (tmp_path / "ablation" / "predictions.jsonl").read_text().splitlines()]
    prompts = {}
    for p in preds:
        prompts.setdefault(p["format"], []).append((p["setting"], p["id"]))
    assert len({tuple(v) for v in prompts.values()}) == 1 and len(prompts) == 4  # the same test prompts
    loaded = AblationResult.load(tmp_path / "ablation" / "ablation.json")
    assert loaded.rows == res.rows and loaded.meta["status"] == "done"
    assert (tmp_path / "ablation" / "ablation.png").stat().st_size > 0
    assert "RAG top-3" in (tmp_path / "ablation" / "ablation.md").read_text(encoding="utf-8")


def test_notebook_config_uses_the_offline_model_unless_one_is_named(monkeypatch):
    from workshop_utils.ablation import ablation_config

    monkeypatch.delenv("WORKSHOP_MODEL", raising=False)
    assert ablation_config().model.model_id == "offline"
    assert ablation_config(**{"model.model_id": "random:exaone"}).model.model_id == "random:exaone"
    monkeypatch.setenv("WORKSHOP_MODEL", "random:exaone")
    assert ablation_config().model.model_id == "random:exaone"


def test_documented_gpu_ablation_is_what_its_record_computes(root):
    """docs/raft.md and notebook 06 (section 5) quote the H200 run; the recorded JSON must give exactly that table
    and verdict through the same code, so the quoted numbers cannot drift from the measurement."""
    res = AblationResult.load(root / "docs" / "results" / "ablation-h200-2026-11-30.json")
    assert res.meta["seeds"] == [0, 1, 2] and res.meta["status"] == "done" and len(res.runs) == 9
    table = [line for line in res.markdown().splitlines() if line.startswith("| ")]
    assert len(table) == 5  # header + base + three formats
    verdict = res.verdict().splitlines()
    conclusion = next(line for line in verdict if line.startswith("결론:"))
    doc = (root / "docs" / "raft.md").read_text(encoding="utf-8")
    nb = json.loads((root / "main-practice" / "06_raft_ablation.ipynb").read_text(encoding="utf-8"))
    section5 = next("".join(c["source"]) for c in nb["cells"] if "".join(c["source"]).startswith("## 5. GPU"))
    for line in table:
        assert line in doc and line in section5, line
    for line in verdict[1:]:  # the first line restates the rule
        assert line.strip() in doc, line
    assert conclusion in section5 and "재현되지 않았습니다" in section5
