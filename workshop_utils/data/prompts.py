"""Chat formatting of RAFT records and tokenization with labels (prompt masked, EOS kept).

Why labels are built here and not by a collator: the seed sets `pad_token = eos_token`. The usual
language-modeling collator masks every position whose token id equals the pad id -- which is then
also the EOS at the end of each answer, so the model never learns to stop. We build labels from the
chat template's rendering instead: prompt tokens -100, answer tokens and the end-of-turn token kept,
and padding masked by the attention mask, never by token id.
"""
from __future__ import annotations

from dataclasses import dataclass

from .raft import target_text

IGNORE_INDEX = -100


def format_context(docs: list[str]) -> str:
    return "\n\n".join(f"[문서 {i}] {d}" for i, d in enumerate(docs, start=1))


def user_message(example: dict) -> str:
    """Instruction, the documents and the question -- the user turn of the chat."""
    ctx = example["context"]
    docs = [ctx] if isinstance(ctx, str) else list(ctx)
    return f"{example['instruction']}\n\n{format_context(docs)}\n\n질문: {example['question']}"


def messages(example: dict, with_answer: bool = True) -> list[dict]:
    msgs = [{"role": "user", "content": user_message(example)}]
    if with_answer:
        msgs.append({"role": "assistant", "content": target_text(example)})
    return msgs


def render_prompt(tokenizer, example: dict) -> str:
    """The prompt text up to where the assistant starts answering (add_generation_prompt=True)."""
    return tokenizer.apply_chat_template(messages(example, with_answer=False), tokenize=False,
                                         add_generation_prompt=True)


def end_of_turn_token(tokenizer) -> str:
    """The token the chat template puts right after an assistant answer (EXAONE: [|endofturn|],
    SmolLM2: <|im_end|>): that is the stop token the model must learn."""
    probe = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "ANSWER_END_PROBE"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    tail = text.split("ANSWER_END_PROBE", 1)[1]
    for tok in sorted(tokenizer.all_special_tokens, key=len, reverse=True):
        if tail.lstrip().startswith(tok):
            return tok
    if tokenizer.eos_token:
        return tokenizer.eos_token
    raise ValueError("채팅 템플릿에서 답변 종료 토큰을 찾지 못했습니다 (no end-of-turn token)")


def stop_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int
    truncated: bool


def tokenize_example(tokenizer, example: dict, max_length: int) -> TokenizedExample:
    """Prompt + answer + end-of-turn token; labels -100 on the prompt.

    Too long? The prompt (the documents) is cut from its middle, keeping the instruction at the start
    and the question + assistant header at the end; the answer is never cut (a truncated target
    would teach the model to stop mid-sentence). Truncation is reported, not silent.
    """
    prompt = render_prompt(tokenizer, example)
    eot = end_of_turn_token(tokenizer)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(target_text(example), add_special_tokens=False)["input_ids"]
    a_ids = a_ids + [tokenizer.convert_tokens_to_ids(eot)]
    truncated = False
    budget = max_length - len(a_ids)
    if len(p_ids) > budget:
        if budget < 64:
            raise ValueError(f"example {example.get('id')}: answer ({len(a_ids)} tokens) leaves no room "
                             f"for the prompt in max_seq_length={max_length}")
        head = budget // 4
        tail = budget - head
        p_ids = p_ids[:head] + p_ids[-tail:]
        truncated = True
    return TokenizedExample(p_ids + a_ids, [IGNORE_INDEX] * len(p_ids) + a_ids, len(p_ids), truncated)


def tokenize_dataset(tokenizer, examples: list[dict], max_length: int):
    """A datasets.Dataset of input_ids/labels (+ how many examples were truncated)."""
    from datasets import Dataset

    rows = [tokenize_example(tokenizer, ex, max_length) for ex in examples]
    ds = Dataset.from_dict({"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows]})
    return ds, sum(r.truncated for r in rows)
