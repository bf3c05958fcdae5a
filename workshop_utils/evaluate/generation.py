"""Batched greedy generation with left padding; base vs tuned on one loaded model.

Decoder-only models continue from the last position, so a batch is padded on the LEFT for
generation (right padding would put pad tokens between the prompt and the answer). Generation is
greedy (deterministic) by default; it stops at the chat template's end-of-turn token.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field

import torch

from ..config import ModelSettings
from ..data.prompts import render_prompt, stop_token_ids
from ..model.cpu4bit import dequantized_4bit_weights
from ..model.load import load_model


@dataclass
class GenerationResult:
    texts: list[str]
    stopped: list[bool]  # True when the model emitted a stop token (did not hit max_new_tokens)
    new_tokens: list[int]
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return sum(self.new_tokens) / self.seconds if self.seconds else 0.0


@contextlib.contextmanager
def adapter_disabled(model, disabled: bool = True):
    """Run the base model (LoRA off) on a PeftModel without loading a second copy."""
    if disabled and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model


def _device(model) -> torch.device:
    return next(p.device for p in model.parameters())


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 128, batch_size: int = 8,
             progress: bool = True, desc: str = "generate", do_sample: bool = False, dequantize_once: bool = True,
             **gen_kwargs) -> GenerationResult:
    """Generate for many prompts in batches (left padding, greedy by default).

    `dequantize_once`: on CPU, 4-bit weights are dequantized once for the call rather than at every new token
    (model.cpu4bit.dequantized_4bit_weights: same outputs); False measures bitsandbytes' own path."""
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stops = stop_token_ids(tokenizer)
    dev = _device(model)
    texts, stopped, counts = [None] * len(prompts), [False] * len(prompts), [0] * len(prompts)
    # Sort by length so each batch pads little; restore the order afterwards.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    t0 = time.perf_counter()
    try:
        with dequantized_4bit_weights(model, enabled=dequantize_once):  # CPU: once, not per new token
            bar = tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False)
            for start in bar:
                idx = order[start:start + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(dev)
                gc = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, eos_token_id=stops,
                                      pad_token_id=tokenizer.pad_token_id, use_cache=True, **gen_kwargs)
                out = model.generate(**enc, generation_config=gc)
                new = out[:, enc["input_ids"].shape[1]:]
                for row, i in zip(new, idx):
                    ids = row.tolist()
                    cut = next((j for j, t in enumerate(ids) if t in stops), None)
                    stopped[i] = cut is not None
                    ids = ids[:cut] if cut is not None else ids
                    counts[i] = len(ids) + (1 if cut is not None else 0)
                    # a byte-level tokenizer can stop mid-character at max_new_tokens: drop the partial byte
                    texts[i] = tokenizer.decode(ids, skip_special_tokens=True).strip().rstrip("\ufffd")
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return GenerationResult(texts, stopped, counts, time.perf_counter() - t0)


def answer_examples(model, tokenizer, examples: list[dict], max_new_tokens: int = 128, batch_size: int = 8,
                    base: bool = False, progress: bool = True) -> GenerationResult:
    """Render RAFT examples with the chat template and generate answers (base = adapter off)."""
    prompts = [render_prompt(tokenizer, ex) for ex in examples]
    with adapter_disabled(model, base):
        return generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress,
                        desc="원본 모델 base" if base else "파인튜닝 모델 tuned")


def generation_speed(settings: ModelSettings, batch_sizes: tuple[int, ...] = (1, 8), new_tokens: int = 32,
                     prompt: str | None = None, context_sentences: int = 12) -> list[dict]:
    """Generation speed of the same model loaded in 4-bit NF4 and in 16-bit (the compute dtype), per batch size.

    The seed lists "faster inference" among 4-bit's benefits; bitsandbytes dequantizes every weight at every
    step, so this measures what this machine really does (greedy, fixed length: min_new_tokens = new_tokens).
    The default prompt repeats one context sentence `context_sentences` times (12: 856 tokens for the offline model, 2:
    206); on a 2-core CPU the prefill of that prompt, not the new tokens, takes most of the time.
    """
    prompt = prompt or ("다음 문맥을 읽고 질문에 답하세요. "
                        + "누리온테크의 연차휴가는 입사 1년 후 15일이 주어집니다. " * context_sentences
                        + "질문: 연차휴가는 며칠인가요?")
    rows = []
    for four_bit in (True, False):
        loaded = load_model(dataclasses.replace(settings, load_in_4bit=four_bit), verbose=False)
        model, tok = loaded.model, loaded.tokenizer
        label = "NF4 4비트" if four_bit else f"양자화 없음 ({str(loaded.device.dtype)[6:]})"
        for b in batch_sizes:
            generate(model, tok, [prompt] * b, max_new_tokens=2, batch_size=b, progress=False,
                     dequantize_once=False)  # warm-up
            if loaded.device.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            out = generate(model, tok, [prompt] * b, max_new_tokens=new_tokens, batch_size=b, progress=False,
                           min_new_tokens=new_tokens, dequantize_once=False)  # bitsandbytes' own 4-bit path
            rows.append({"가중치": label, "배치": b, "새 토큰/초": round(out.tokens_per_second, 1),
                         "장치": loaded.device.device,
                         "GPU 최대 메모리 GiB": round(torch.cuda.max_memory_allocated() / 1024**3, 2)
                         if loaded.device.device == "cuda" else None})
        del model, loaded
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows
