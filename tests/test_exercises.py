"""Every exercise's self-check passes on its answer key and fails, with a Korean message, on a typical wrong answer;
blanks are recognised; WORKSHOP_SOLUTIONS=1 fills blanks and stops on a failure; each exercise sits in its notebook."""
from __future__ import annotations

import json
import re
import unicodedata

import numpy as np
import pytest

from workshop_utils.teaching import exercises
from workshop_utils.teaching.exercises import EXERCISES, ExerciseFailed, evaluate

HANGUL = re.compile(r"[가-힣]")


@pytest.fixture(scope="module")
def canon():
    """The shipped raw data plus the dirty export, validated without dropping exact duplicates (notebook 02)."""
    from workshop_utils.data import load_raw, validate

    raw, _ = load_raw(["data/raw", "data/dirty/dirty_export.jsonl"])
    return [r.data for r in validate(raw, drop_exact_duplicates=False).kept]


LENGTHS = np.array([180] * 40 + [230] * 50 + [290] * 6 + [410] * 4)  # p95 = 290: 320 truncates 4%, 256 truncates 10%
PER_EXAMPLE = [  # compute_metrics rows: 1) a reworded right answer, 2) a wrong number, 3) an abstention
    {"rouge1": 0.55, "rouge2": 0.30, "rougeL": 0.55, "bleu": 20.0, "cosine": 0.91, "exact_match": 0.0, "f1": 0.7},
    {"rouge1": 0.90, "rouge2": 0.80, "rougeL": 0.90, "bleu": 70.0, "cosine": 0.88, "exact_match": 0.0, "f1": 0.9},
    {"rouge1": 0.10, "rouge2": 0.00, "rougeL": 0.10, "bleu": 1.0, "cosine": 0.40, "exact_match": 0.0, "f1": 0.2},
]


@pytest.fixture(scope="module")
def contexts(canon):
    return {"02-1": {"records": canon}, "02-2": {"lengths": LENGTHS}, "03-3": {"total_steps": 174},
            "04-2": {"per_example": PER_EXAMPLE}, "05-2": {"max_steps": 16}}


@pytest.mark.parametrize("eid", list(EXERCISES))
def test_answer_key_passes(eid, contexts):
    ctx = contexts.get(eid, {})
    fb = evaluate(eid, EXERCISES[eid].key(**ctx), **ctx)
    assert fb.ok, fb.problems


@pytest.mark.parametrize("eid", list(EXERCISES))
def test_typical_wrong_answer_fails_with_korean_reason(eid, contexts):
    ctx = contexts.get(eid, {})
    fb = evaluate(eid, EXERCISES[eid].typical_wrong(**ctx), **ctx)
    assert not fb.ok and not fb.blank
    assert fb.problems and all(HANGUL.search(p) for p in fb.problems), fb.problems


@pytest.mark.parametrize("eid", list(EXERCISES))
def test_every_exercise_has_korean_hint_and_explanation(eid):
    ex = EXERCISES[eid]
    assert HANGUL.search(ex.hint) and HANGUL.search(ex.explanation) and ex.solution_code


def test_blanks_are_recognised():
    assert evaluate("00-2", ...).blank
    assert evaluate("00.01-1", {"A100 (bf16 지원 GPU)": ..., "T4 (Colab 무료 GPU)": "float16"}).blank

    def clean_text(text):
        return ...

    assert evaluate("01-1", clean_text).blank
    assert evaluate("03-2", dict(exercises.SEED_ARGS)).blank  # the slide's arguments, untouched
    assert evaluate("02-3", "...").blank  # r"..." in the cell
    assert not evaluate("00-2", 64).blank


@pytest.mark.parametrize("answer,reason", [
    (lambda t: " ".join(t.split()), "NFD"),  # forgot NFC
    (lambda t: unicodedata.normalize("NFC", t).strip(), "연속 공백"),
])
def test_clean_text_names_the_failing_case(answer, reason):
    fb = evaluate("01-1", answer)
    assert any(reason in p for p in fb.problems), fb.problems


def test_length_ok_seed_version_fails_on_the_boundaries():
    fb = evaluate("01-2", exercises._length_ok_seed)
    text = " ".join(fb.problems)
    assert "정확히 5자" in text and "정확히 2048자" in text


def test_labels_explain_the_lost_eos():
    fb = evaluate("03-1", exercises._labels_lm_collator)
    assert any("EOS" in p and "멈춘다" in p for p in fb.problems)


def test_threshold_window_from_the_data(canon):
    catch, keep = exercises.near_duplicate_cases(canon)
    assert len(catch) >= 3 and len(keep) == 1
    lo, hi = keep[0].jaccard, min(c.jaccard for c in catch)
    assert lo < 0.7 <= hi  # the workshop's threshold separates them; question-only Jaccard would not
    assert any("너무 낮" in p for p in evaluate("02-1", 0.5, records=canon).problems)
    assert any("너무 높" in p for p in evaluate("02-1", 0.9, records=canon).problems)


def test_max_seq_length_rules():
    assert any("64의 배수" in p for p in evaluate("02-2", 300, lengths=LENGTHS).problems)
    assert any("잘립니다" in p for p in evaluate("02-2", 256, lengths=LENGTHS).problems)
    assert any("메모리" in p for p in evaluate("02-2", 512, lengths=LENGTHS).problems)
    assert evaluate("02-2", 320, lengths=LENGTHS).ok


def test_phone_pattern_reports_false_positive():
    fb = evaluate("02-3", r"\d{3}-\d{4}-\d{4}")
    assert any("잘못 잡습니다" in p for p in fb.problems) and any("못 찾습니다" in p for p in fb.problems)
    assert any("문법 오류" in p for p in evaluate("02-3", "(01").problems)


def test_training_args_names_evaluation_strategy():
    fb = evaluate("03-2", {**exercises.SEED_ARGS, "warmup_steps": 0.1})
    assert any("eval_strategy" in p for p in fb.problems)


def test_warmup_accepts_ratio_or_steps():
    assert evaluate("03-3", 0.1, total_steps=174).ok
    assert evaluate("03-3", 17, total_steps=174).ok
    assert any("57%" in p for p in evaluate("03-3", 100, total_steps=174).problems)


def test_mapping_swap_is_caught_although_validation_passes():
    fb = evaluate("05-1", {"question": "상담원답변", "context": "관련규정", "answer": "고객문의"})
    assert any("바뀌었습니다" in p for p in fb.problems)
    assert any("보존 3" in n for n in fb.notes)
    fb = evaluate("05-1", {"question": "고객문의", "context": "처리상태", "answer": "상담원답변"})
    assert any("too_short" in n or "짧" in n for n in fb.notes) or any("관련규정" in p for p in fb.problems)


def test_early_stopping_schedule_reports_the_multiple_rule():
    fb = evaluate("05-2", {"eval_steps": 2, "save_steps": 3}, max_steps=16)
    assert any("배수" in p for p in fb.problems)


def test_one_change_at_a_time():
    assert any("하나씩" in p for p in evaluate("05-3", {"train.num_train_epochs": 2, "train.learning_rate": 1e-4}).problems)
    assert evaluate("05-3", {"train.early_stopping_patience": 2}).ok


def test_participant_mode_prints_and_never_raises(monkeypatch, capsys):
    monkeypatch.delenv("WORKSHOP_SOLUTIONS", raising=False)
    exercises.check("00-2", ...)
    assert "빈칸" in capsys.readouterr().out
    exercises.check("00-2", 32)
    out = capsys.readouterr().out
    assert "다시 해 보세요" in out and "exercises.solution" in out
    exercises.check("00-2", 128)
    assert "통과" in capsys.readouterr().out


def test_solutions_mode_fills_blanks_loudly_and_stops_on_failure(monkeypatch, capsys):
    monkeypatch.setenv("WORKSHOP_SOLUTIONS", "1")
    exercises.check("02-2", ..., lengths=LENGTHS)
    out = capsys.readouterr().out
    assert "해답 모드" in out and "통과" in out
    with pytest.raises(ExerciseFailed):
        exercises.check("00-2", 32)


def test_exercises_and_diagrams_import_without_torch(root):
    """Notebooks 00.01-02 import them; torch's start-up would add seconds to each (only 03/05/A1's checks need it)."""
    import subprocess
    import sys

    code = "import sys; import workshop_utils.teaching.exercises, workshop_utils.teaching.diagrams; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True).stdout
    assert out.strip() == "False"


def test_unknown_exercise_is_a_korean_error():
    from workshop_utils.runtime.errors import WorkshopError

    with pytest.raises(WorkshopError, match="실습 과제"):
        exercises.check("99-9", 1)


NOTEBOOK_OF = {e.notebook for e in EXERCISES.values()}


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_OF))
def test_each_exercise_is_checked_once_in_its_notebook(root, notebook):
    text = "\n".join("".join(c["source"]) for c in json.loads((root / notebook).read_text(encoding="utf-8"))["cells"])
    ids = [e.id for e in EXERCISES.values() if e.notebook == notebook]
    assert 1 <= len(ids) <= 4
    for eid in ids:
        assert text.count(f'exercises.check("{eid}"') == 1, eid
        assert f"실습 과제 {eid}" in text, eid


def test_every_notebook_has_exercises(root):
    make = (root / "Makefile").read_text()
    listed = re.findall(r"(\S+\.ipynb)", make)
    assert set(listed) <= NOTEBOOK_OF, f"notebooks without exercises: {set(listed) - NOTEBOOK_OF}"
    assert sum(e.notebook.startswith("prerequisites/00.01") for e in EXERCISES.values()) == 1


def test_seed_verdict_follows_the_ablations_rule():
    """06-2's answer key is the rule notebook 06 prints its verdict with (ablation.Comparison)."""
    import statistics

    from workshop_utils.ablation import Comparison

    for setting, (a, b) in exercises.SEED_SCORES.items():
        c = Comparison(setting, statistics.fmean(a), statistics.stdev(a), statistics.fmean(b), statistics.stdev(b), 3)
        assert exercises.seed_outcome(a, b)[0] == c.outcome == EXERCISES["06-2"].key()[setting]
    assert {exercises.seed_outcome(a, b)[0] for a, b in exercises.SEED_SCORES.values()} == set(exercises.OUTCOMES)


def test_ablation_run_count_names_the_mistake():
    assert any("시드" in p for p in evaluate("06-1", 3).problems)
    assert any("원본" in p for p in evaluate("06-1", 12).problems)
