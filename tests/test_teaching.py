"""The teaching cells added for the live class: diagrams, the opening before/after table, the two seed-correction
cells of notebook 04 and the early-stopping demo of notebook 05."""
from __future__ import annotations

import pytest

from workshop_utils.teaching import concepts, custom, diagrams
from workshop_utils.teaching.evaluation import seed_cosine_table, seed_evaluate_rouge
from workshop_utils.train.trainer import TrainResult


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts) + "\n" + fig.axes[0].get_title("left")


def test_raft_record_draws_golden_distractors_and_the_quote():
    text = _texts(diagrams.raft_record())
    assert "문서 1: 골든 문서 (정답 근거)" in text and text.count("방해 문서 (distractor)") == 2
    assert "한국의" in text and "(확인됨)" in text  # the quoted span is in the golden document
    assert "「한국의" in text  # the quote is drawn as a quote


def test_raft_record_without_golden_says_so():
    rec = dict(diagrams.SEED_RAFT_EXAMPLE, golden_index=None, cot="", answer="제공된 문맥에서는 답을 찾을 수 없습니다.")
    text = _texts(diagrams.raft_record(rec))
    assert "골든 문서가 없습니다" in text and "골든 문서 (정답 근거)" not in text


def test_raft_record_flags_a_quote_that_is_not_in_the_golden_document():
    rec = dict(diagrams.SEED_RAFT_EXAMPLE, cot="##begin_quote## 서울의 인구는 2천만 명 ##end_quote## <ANSWER>: 2천만")
    assert "(없음!)" in _texts(diagrams.raft_record(rec))


def test_lora_matrices_show_the_slide_counts():
    text = _texts(diagrams.lora_matrices(4096, 4096, 8))
    assert "16,777,216" in text and "65,536" in text and "99.6%" in text and "4,096×8" in text


def test_before_after_rows_compare_groundedness(monkeypatch):
    doc = "누리온테크의 연차휴가는 입사 1년 후 15일이 발생합니다."
    example = {"question": "연차는 며칠인가요?", "context": [doc, "셔틀버스는 판교역에서 출발합니다."], "golden_index": 0,
               "answer": "15일입니다.", "reference_answer": "연차휴가는 15일입니다."}

    def fake_answers(model, tokenizer, examples, max_new_tokens, base=False, progress=True):
        class R:
            texts = ["보통 회사마다 다릅니다." if base else "입사 1년 후 연차휴가 15일이 발생합니다."] * len(examples)
        return R()

    monkeypatch.setattr(concepts, "answer_examples", fake_answers)
    row = concepts.before_after(None, None, [example], 24)[0]
    assert row["참조 답변"] == "연차휴가는 15일입니다."
    assert row["문서 근거 (after)"] > row["문서 근거 (before)"]


def test_evaluate_load_fails_offline_and_the_workshop_metric_works():
    out = seed_evaluate_rouge("서울의 인구는 약 천만 명입니다")
    assert not out["loaded"]  # tests are offline (conftest): the Hub lookup cannot succeed
    assert "evaluate" in out["message"] and ("오프라인" in out["message"] or "설치" in out["message"])
    assert out["workshop"]["rouge1"] == pytest.approx(1.0)


def test_seed_cosine_with_the_seed_model_is_not_the_slide_number():
    rows = seed_cosine_table()
    slide_pair, busan = rows[0], rows[1]
    assert slide_pair["슬라이드"] == 0.892
    assert slide_pair["all-MiniLM-L6-v2 (슬라이드의 모델)"] == pytest.approx(0.553, abs=0.02)
    assert busan["all-MiniLM-L6-v2 (슬라이드의 모델)"] > slide_pair["all-MiniLM-L6-v2 (슬라이드의 모델)"]
    assert all(r["다국어 모델"] == "Hub 접속 필요 (오프라인)" for r in rows)


def _result(log, steps):
    return TrainResult(steps=steps, seconds=1.0, final_loss=0.5, train_loss=0.5, eval_loss=log[-1].get("eval_loss"),
                       run_dir="r", adapter_dir="r/adapter", log_history=log)


def test_early_stopping_config_turns_it_on_with_room_to_stop(tiny_cfg):
    cfg_es, rows = custom.early_stopping_config(tiny_cfg)
    t = cfg_es.train
    assert t.early_stopping_patience >= 1 and t.max_steps == custom.EARLY_STOP_MAX_STEPS
    assert t.save_steps % t.eval_steps == 0 and t.max_steps // t.eval_steps >= 3
    assert tiny_cfg.train.early_stopping_patience == 0  # the original is not changed
    assert {r["설정"] for r in rows} >= {"train.max_steps", "train.early_stopping_patience"}


def test_early_stopping_demo_evaluates_every_step_only_at_size_tiny(tmp_path):
    from workshop_utils.config import load_config

    for size, every in (("tiny", 1), ("smoke", 2), ("workshop", 2), ("full", 2)):
        cfg_es, rows = custom.early_stopping_config(load_config(size=size, build_dir=str(tmp_path)))
        t = cfg_es.train
        assert (t.eval_steps, t.save_steps, t.early_stopping_patience, t.early_stopping_threshold) == (every, every, 2, 0.1)
        assert {r["설정"]: r["early stopping 데모"] for r in rows}["train.eval_steps"] == every


def test_early_stopping_summary_and_curve(tiny_cfg):
    cfg_es, _ = custom.early_stopping_config(tiny_cfg)
    log = [{"step": s, "loss": 1.0 / s} for s in range(1, 11)]
    log += [{"step": s, "eval_loss": v} for s, v in ((2, 0.9), (4, 0.7), (6, 0.72), (8, 0.75))]
    tr = _result(log, 8)
    summary = custom.early_stopping_summary(tr, cfg_es)
    assert summary["early stopping으로 멈춤"] is True and "스텝 4" in summary["가장 낮은 검증 loss (스텝)"]
    text = _texts(custom.early_stopping_curve(tr))
    assert "best (스텝 4)" in text and "멈춤 (스텝 8)" in text
    assert not custom.stopped_early(_result(log, cfg_es.train.max_steps), cfg_es)
