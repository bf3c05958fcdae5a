"""Offline model, 4-bit loading, the CPU repacking hazard, labels/EOS, training, resume, stopping."""
from __future__ import annotations

import copy

import pytest
import torch

from workshop_utils.config import RAFT_INSTRUCTION, load_config
from workshop_utils.data.prompts import IGNORE_INDEX, end_of_turn_token, render_prompt, tokenize_example
from workshop_utils.model.cpu4bit import RepackedModelError, assert_trainable_4bit, repacked_4bit_modules
from workshop_utils.model.load import bnb_config, load_model
from workshop_utils.model.sources import exaone_like_tokenizer
from workshop_utils.train.collators import CompletionCollator

pytestmark = pytest.mark.slow

SHORT = [
    {"id": f"s{i}", "instruction": RAFT_INSTRUCTION, "context": [doc], "question": q, "answer": a, "golden_index": 0}
    for i, (doc, q, a) in enumerate([
        ("누리온테크 연차휴가는 1년에 15일이다.", "연차휴가는 며칠인가요?", "문맥에 따르면 15일입니다."),
        ("사내식당 점심은 3,000원이다.", "점심값은 얼마인가요?", "문맥에 따르면 3,000원입니다."),
        ("헬프온 내선 번호는 2580이다.", "헬프온 내선은 몇 번인가요?", "문맥에 따르면 2580번입니다."),
        ("셔틀버스는 판교역에서 출발한다.", "셔틀버스는 어디서 출발하나요?", "문맥에 따르면 판교역입니다."),
    ])
]


def tiny_cfg(tmp_path, **train):
    cfg = load_config(size="tiny", build_dir=str(tmp_path))
    cfg.model.model_id = "offline"
    cfg.train.eval_steps = 0
    cfg.train.report_to = []
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def lora_grads(model, tok, seed: int = 0) -> torch.Tensor:
    """Flattened LoRA gradients of one fixed batch (dropout off, non-zero B so every grad is live)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                          init_lora_weights=False))
    pm.train()
    batch = CompletionCollator(tok.pad_token_id)([tokenize_example(tok, SHORT[0], 256).__dict__])
    pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
    return torch.cat([p.grad.flatten() for n, p in pm.named_parameters() if p.requires_grad and p.grad is not None])


def raw_4bit(path, dtype=torch.float32):
    """The seed's loading code, outside the library (no repacking guard)."""
    from transformers import AutoModelForCausalLM

    from workshop_utils.config import ModelSettings

    return AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb_config(ModelSettings(), dtype), dtype=dtype)


@pytest.fixture
def avx512bf16_cpu(monkeypatch):
    """Make bitsandbytes behave as on a CPU with AVX512-BF16 (CI machines have it; this one may not)."""
    import bitsandbytes.nn.modules as mods

    monkeypatch.setattr(mods, "has_avx512bf16", lambda: True)


def test_offline_model_loads_in_4bit_and_prints_its_choice(offline_dir, capsys):
    loaded = load_model(load_config(size="tiny").model)
    out = capsys.readouterr().out
    assert "SmolLM2" in out and "dtype=" in out and "4비트 NF4" in out
    import bitsandbytes as bnb

    lin = [m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(lin) == 30 * 7 and all(m.weight.quant_type == "nf4" for m in lin)
    assert all(m.support_avx512bf16_for_cpu is False for m in lin)
    assert loaded.model.config.model_type == "llama"


def test_inference_then_training_gradients_match_a_fresh_model(offline_dir, tokenizer, avx512bf16_cpu):
    """The hazard made impossible: a model from load_model may generate first and train after."""
    fresh = lora_grads(load_model(load_config(size="tiny").model, verbose=False).model, tokenizer)
    used = load_model(load_config(size="tiny").model, verbose=False).model
    used.eval()
    with torch.no_grad():
        used.generate(**tokenizer(["안녕하세요"], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert repacked_4bit_modules(used) == []
    assert_trainable_4bit(used)
    after = lora_grads(used, tokenizer)
    assert torch.equal(fresh, after)


def test_repacked_model_is_refused_and_its_gradients_are_wrong(offline_dir, tokenizer, avx512bf16_cpu):
    """Loaded the seed's way on an AVX512-BF16 CPU, one eval forward repacks the weights."""
    m = raw_4bit(str(offline_dir))
    fresh = lora_grads(copy.deepcopy(m), tokenizer)  # the same fresh model (bit-identical, as load_model's memo)
    m.eval()
    with torch.no_grad():
        m(**tokenizer(["안녕하세요"], return_tensors="pt"))
    assert len(repacked_4bit_modules(m)) == 30 * 7
    with pytest.raises(RepackedModelError, match="load_model"):
        assert_trainable_4bit(m)
    wrong = lora_grads(m, tokenizer)
    rel = float((wrong - fresh).norm() / fresh.norm())
    assert rel > 0.1, f"expected very different gradients, got relative error {rel:.3f}"


@pytest.mark.skipif(not __import__("bitsandbytes.functional").functional.has_avx512bf16(),
                    reason="needs a CPU with AVX512-BF16 (bitsandbytes' repacking path)")
def test_real_avx512bf16_cpu_repacks_after_an_eval_forward(offline_dir, tokenizer):
    m = raw_4bit(str(offline_dir), torch.bfloat16)
    m.eval()
    with torch.no_grad():
        m(**tokenizer(["안녕하세요"], return_tensors="pt"))
    assert repacked_4bit_modules(m)


@pytest.mark.parametrize("flavour", ["smollm2", "exaone"])
def test_labels_mask_the_prompt_and_keep_the_end_of_turn(tokenizer, flavour):
    tok = exaone_like_tokenizer(copy.deepcopy(tokenizer)) if flavour == "exaone" else tokenizer
    prompt = render_prompt(tok, SHORT[0])
    if flavour == "exaone":
        assert prompt.startswith("[|system|][|endofturn|]\n[|user|]" + RAFT_INSTRUCTION) and prompt.endswith("[|assistant|]")
        assert end_of_turn_token(tok) == "[|endofturn|]"
    else:
        assert "<|im_start|>user\n" + RAFT_INSTRUCTION in prompt and prompt.endswith("<|im_start|>assistant\n")
        assert end_of_turn_token(tok) == "<|im_end|>"
    ex = tokenize_example(tok, SHORT[0], 512)
    eot = tok.convert_tokens_to_ids(end_of_turn_token(tok))
    assert ex.labels[: ex.prompt_tokens] == [IGNORE_INDEX] * ex.prompt_tokens
    assert ex.labels[-1] == eot and ex.input_ids[-1] == eot
    assert tok.decode(ex.labels[ex.prompt_tokens:-1]) == SHORT[0]["answer"]


def test_every_training_example_keeps_its_eos_label_even_when_pad_equals_eos(tokenizer, prepared):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the seed's pad_token = eos_token situation
    eos = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))
    feats = [tokenize_example(tokenizer, ex, 1024).__dict__ for ex in prepared.splits["train"][:16]]
    batch = CompletionCollator(tokenizer.pad_token_id)(feats)
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        assert batch["labels"][i, n - 1] == eos, "EOS label missing"
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all() and (batch["attention_mask"][i, n:] == 0).all()
    # What the usual collator does with pad == eos: the EOS label is masked, so the model never learns to stop.
    from transformers import DataCollatorForLanguageModeling

    lm = DataCollatorForLanguageModeling(tokenizer, mlm=False)([{"input_ids": f["input_ids"]} for f in feats[:2]])
    n0 = len(feats[0]["input_ids"])
    assert lm["labels"][0, n0 - 1] == IGNORE_INDEX


def test_completion_only_logits_give_the_same_loss_and_gradients(tiny_model):
    from workshop_utils.train.loss import completion_loss

    settings = load_config(size="tiny").model
    settings.model_id = tiny_model  # an identity of the loss, whatever the weights: the tiny random model
    settings.compute_dtype = "float32"  # compare in fp32 even on a CPU that would pick bf16
    tokenizer = load_model(settings, verbose=False).tokenizer
    feats = [tokenize_example(tokenizer, ex, 256).__dict__ for ex in SHORT[:3]]
    batch = CompletionCollator(tokenizer.pad_token_id)(feats)
    n_items = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    results = []
    for mode in ("full", "completion"):
        torch.manual_seed(0)
        m = load_model(settings, verbose=False).model
        from peft import LoraConfig, get_peft_model

        pm = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                          init_lora_weights=False))
        if mode == "full":
            loss = pm(**batch, num_items_in_batch=n_items).loss
        else:
            loss, _ = completion_loss(pm, dict(batch), n_items)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in pm.parameters() if p.requires_grad])
        results.append((loss.detach(), grads))
    (l1, g1), (l2, g2) = results
    assert torch.allclose(l1, l2, rtol=1e-5, atol=1e-6)
    assert float((g1 - g2).norm() / g1.norm()) < 1e-4


def test_training_arguments_follow_transformers_5_and_the_device(tmp_path):
    from workshop_utils.runtime.device import DeviceChoice, choose_device
    from workshop_utils.train.trainer import precision_flags, training_arguments

    assert precision_flags(DeviceChoice("cuda", torch.float16, "T4")) == {"bf16": False, "fp16": True}
    assert precision_flags(DeviceChoice("cuda", torch.bfloat16, "A100")) == {"bf16": True, "fp16": False}
    cfg = load_config(size="full", build_dir=str(tmp_path))
    args = training_arguments(cfg, choose_device(), gradient_checkpointing=True)
    assert (args.eval_strategy.value, args.optim.value, args.lr_scheduler_type.value) == ("steps", "paged_adamw_8bit", "cosine")
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.learning_rate) == (4, 4, 2e-4)
    assert (args.num_train_epochs, args.warmup_steps, args.save_total_limit) == (3, 100, 2)
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert args.report_to == ["tensorboard"]


def test_train_resume_after_interruption_reaches_the_same_step(tmp_path, tiny_model):
    from transformers import TrainerCallback

    from workshop_utils.train.runs import list_runs
    from workshop_utils.data.prompts import tokenize_dataset
    from workshop_utils.train.trainer import train

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    cfg = tiny_cfg(tmp_path, max_steps=4, save_steps=2, logging_steps=1)
    cfg.model.model_id = tiny_model  # checkpoints and step counts, not learning: the tiny random model
    splits = {"train": SHORT, "validation": []}
    loaded = load_model(cfg.model, verbose=False)
    tokenizer = loaded.tokenizer
    with pytest.raises(KeyboardInterrupt):
        train(loaded.model, tokenizer, splits, cfg, resume=False, callbacks=[Interrupt()])
    (run,) = list_runs(cfg)
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2"] and not run.complete
    _, res = train(load_model(cfg.model, verbose=False).model, tokenizer, splits, cfg, resume=True)
    assert res.resumed_from.endswith("checkpoint-2") and res.steps == 4 and res.run_dir == str(run.path)
    # tokens/s counts this session only: steps 3 and 4, one example each, no padding
    ds, _ = tokenize_dataset(tokenizer, SHORT, cfg.model.max_seq_length)
    lengths = sorted(len(ids) for ids in ds["input_ids"])
    assert sum(lengths[:2]) <= res.tokens_seen <= sum(lengths[-2:]) and res.tokens_per_s > 0
    assert (run.path / "adapter" / "adapter_config.json").exists()


def test_same_config_trains_the_same_adapter_whatever_the_process_drew_before(tmp_path, tiny_model):
    """LoRA's A matrices are random and the Trainer seeds itself only after they exist: apply_lora draws them
    with train.seed, so two runs of one config end with the same weights even when the process used torch's
    generator differently before each (a notebook cell, a different evaluation), and leaves that generator as
    it was."""
    from workshop_utils.model.lora import apply_lora
    from workshop_utils.train.trainer import train

    cfg = tiny_cfg(tmp_path, max_steps=2, logging_steps=1)
    cfg.model.model_id = tiny_model
    cfg.lora.lora_dropout = 0.1  # the Trainer's seed covers the dropout masks
    trained = []
    for i, draws in enumerate((0, 1000)):
        loaded = load_model(cfg.model, verbose=False)
        torch.rand(draws)
        c = copy.deepcopy(cfg)
        c.train.output_dir = str(tmp_path / f"run{i}")
        model, res = train(loaded.model, loaded.tokenizer, {"train": SHORT, "validation": []}, c, resume=False)
        trained.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n})
    assert trained[0].keys() == trained[1].keys() and trained[0]
    assert all(torch.equal(trained[0][n], trained[1][n]) for n in trained[0])
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in trained[0].items() if "lora_B" in n)  # it trained

    state = torch.get_rng_state()
    again = apply_lora(load_model(cfg.model, verbose=False).model, cfg.lora, seed=cfg.train.seed)
    assert torch.equal(torch.get_rng_state(), state)
    other = apply_lora(load_model(cfg.model, verbose=False).model, cfg.lora, seed=cfg.train.seed + 1)
    a = {n: p for n, p in again.named_parameters() if "lora_A" in n}
    b = {n: p for n, p in other.named_parameters() if "lora_A" in n}
    assert not any(torch.equal(a[n], b[n]) for n in a)


def test_tuned_model_learns_to_stop(tmp_path, tokenizer):
    from workshop_utils.evaluate.generation import answer_examples
    from workshop_utils.train.trainer import train

    # 12 steps of 2 (6 passes over the 4 examples): the loss is below 0.03 from step 8 and about 0.003 at step 12
    # (24 steps, the earlier setting, only went on to 0.0003); the assertions below are unchanged
    cfg = tiny_cfg(tmp_path, max_steps=12, learning_rate=3e-3, per_device_train_batch_size=2, warmup_steps=2,
                   logging_steps=4, save_steps=1000)
    cfg.lora.lora_dropout = 0.0
    short = [dict(ex, instruction="문맥을 읽고 답하세요.") for ex in SHORT]  # short prompts keep this test fast
    model, res = train(load_model(cfg.model, verbose=False).model, tokenizer, {"train": short, "validation": []}, cfg,
                       resume=False)
    assert res.final_loss < 0.1
    out = answer_examples(model, tokenizer, short, max_new_tokens=40, batch_size=4, progress=False)
    assert all(out.stopped), out.texts
    assert out.texts == [ex["answer"] for ex in short]
    base = answer_examples(model, tokenizer, short, max_new_tokens=12, batch_size=4, base=True, progress=False)
    assert base.texts != out.texts


def test_a_model_stays_on_one_gpu_when_several_are_visible(monkeypatch):
    """Not 'auto' on CUDA: with 2 GPUs visible it split the model and the fused loss failed (2 x H200)."""
    import torch

    from workshop_utils.model import load

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert load._default_device_map() == {"": 1}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load._default_device_map() == "auto"


def test_one_process_trains_on_one_gpu_when_several_are_visible():
    """HF Trainer would wrap the model in DataParallel and scale the loss by the GPU count (2 x H200: loss 24.70
    for 12.36); one_gpu_per_process keeps n_gpu at 1 outside a launcher."""
    from workshop_utils.config import load_config
    from workshop_utils.runtime.device import choose_device
    from workshop_utils.train.trainer import one_gpu_per_process, training_arguments

    cfg = load_config(size="tiny")
    args = training_arguments(cfg, choose_device("float32"))
    _ = args.device
    args._n_gpu = 2  # what TrainingArguments sets on a machine with two visible GPUs
    assert args.n_gpu == 2
    one_gpu_per_process(args)
    assert args.n_gpu == 1 and args.train_batch_size == cfg.train.per_device_train_batch_size


def test_trainer_built_with_two_visible_gpus_keeps_the_planned_micro_batch(monkeypatch, tokenizer, prepared):
    """The Trainer fixes its micro-batch (per device x n_gpu) when it is built: n_gpu must be 1 by then (2 x H200:
    budget8 trained micro-batches of 8 against a plan of 4 while the fix ran after the build)."""
    from workshop_utils.config import load_config
    from workshop_utils.model.load import load_model
    from workshop_utils.train import trainer as trainer_mod

    real = trainer_mod.training_arguments

    def two_gpus(*a, **k):
        args = real(*a, **k)
        _ = args.device
        args._n_gpu = 2  # what TrainingArguments finds on a machine with two visible GPUs
        return args

    monkeypatch.setattr(trainer_mod, "training_arguments", two_gpus)
    cfg = load_config(size="tiny")
    cfg.train.per_device_train_batch_size = 2
    model = load_model(cfg.model, verbose=False).model
    trainer, _, _ = trainer_mod.build_trainer(model, tokenizer, prepared.splits, cfg)
    assert trainer.args.n_gpu == 1 and trainer._train_batch_size == 2
    assert trainer.get_train_dataloader().batch_size in (2, None)  # None: a batch sampler of size 2
