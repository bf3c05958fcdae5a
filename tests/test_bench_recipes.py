"""`workshop bench` recipes added for the compiled layers and the honest baselines: `hf_lean` (the
peer kit's plain-HF `gc` recipe), '+options' (compile on/off), the peer kit's rows, and a CPU run of
the compiled default recipe through the Trainer (no recompilation over steps of other lengths)."""
import json

import pytest

from workshop_utils import bench
from workshop_utils.bench import describe_recipe, peer_rows, recipe_config, recipe_options, split_recipe
from workshop_utils.train.fastpath import compile as fastpath_compile


def test_hf_lean_is_the_peer_kits_gc_recipe():
    cfg = recipe_config("hf_lean", "random:exaone", 5, on_cuda=True)
    t = cfg.train
    # padded 4 x 4, HF's loss over all logits, full checkpointing (the kit's `gc`); the bf16 embeddings
    # are kept by run_recipe (LoRA applied without peft's fp32 upcast)
    assert (t.fast_path, t.completion_only_logits, t.gradient_checkpointing) == ("off", False, "on")
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.optim) == (4, 4, "paged_adamw_8bit")
    assert (cfg.lora.r, cfg.lora.lora_alpha, cfg.lora.lora_dropout) == (16, 32, 0.05)
    assert cfg.model.compute_dtype == "auto"


def test_recipe_options_set_the_compile_setting_and_are_checked():
    assert split_recipe("t4@sdpa+nocompile") == ("t4", "sdpa")
    assert recipe_options("t4@sdpa+nocompile") == {"compile_layers": "off"}
    assert recipe_config("budget8+compile_liger", "m", 3, True, options=recipe_options("budget8+compile_liger")) \
        .train.compile_layers == "liger"
    assert "[compile_layers=on]" in describe_recipe("default+compile")
    # an option of another config section: LoRA without dropout (the peer kit's Unsloth setting)
    cfg = recipe_config("default+fp8+nodrop", "m", 3, True, options=recipe_options("default+fp8+nodrop"))
    assert (cfg.lora.lora_dropout, cfg.train.fp8_backward) == (0.0, "on")
    assert recipe_config("default", "m", 3, True).lora.lora_dropout == 0.05
    for bad in ("hf_lean+compile", "budget8+fast", "hf_lean@sdpa"):
        with pytest.raises(ValueError, match="고속 경로 레시피에만"):
            split_recipe(bad)


def test_peer_rows_read_the_kits_result_lines():
    text = "\n".join([
        "peer env 2.11.0 5.17.0 0.18.0 0.50.2",
        "[gc rc=0 61 s]",
        "RESULT " + json.dumps({"variant": "gc", "tokens_per_s": 4661.0, "peak_gib": 16.5, "peak_reserved_gib": 20.1}),
        "[uns+flat+fp16 rc=0 70 s]",
        "RESULT " + json.dumps({"variant": "uns+flat+fp16", "tokens_per_s": 6794.0, "peak_alloc_gib": 6.5,
                                "peak_reserved_gib": 7.0, "first_loss": 12.3, "micro_batch": 4, "grad_accum": 4}),
        "[uns+flat+nogc+bs16 rc=124 300 s]", "Traceback ... OutOfMemoryError"])
    rows = peer_rows(text, ["gc", "uns+flat+fp16", "uns+flat+nogc+bs16"])
    assert [r["recipe"] for r in rows] == ["peer:gc", "peer:uns+flat+fp16", "peer:uns+flat+nogc+bs16"]
    gc, uns, failed = rows
    assert (gc["tokens_per_s"], gc["peak_allocated_gib"], gc["checkpointing"], gc["micro_batch"]) == (4661.0, 16.5, "all", 4)
    assert (uns["dtype"], uns["checkpointing"], uns["loss_step1"], uns["padding_free"]) == ("float16", "unsloth", 12.3, True)
    assert "error" in failed
    table = bench.format_table({"model": "m", "env": {"gpu": "H200"}, "rows": rows})
    assert "| peer:gc | 4,661 |" in table and "peer variant failed" in table


def test_peer_kit_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="피어 키트가 없습니다"):
        bench.run_bench(["hf_gc"], shape="tiny", out=tmp_path, peer=["gc"], peer_kit=tmp_path / "none")


@pytest.mark.slow
def test_bench_measures_hf_lean_and_the_compiled_default_on_cpu(tmp_path, monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(fastpath_compile, "BACKEND", "aot_eager")  # no C++ code generation on CPU
    torch._dynamo.reset()
    with torch._dynamo.config.patch(suppress_errors=False):  # the passed check sets it for the training
        res = bench.run_bench(["hf_lean", "default+nocompile", "default+compile"], shape="tiny", steps=1,
                              warmup=0, out=tmp_path, isolate=False)  # one step (no timing): 4 micro-batches
    rows = {r["recipe"]: r for r in res["rows"]}
    assert all("error" not in r for r in rows.values()), rows
    lean, eager, comp = rows["hf_lean"], rows["default+nocompile"], rows["default+compile"]
    assert lean["checkpointing"] == "all" and not lean["padding_free"]
    assert comp["compile_layers"] and not eager["compile_layers"] and comp["checkpointing"] == "off"
    # 4 micro-batches of 4 packed sequences, each row of another length: no graph compiled after the
    # set-up check; the first layer (input without gradient: no checkpointing) has its own graph
    assert comp["compile"]["graphs_after_check"] == 0 and comp["compile"]["graph_breaks"] == 0, comp["compile"]
    assert comp["compile"]["graphs"] == 2, comp["compile"]
    assert comp["loss_step1"] == pytest.approx(eager["loss_step1"], rel=1e-5)
    assert lean["loss_step1"] == pytest.approx(eager["loss_step1"], rel=1e-3)
    torch._dynamo.reset()


def test_peer_run_on_its_own_gpu_sees_only_that_gpu_and_keeps_the_kits_packages(tmp_path, monkeypatch):
    """The kit beside the recipes: CUDA_VISIBLE_DEVICES names its GPU, our PYTHONPATH does not leak in."""
    from pathlib import Path

    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "peer_bench.sh").write_text(
        'echo "steps=$1 gpu=${CUDA_VISIBLE_DEVICES:-all} pp=${PYTHONPATH:-none}"\n'
        'for v in "${@:2}"; do echo "RESULT {\\"variant\\": \\"$v\\", \\"tokens_per_s\\": 100.0, '
        '\\"peak_alloc_gib\\": 6.5}"; done\n')
    monkeypatch.setenv("PYTHONPATH", "/ours")
    side = bench.PeerRun(Path(kit), ["uns+flat", "gc"], 4, gpu=1)
    rows = side.rows()
    assert side.lines[0].strip() == "steps=4 gpu=1 pp=none"
    assert [r["recipe"] for r in rows] == ["peer:uns+flat", "peer:gc"]
    assert all(r["tokens_per_s"] == 100.0 and not r.get("error") for r in rows)
