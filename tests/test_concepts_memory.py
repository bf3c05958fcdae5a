"""Small helpers behind 00.01-prerequisites and 00-concepts (no model, CPU-cheap)."""
from __future__ import annotations

import torch

from workshop_utils.model.shape import EXAONE_7_8B, SMOLLM2_135M
from workshop_utils.report import plots
from workshop_utils.runtime.checklist import CheckItem
from workshop_utils.teaching import concepts
from workshop_utils.teaching.concepts import ESTIMATE_SCENARIOS, estimate_table


def test_check_item_mark():
    assert CheckItem("a", True, "").mark == "✓"
    assert CheckItem("a", False, "", blocking=True).mark == "✗"
    assert CheckItem("a", False, "", "fix").mark == "△"
    assert CheckItem("a", False, "x", "fix").line() == "△ a: x  → fix"


def test_nf4_is_normal_quantiles():
    levels = concepts.normal_quantile_levels()
    assert levels.shape == (16,)
    assert torch.allclose(levels, concepts.nf4_levels(), atol=1e-5)
    assert levels.min() == -1 and levels.max() == 1 and (levels == 0).sum() == 1


def test_estimate_table_scenarios():
    rows = estimate_table(EXAONE_7_8B, 8192)
    by = {r["구성"]: r for r in rows}
    assert list(by) == list(ESTIMATE_SCENARIOS)
    assert by["16비트 가중치 + LoRA"]["가중치 (GiB)"] > by["NF4 (QLoRA)"]["가중치 (GiB)"]
    assert by["NF4 + 체크포인팅"]["활성화 (GiB)"] < by["NF4 (QLoRA)"]["활성화 (GiB)"]
    assert by["NF4 + 체크포인팅 + fused loss"]["logits (GiB)"] * 20 < by["NF4 + 체크포인팅"]["logits (GiB)"]
    totals = [r["합계 (GiB)"] for r in rows]
    assert totals == sorted(totals, reverse=True)


def test_stacked_bars_figure():
    rows = estimate_table(SMOLLM2_135M, 256)
    keys = ["가중치 (GiB)", "활성화 (GiB)", "logits (GiB)"]
    fig = plots.stacked_bars(rows, "구성", keys, "t")
    assert len(fig.axes[0].patches) == len(rows) * len(keys)
    plots.plt.close(fig)


def test_plots_are_closed_so_notebooks_show_them_once():
    fig = plots.line([1, 2], {"a": [1, 2]}, "t", "x", "y")
    assert fig.number not in plots.plt.get_fignums()
    assert fig.axes  # still drawable


def test_fit_low_rank_restores_threads():
    n = torch.get_num_threads()
    rows = concepts.fit_low_rank(d=32, true_rank=2, ranks=(1, 2), steps=200)
    assert torch.get_num_threads() == n
    assert rows[1]["상대 오차 ‖BA−ΔW‖/‖ΔW‖"] < rows[0]["상대 오차 ‖BA−ΔW‖/‖ΔW‖"]


def test_memory_check_compares_the_peak_with_the_plan():
    from workshop_utils.train.memory import MemoryCheck

    assert MemoryCheck(None, 6.9).ok and "CPU" in MemoryCheck(None, 6.9).line()
    assert MemoryCheck(7.5, 6.9).ok and "계획 안" in MemoryCheck(7.5, 6.9).line()  # 109%: within 10%
    over = MemoryCheck(7.7, 6.9)
    assert not over.ok and "초과" in over.line()
    assert MemoryCheck(12.0, None).ok and "비교할 계획 없음" in MemoryCheck(12.0, None).line()
    # a TrainResult's memory outside PyTorch (NVML) is shown beside the plan, and is not part of the comparison
    from workshop_utils.train.memory import memory_check
    from workshop_utils.train.trainer import TrainResult

    res = TrainResult(40, 176.2, 4.5, 7.0, 4.4, "run", "run/adapter", peak_gib=78.4, plan_gib=118.4, outside_torch_gib=0.76)
    check = memory_check(res)
    assert check.ok and "PyTorch 밖 메모리 0.76 GiB" in check.line() and "(66%)" in check.line()
