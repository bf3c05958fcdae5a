"""The GPU fast path (train/fastpath): padding-free batches, the memory planner, partial checkpointing,
and -- on CPU, with a small EXAONE-shaped 4-bit model -- the same loss and LoRA gradients as the
plain path. Liger's Triton kernels and flex_attention need CUDA; `workshop bench` checks them on the
GPU (the first-step loss of every recipe is printed side by side, see docs/benchmarks.md)."""
import pytest
import torch

from workshop_utils.config import LoraSettings, ModelSettings, load_config
from workshop_utils.data.prompts import IGNORE_INDEX
from workshop_utils.model import attention
from workshop_utils.model.attention import (
    SEQUENCE_BOUNDARY_ATTENTIONS,
    VARLEN_ATTENTION,
    _cuda_varlen,
    _reference_varlen,
    register_varlen_attention,
    varlen_attention_forward,
)
from workshop_utils.model.attention_kernels import EFFICIENT_VARLEN_ATTENTION
from workshop_utils.model.shape import EXAONE_7_8B
from workshop_utils.runtime.device import DeviceChoice
from workshop_utils.train.collators import COMPLETION_POSITIONS, CompletionCollator, FlatteningCollator
from workshop_utils.train.fastpath import plan as plan_mod
from workshop_utils.train.fastpath.apply import prepare_fast_model, set_checkpointing
from workshop_utils.train.fastpath.offload import VocabOffload
from workshop_utils.train.fastpath.plan import FastPlan, plan_fast_path
from workshop_utils.train.loss import _labels_and_positions, fast_completion_loss
from workshop_utils.train.memory import estimate

TINY = "random:exaone:layers=3,hidden=64,intermediate=128,heads=4,kv_heads=2"


def features():
    g = torch.Generator().manual_seed(1)
    out = []
    for n, a in ((23, 5), (41, 9), (17, 4)):
        ids = torch.randint(10, 40000, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n - a) + ids[n - a:]})
    return out


def test_flattening_collator_concatenates_and_restarts_positions():
    batch = FlatteningCollator(pad_token_id=0, pad_to_multiple_of=16)(features())
    assert batch["input_ids"].shape == (1, 96)  # 81 tokens + a 15-token filler sequence
    pos = batch["position_ids"][0].tolist()
    assert pos[:23] == list(range(23)) and pos[23:64] == list(range(41)) and pos[81:] == list(range(15))
    assert "attention_mask" not in batch  # packed format: transformers reads the boundaries from positions
    labels = batch["labels"][0]
    assert (labels != IGNORE_INDEX).sum() == 5 + 9 + 4 and (labels[81:] == IGNORE_INDEX).all()
    assert batch["input_ids"][0, 81:].eq(0).all()
    # the positions whose logits the loss needs (t - 1 for every labelled t), found on the CPU
    answers = [(0, 23, 5), (23, 41, 9), (64, 17, 4)]
    assert batch[COMPLETION_POSITIONS].tolist() == [s + n - a - 1 + i for s, n, a in answers for i in range(a)]


def test_loss_reads_the_collators_positions_and_does_not_pass_them_to_the_model():
    batch = FlatteningCollator(pad_token_id=0, seq_lens=True)(features())
    fwd, labels, keep = _labels_and_positions(batch)
    assert COMPLETION_POSITIONS not in fwd and "labels" not in fwd and keep is batch[COMPLETION_POSITIONS]
    del batch[COMPLETION_POSITIONS]  # a batch from elsewhere (CompletionCollator): computed from the labels
    assert torch.equal(_labels_and_positions(batch)[2], keep)


def test_flattening_collator_gives_varlen_boundaries_and_names_bad_examples():
    batch = FlatteningCollator(pad_token_id=0, seq_lens=True)(features())
    assert batch["cu_seq_lens_q"].tolist() == [0, 23, 64, 81] and batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == 41
    bad = features()
    bad[1]["labels"] = bad[1]["labels"][:-1]
    with pytest.raises(ValueError, match="example 1: input_ids has 41 tokens, labels 40"):
        FlatteningCollator(pad_token_id=0)(bad)


def _qkv(hq=8, hkv=2, t=60, d=16):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(1, hq, t, d, generator=g), torch.randn(1, hkv, t, d, generator=g),
            torch.randn(1, hkv, t, d, generator=g))


def test_varlen_attention_keeps_each_sequence_to_itself():
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv()
    cu = [0, 25, 60]
    attn = SimpleNamespace(num_key_value_groups=4)  # the attention module's GQA setting
    out, _ = varlen_attention_forward(attn, q, k, v, None, scaling=0.25,
                                               cu_seq_lens_q=torch.tensor(cu, dtype=torch.int32), max_length_q=35)
    assert out.shape == (1, 60, 8, 16)
    for a, b in zip(cu[:-1], cu[1:]):  # each sequence alone through transformers' sdpa (GQA, causal)
        ref, _ = sdpa_attention_forward(attn, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], None, scaling=0.25,
                                        is_causal=True)
        assert torch.allclose(out[:, a:b], ref, atol=1e-5)
    whole, _ = sdpa_attention_forward(attn, q, k, v, None, scaling=0.25, is_causal=True)
    assert not torch.allclose(out[:, 25:], whole[:, 25:], atol=1e-3)  # the row-wide causal attention differs


@pytest.mark.parametrize("params", [("window_size", "enable_gqa"), ("is_causal",)])
def test_cuda_varlen_adapts_to_the_installed_torch_signature(monkeypatch, params):
    seen = {}

    def fake(q, k, v, cu_q, cu_k, max_q, max_k, **kw):
        seen.update(kw, heads=(q.shape[1], k.shape[1]))
        causal = kw.get("window_size") == (-1, 0) or kw.get("is_causal") is True
        assert causal and max_q == max_k == 35
        return _reference_varlen(q, k, v, cu_q.tolist(), kw["scale"])

    monkeypatch.setattr(attention, "_varlen_kernel", lambda: (fake, frozenset(params)))
    q, k, v = (x[0].transpose(0, 1) for x in _qkv())
    out = _cuda_varlen(q, k, v, torch.tensor([0, 25, 60], dtype=torch.int32), 35, 0.25)
    assert torch.allclose(out, _reference_varlen(q, k, v, [0, 25, 60], 0.25), atol=1e-6)
    # GQA: the kernel's own flag where it has one, else the key/value heads repeated
    assert seen["heads"] == ((8, 2) if "enable_gqa" in params else (8, 8))


def test_plan_picks_varlen_where_the_kernel_runs_else_sdpa(monkeypatch):
    cfg = load_config("full")
    monkeypatch.setattr(plan_mod, "varlen_attention_works", lambda dtype: (True, "ok"))
    assert plan_fast_path(cfg, cuda_device(80), EXAONE_7_8B, 1060).attention == VARLEN_ATTENTION
    monkeypatch.setattr(plan_mod, "varlen_attention_works", lambda dtype: (False, "no kernel"))
    # no flash kernel: the memory-efficient varlen kernel where it runs, else sdpa
    monkeypatch.setattr(plan_mod, "efficient_varlen_works", lambda dtype: (True, "efficient"))
    plan = plan_fast_path(cfg, cuda_device(80), EXAONE_7_8B, 1060)
    assert plan.attention == EFFICIENT_VARLEN_ATTENTION and plan.reasons["attention"] == "efficient"
    monkeypatch.setattr(plan_mod, "efficient_varlen_works", lambda dtype: (False, "no efficient kernel"))
    plan = plan_fast_path(cfg, cuda_device(80), EXAONE_7_8B, 1060)
    assert plan.attention == "sdpa" and plan.reasons["attention"] == "no kernel; no efficient kernel"


def cuda_device(vram, dtype=torch.bfloat16):
    return DeviceChoice("cuda", dtype, "test", "GPU", vram)


def test_plan_off_on_cpu_and_switchable():
    cfg = load_config("full")
    assert not plan_fast_path(cfg, DeviceChoice("cpu", torch.float32, ""), EXAONE_7_8B, 1000).enabled
    cfg.train.fast_path = "off"
    assert not plan_fast_path(cfg, cuda_device(80), EXAONE_7_8B, 1000).enabled


def test_plan_uses_the_budget_no_checkpointing_with_room_partial_or_all_when_tight():
    cfg = load_config("full")
    room = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1060, 1420, 120)
    assert room.enabled and room.padding_free and room.checkpoint_layers == 0
    assert room.micro_batch * room.grad_accum == 16  # the seed's effective batch is kept
    assert "upcast" in room.reasons and not room.upcast_non_4bit
    cfg.train.memory_budget_gib = 8.0
    small = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1060, 1420, 120)
    assert small.estimate_gib <= 8.0 and small.checkpoint_layers > 0
    assert small.micro_batch * small.grad_accum == 16
    cfg.train.memory_budget_gib = 0
    cfg.train.gradient_checkpointing = "5"
    fixed = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1060, 1420, 120)
    assert fixed.checkpoint_layers == 5 and fixed.checkpointing == "5/32 layers"


def test_plan_picks_fused_adamw_for_the_seeds_8bit_optimizer_where_the_state_fits():
    from workshop_utils.train.fastpath.plan import FUSED_ADAMW, optimizer_choice

    cfg = load_config("full")
    assert cfg.train.optim == "paged_adamw_8bit"
    for vram, dtype in ((140, torch.bfloat16), (15, torch.float16)):  # the card with room and the T4 mode
        plan = plan_fast_path(cfg, cuda_device(vram, dtype), EXAONE_7_8B, 1060, 1420, 120)
        assert plan.optim == FUSED_ADAMW and "fused AdamW" in plan.reasons["optim"], plan.reasons
        assert plan.estimate_gib <= plan.budget_gib
    params = EXAONE_7_8B.lora_params(16, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert params == 13_631_488  # 104 MiB of fp32 moments
    assert optimizer_choice("paged_adamw_8bit", True, params, room_gib=0.05)[0] is None  # 78 MiB more do not fit
    assert optimizer_choice("paged_adamw_8bit", False, params, None)[0] is None  # CPU: as configured
    cfg.train.optim = "adamw_8bit"  # any other choice is the user's
    assert plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1060, 1420, 120).optim is None


def test_16gb_mode_on_fp16_gpus():
    cfg = load_config("full")
    t4 = plan_fast_path(cfg, cuda_device(15, torch.float16), EXAONE_7_8B, 1060, 1420, 120)
    assert t4.mode == "16gb" and t4.attention == "sdpa" and t4.checkpointing == "all"
    assert t4.estimate_gib <= 8.0


def test_memory_estimate_grows_with_uncheckpointed_layers():
    a, b, c = (estimate(EXAONE_7_8B, 4096, checkpoint_layers=ck, fused_loss=True)["total"] for ck in (32, 16, 0))
    assert a < b < c


@pytest.fixture(scope="module")
def tiny_path():
    from workshop_utils.model.choice import resolve_model
    from workshop_utils.model.load import model_path

    return model_path(resolve_model(ModelSettings(model_id=TINY)), verbose=False)


def _lora_model(tiny_path, fast: bool, checkpoint_layers: int = 0, attention: str = "sdpa"):
    from workshop_utils.model.load import load_model
    from workshop_utils.model.lora import apply_lora

    loaded = load_model(ModelSettings(model_id=TINY, compute_dtype="float32"), verbose=False)
    lora = LoraSettings(lora_dropout=0.0)
    torch.manual_seed(0)
    if fast:
        plan = FastPlan(True, mode="budget", padding_free=True, attention=attention, num_layers=3,
                        checkpoint_layers=checkpoint_layers, upcast_non_4bit=False)
        model, _ = prepare_fast_model(loaded.model, plan, lora)
    else:
        model = apply_lora(loaded.model, lora)
    g = torch.Generator().manual_seed(2)
    for n, p in sorted(model.named_parameters()):  # non-zero B so that every LoRA matrix gets a gradient
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.05
    model.train()
    return model, loaded.tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", VARLEN_ATTENTION, EFFICIENT_VARLEN_ATTENTION])
def test_fast_path_gives_the_plain_paths_loss_and_lora_gradients(tiny_path, attention):
    feats = features()
    plain, tok = _lora_model(tiny_path, fast=False)
    out = plain(**CompletionCollator(tok.pad_token_id)(feats))  # HF's own loss over all positions
    out.loss.backward()
    ref = {n: p.grad.clone() for n, p in plain.named_parameters() if p.requires_grad}
    fast, _ = _lora_model(tiny_path, fast=True, checkpoint_layers=2, attention=attention)
    assert fast.get_base_model().config._attn_implementation == attention
    assert sum(getattr(m, "gradient_checkpointing", False) for m in fast.modules() if hasattr(m, "self_attn")) == 2
    varlen = attention in SEQUENCE_BOUNDARY_ATTENTIONS
    collate = FlatteningCollator(tok.pad_token_id, 1 if varlen else 16, seq_lens=varlen)
    loss, _ = fast_completion_loss(fast, collate(feats))
    loss.backward()
    got = {n: p.grad for n, p in fast.named_parameters() if p.requires_grad}
    assert loss.item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert got.keys() == ref.keys() and len(ref) == 3 * 4 * 2
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=1e-3, atol=1e-6), n
        assert ref[n].abs().sum() > 0, n


def test_set_checkpointing_is_per_layer(tiny_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    layers = [m for m in model.modules() if hasattr(m, "self_attn")]
    assert set_checkpointing(model, 2) == 2
    assert [m.gradient_checkpointing for m in layers] == [True, True, False]
    assert set_checkpointing(model, 0) == 0
    assert not any(m.gradient_checkpointing for m in layers)


@pytest.mark.slow
def test_bench_runs_on_cpu_and_recipes_agree_on_the_first_loss(tmp_path):
    import json

    from workshop_utils.bench import run_bench

    res = run_bench(["seed", "hf_gc", "default"], shape="tiny", steps=1, warmup=1, out=tmp_path)
    rows = {r["recipe"]: r for r in res["rows"]}
    assert all("error" not in r and r["tokens_per_s"] > 0 for r in rows.values())
    assert rows["hf_gc"]["speedup_vs_hf_gc"] == 1.0 and rows["hf_gc"]["checkpointing"] == "all"
    assert rows["default"]["padding_free"] and rows["seed"]["checkpointing"] == "off"
    losses = [r["loss_step1"] for r in rows.values()]
    assert max(losses) - min(losses) < 1e-3 * abs(losses[0])
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][2]["recipe"] == "default"
    assert rows["default"]["attention"] == VARLEN_ATTENTION  # CPU: its per-sequence reference


@pytest.mark.slow
def test_bench_isolates_recipes_in_fresh_processes(tmp_path):
    """One process per recipe (the GPU default) gives the same rows as in-process, plus an '@' override."""
    from workshop_utils.bench import run_bench

    res = run_bench(["hf_gc", "default@sdpa"], shape="tiny", steps=1, warmup=1, out=tmp_path, isolate=True)
    assert res["isolated"] and [r["recipe"] for r in res["rows"]] == ["hf_gc", "default@sdpa"]
    assert all("error" not in r for r in res["rows"]), res["rows"]
    assert res["rows"][1]["attention"] == "sdpa" and (tmp_path / "recipes" / "default_at_sdpa" / "bench.json").exists()
    assert res["rows"][0]["loss_step1"] == pytest.approx(res["rows"][1]["loss_step1"], rel=1e-3)
    with pytest.raises(ValueError, match="@"):
        run_bench(["hf_gc@sdpa"], shape="tiny", out=tmp_path)


def test_varlen_model_still_generates_padded_batches_like_sdpa(tiny_path):
    """Without packed boundaries (generation, padded batches) workshop_varlen is sdpa with the mask."""
    from transformers import AutoModelForCausalLM

    register_varlen_attention()
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    batch = CompletionCollator(0)(features())
    with torch.no_grad():
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        model.set_attn_implementation(VARLEN_ATTENTION)
        got = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    keep = batch["attention_mask"].bool()
    assert torch.allclose(got[keep], ref[keep], atol=1e-5)


@pytest.mark.slow
def test_vocab_offload_keeps_loss_and_gradients_and_restores_the_model(tiny_path):
    feats = features()
    model, tok = _lora_model(tiny_path, fast=True, checkpoint_layers=3)
    batch = FlatteningCollator(tok.pad_token_id)(feats)

    def loss_and_grads():
        model.zero_grad()
        loss, _ = fast_completion_loss(model, batch)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    ref_loss, ref = loss_and_grads()
    base = model.get_base_model()
    emb, head = base.get_input_embeddings(), base.get_output_embeddings()
    weights = emb.weight.detach().clone(), head.weight.detach().clone()
    with VocabOffload(model) as off:
        assert "forward" in vars(emb) and len(off.handles) == 2
        assert emb.weight.numel() == 0 and head.weight.numel() == 0  # placeholders between forwards
        seen = []
        h = head.register_forward_pre_hook(lambda m, a: seen.append(m.weight.shape))
        model.to("cpu")  # what accelerate's preparation may do: the tables are not parameters now
        loss, got = loss_and_grads()
        h.remove()
        assert seen == [(102400, 64)] and head.weight.numel() == 0  # there for the loss, gone after
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=1e-5, atol=1e-7), n
    assert "forward" not in vars(emb) and not base.model._forward_pre_hooks and not base._forward_hooks
    assert torch.equal(emb.weight, weights[0]) and torch.equal(head.weight, weights[1])


def test_vocab_offload_is_planned_only_where_it_can_run(monkeypatch):
    cfg = load_config("full")
    monkeypatch.setattr(plan_mod, "varlen_attention_works", lambda dtype: (True, "ok"))
    monkeypatch.setattr(plan_mod, "liger_available", lambda: True)
    cfg.train.memory_budget_gib = 8.0
    tight = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1062, 1420, 120)
    assert tight.offload_vocab and tight.estimate_gib <= 8.0
    # the GPU memory it frees buys a bigger micro-batch than the same budget without it
    cfg.train.offload_vocab = "off"
    kept = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1062, 1420, 120)
    assert not kept.offload_vocab and kept.micro_batch < tight.micro_batch
    assert kept.reasons["offload_vocab"] == "설정에서 끔"
    cfg.train.offload_vocab, cfg.train.memory_budget_gib = "auto", 0
    assert not plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1062, 1420, 120).offload_vocab  # room
    cfg.train.liger_kernels = False
    cfg.train.offload_vocab = "on"
    plan = plan_fast_path(cfg, cuda_device(16), EXAONE_7_8B, 1062, 1420, 120)
    assert not plan.offload_vocab and "Liger" in plan.reasons["offload_vocab"]
    cfg.train.offload_vocab = "sometimes"
    with pytest.raises(ValueError, match="offload_vocab"):
        plan_fast_path(cfg, cuda_device(16), EXAONE_7_8B, 1062, 1420, 120)


def test_plan_table_plans_for_a_gpu_install_whatever_this_machine_has():
    from workshop_utils.teaching.fine_tuning import plan_table

    rows = {r["GPU"].split()[0]: r for r in plan_table(load_config("smoke"))}  # CPU session, tiny batch
    h200 = rows["H200"]  # compiled layers keep more activations: a few layers recompute at micro-batch 16
    assert h200["micro-batch x 누적"] == "16 x 1" and h200["예상 최대 GiB"] <= 140 * 0.85
    assert h200["체크포인팅"] == "off" or int(h200["체크포인팅"].split("/")[0]) <= 8
    assert rows["H200"]["어텐션"] == VARLEN_ATTENTION
    t4 = rows["T4"]
    assert (t4["모드"], t4["어텐션"], t4["임베딩·lm_head"]) == ("16gb", "workshop_varlen_efficient", "CPU")
    assert t4["예상 최대 GiB"] <= 8 and all(r["층 컴파일"] == "예" for r in rows.values())


def test_fast_path_undoes_peft_upcast_of_a_model_that_already_has_lora(tiny_path):
    """Notebook 03 applies LoRA itself (with peft's fp32 upcast of embeddings/lm_head/norms) before training:
    the fast path must bring those frozen weights back to the compute dtype, as its memory plan assumes."""
    from workshop_utils.model.load import load_model
    from workshop_utils.model.lora import apply_lora

    loaded = load_model(ModelSettings(model_id=TINY, compute_dtype="bfloat16"), verbose=False)
    model = apply_lora(loaded.model, LoraSettings(r=4), upcast_non_4bit=True)
    base = model.get_base_model()
    assert base.get_input_embeddings().weight.dtype == torch.float32  # what peft did
    plan = FastPlan(True, upcast_non_4bit=False, attention="sdpa", num_layers=base.config.num_hidden_layers)
    model, _ = prepare_fast_model(model, plan, LoraSettings(r=4), torch.bfloat16)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad and p.__class__.__name__ != "Params4bit"}
    assert frozen == {torch.bfloat16} and "되돌림" in plan.reasons["upcast"]
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}  # LoRA stays fp32


def test_plan_stays_within_what_other_processes_left_on_the_card(monkeypatch):
    """A shared card: another process holds most of it, so the default budget (85% of the card) would OOM."""
    from workshop_utils.runtime import device as runtime_device

    cfg = load_config("workshop")
    roomy = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1062, 1420, 120)
    monkeypatch.setattr(runtime_device, "cuda_available_gib", lambda: 20.0)
    shared = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1062, 1420, 120)
    assert shared.budget_gib == pytest.approx(18.0) and shared.estimate_gib <= 18.0 < roomy.estimate_gib
    assert "다른 프로세스" in shared.reasons["budget"]
    cfg.train.memory_budget_gib = 30  # an explicit budget is the instructor's decision
    assert plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1062, 1420, 120).budget_gib == 30
