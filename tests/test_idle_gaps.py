"""`workshop bench --profile`'s GPU idle analysis (bench.idle_gaps) on a hand-made trace: the busy time is the union of
the kernels on all streams, each gap is charged to the CPU ops around the launch that ended it, and a gap whose work
was queued before it began (a wait) is told apart from one where the GPU waited for the host."""
from workshop_utils.bench import format_idle_gaps, idle_gaps


def ev(cat, name, ts, dur, tid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def trace():
    return [
        ev("cpu_op", "aten::to", 0, 40), ev("cpu_op", "aten::copy_", 5, 30),
        ev("cpu_op", "Optimizer.step", 600, 300), ev("cpu_op", "aten::_foreach_add_", 650, 20),
        ev("cpu_op", "aten::mm", 100, 10),
        ev("cuda_runtime", "cudaLaunchKernel", 105, 2, correlation=1),
        ev("kernel", "gemm", 110, 400, correlation=1),           # busy 110-510
        ev("kernel", "other stream", 300, 300, correlation=9),   # overlaps: busy until 600
        ev("cuda_runtime", "cudaLaunchKernel", 660, 2, correlation=2),
        ev("kernel", "adam", 700, 100, correlation=2),            # launched at 660, after the gap began at 600
        ev("cuda_runtime", "cudaLaunchKernel", 750, 2, tid=2, correlation=3),
        ev("kernel", "queued", 900, 50, correlation=3),           # launched at 750, before its gap began (800)
        ev("cuda_runtime", "cudaStreamSynchronize", 960, 30),
        ev("cpu_op", "aten::item", 950, 50),
    ]


def test_idle_gaps_charge_each_gap_to_the_launching_ops():
    r = idle_gaps(trace(), min_us=20)
    assert r["window_us"] == 1000 and r["busy_us"] == 490 + 100 + 50 and r["idle_us"] == 360
    gaps = {g["next"]: g for g in r["gaps"]}
    assert gaps["gemm"]["us"] == 110 and gaps["gemm"]["ops"] == ["aten::mm"] and gaps["gemm"]["waited_for_cpu"]
    assert gaps["adam"]["us"] == 100 and gaps["adam"]["ops"] == ["Optimizer.step", "aten::_foreach_add_"]
    assert gaps["queued"]["us"] == 100 and not gaps["queued"]["waited_for_cpu"]  # queued at 750, held until 900
    assert gaps["(end of window)"]["us"] == 50
    assert r["by_op"]["Optimizer.step > aten::_foreach_add_"] == 100
    assert r["syncs"] == {"cudaStreamSynchronize": 30}
    assert sum(g["us"] for g in r["gaps"]) == r["idle_us"]
    text = format_idle_gaps(r)
    assert "idle 0.4 ms (36.0%)" in text and "idle under Optimizer.step > aten::_foreach_add_: 0.10 ms" in text


def test_small_gaps_count_as_idle_but_are_not_listed():
    r = idle_gaps(trace(), min_us=105)
    assert r["idle_us"] == 360 and [g["next"] for g in r["gaps"]] == ["gemm"]
    assert idle_gaps([], 50)["gaps"] == [] and idle_gaps([ev("cpu_op", "x", 0, 5)])["busy_us"] == 0
