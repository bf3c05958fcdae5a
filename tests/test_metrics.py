"""Korean-correct metrics (workshop_utils.metrics)."""
from __future__ import annotations

import pytest

from workshop_utils.evaluate.metrics import bleu, char_f1, compute_metrics, exact_match, rouge
from workshop_utils.teaching.evaluation import overlap_table

KO = "문맥에 따르면 서울의 인구는 약 천만 명입니다."


def test_rouge_scores_identical_korean_as_one():
    agg, _ = rouge([KO], [KO])
    assert agg["rouge1"] == agg["rouge2"] == agg["rougeL"] == 1.0


def test_default_rouge_tokenizer_deletes_hangul():
    agg, _ = rouge([KO], [KO], tokenizer="default")
    assert agg["rougeL"] == 0.0  # why the library uses morphemes


def test_rouge_keeps_latin_and_digits():
    agg, _ = rouge(["VPN 접속은 SecureLink 3.2 버전"], ["SecureLink 3.2 버전으로 VPN 접속"])
    assert agg["rouge1"] > 0.8


def test_seed_worked_example_cat():
    r, _ = rouge(["the cat sat"], ["the cat is on the mat"], tokenizer="default")
    assert r["rouge1_recall"] == pytest.approx(2 / 6) and r["rouge1_precision"] == pytest.approx(2 / 3)
    b, _ = bleu(["the cat sat"], ["the cat is on the mat"], tokenize="13a")
    assert b["bleu_precisions"][0] == pytest.approx(200 / 3)


def test_seoul_example_whitespace_vs_morphemes():
    ws, mo = overlap_table("서울의 인구는 약 천만 명입니다", "서울 인구는 약 1천만 명입니다")
    assert (ws["겹침"], ws["참조 토큰 수"]) == (3, 5)
    assert (mo["겹침"], mo["참조 토큰 수"]) == (7, 8)  # the slide's 7/8 counts morphemes


def test_bleu_korean_is_0_to_100_with_signature():
    b, per = bleu([KO, "전혀 다른 문장"], [KO, KO])
    assert 0 < b["bleu"] < 100 and "ko-mecab" in b["bleu_signature"]
    assert per[0] == pytest.approx(100.0)


def test_em_and_character_f1():
    assert exact_match("15일입니다.", "15일입니다") == 1.0
    assert char_f1("연차는 15일", "연차 15일") == pytest.approx(2 * (5 / 6) * 1 / (5 / 6 + 1))
    assert char_f1("", "abc") == 0.0


def test_compute_metrics_shape_and_cosine_offline():
    m = compute_metrics([KO, "부산은 항구 도시입니다."], [KO, KO], verbose=False)
    for k in ("rouge1", "rouge2", "rougeL", "bleu", "cosine", "exact_match", "f1"):
        assert k in m
    assert "MiniLM" in m["embedding_model"]
    assert m["per_example"][0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert m["per_example"][0]["rougeL"] > m["per_example"][1]["rougeL"]
    assert compute_metrics([KO], [KO], embedding_model=None)["cosine"] is None


def test_compute_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics(["a"], ["a", "b"], embedding_model=None)
    with pytest.raises(TypeError, match="prediction 0"):
        compute_metrics([None], ["a"], embedding_model=None)


@pytest.mark.slow
def test_generation_speed_measures_both_precisions_at_each_batch(tiny_model):
    from workshop_utils.config import load_config
    from workshop_utils.evaluate.generation import generation_speed

    settings = load_config("tiny").model
    settings.model_id = tiny_model  # the table's rows, not the speed: notebook 00 measures the offline model
    rows = generation_speed(settings, batch_sizes=(1, 2), new_tokens=4, context_sentences=1)
    assert [(r["가중치"].split()[0], r["배치"]) for r in rows] == [("NF4", 1), ("NF4", 2), ("양자화", 1), ("양자화", 2)]  # "양자화 없음 (dtype)"
    assert all(r["새 토큰/초"] > 0 for r in rows)
