"""Small helpers behind notebooks 03 and 04: the seed's TrainingArguments table, the label comparison
(pad == eos), the learning-rate schedule, pushing without a repo id, the discussion table."""
from __future__ import annotations

import pytest

from workshop_utils.config import RAFT_INSTRUCTION, load_config

EXAMPLE = {"id": "x", "instruction": RAFT_INSTRUCTION, "context": ["사내식당 점심은 3,000원이다."],
           "question": "점심값은 얼마인가요?", "answer": "문맥에 따르면 3,000원입니다.", "golden_index": 0}


def test_compare_with_seed_shows_the_transformers_5_names_and_values(tmp_path):
    import torch

    from workshop_utils.runtime.device import DeviceChoice
    from workshop_utils.teaching.fine_tuning import compare_with_seed
    from workshop_utils.train.trainer import training_arguments

    cfg = load_config(size="full", build_dir=str(tmp_path))
    args = training_arguments(cfg, DeviceChoice("cuda", torch.float16, "T4"), gradient_checkpointing=True,
                              use_cpu=True)
    rows = {r["슬라이드"]: r for r in compare_with_seed(args, "full")}
    assert rows["evaluation_strategy"]["transformers 5"] == "eval_strategy"
    assert rows["evaluation_strategy"]["이 실습 (full)"] == "steps"
    assert rows["optim"]["이 실습 (full)"] == "paged_adamw_8bit" and "8비트 모델용'이 아님" in rows["optim"]["비고"]
    assert rows["bf16"]["이 실습 (full)"] == "False" and rows["fp16"]["이 실습 (full)"] == "True"  # a T4
    assert rows["report_to"]["이 실습 (full)"] == "tensorboard"
    assert rows["Trainer(tokenizer=...)"]["transformers 5"] == "Trainer(processing_class=...)"
    assert rows["warmup_steps"]["이 실습 (full)"] == "100"


def test_lr_schedule_warms_up_then_decays():
    from workshop_utils.train.schedule import lr_schedule

    lrs = lr_schedule(2e-4, 10, 100)
    assert len(lrs) == 100 and lrs[0] == 0.0
    assert lrs[10] == pytest.approx(2e-4) and max(lrs) == pytest.approx(2e-4)
    assert lrs[-1] < 1e-6 + 2e-4 * 0.01
    assert lr_schedule(2e-4, 0.1, 100) == lrs  # a float < 1 is a ratio of the total steps


@pytest.mark.slow
def test_label_comparison_keeps_eos_where_the_lm_collator_masks_it(tokenizer):
    from workshop_utils.data.prompts import IGNORE_INDEX
    from workshop_utils.teaching.fine_tuning import label_comparison

    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    rows = label_comparison(tokenizer, EXAMPLE, 512)
    last = rows[-1]
    assert last["구간"] == "답변 끝" and last["input_id"] == tokenizer.eos_token_id
    assert last["우리 labels"] == tokenizer.eos_token_id
    assert last["DataCollatorForLanguageModeling labels"] == IGNORE_INDEX
    prompt = [r for r in rows if r["구간"] == "프롬프트"]
    assert prompt and all(r["우리 labels"] == IGNORE_INDEX for r in prompt)
    assert all(r["DataCollatorForLanguageModeling labels"] == r["input_id"] for r in prompt)


def test_push_without_repo_id_writes_the_card_and_says_why(tmp_path):
    from workshop_utils.report.publish import push_adapter

    res = push_adapter(tmp_path, None, "# card")
    assert res["pushed"] is False and "repo_id" in res["reason"]
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "# card"


def test_discussion_rows_put_the_numbers_next_to_each_question():
    from workshop_utils.report.run_report import DISCUSSION, discussion_rows

    m = {"rouge1": 0.5, "rouge2": 0.2, "cosine": 0.8, "bleu": 12.0, "exact_match": 0.0, "f1": 0.4}
    rows = discussion_rows({"golden_distractors": {"base": m, "tuned": dict(m, rouge2=0.3)}})
    assert len(rows) == len(DISCUSSION)
    assert rows[0]["원본 모델"] == "rouge1=0.500, rouge2=0.200" and rows[0]["파인튜닝 후"].endswith("rouge2=0.300")
    assert "bleu=12.000" in rows[1]["원본 모델"]
