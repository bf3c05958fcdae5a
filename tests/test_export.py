"""GGUF export (llama.cpp / Ollama): names, RoPE permutation, tokenizer, chat template, and a verified
round trip of the offline model through transformers' GGUF loader (f16 and q8_0).

transformers cannot load an "exaone" GGUF (its GGUF loader has no EXAONE architecture), so the
EXAONE test checks what can be checked: the tensor names, shapes and values against the merged state
dict, read back with transformers' own GGUF reader, and the metadata llama.cpp needs. Where
llama-cpp-python is installed (not in CI), two more tests run both files in real llama.cpp.
"""
from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest
import torch

from workshop_utils.report import export
from workshop_utils.cli import main

KOREAN_QUESTIONS = ["누리온테크의 연차휴가는 며칠인가요?", "셔틀버스는 어디서 출발하나요?",
                    "사내식당 점심값은 얼마인가요? 영수증은 어디에 제출하나요?"]
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def save_random_adapter(model, tokenizer, adapter_dir, seed: int = 0, std: float = 0.01):
    """LoRA on every linear layer with a random, non-zero B (no training): merging it changes every weight."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    pm = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=ALL_LINEAR, lora_dropout=0.0))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, std)
    pm.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    return pm


def gguf_tensors(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, {gguf name: float32 tensor in transformers' shape}) read with transformers' GGUF reader."""
    import gguf
    from transformers.integrations.gguf.reader import GgufHeader, load_gguf_state_dict, read_gguf_metadata

    meta, _ = read_gguf_metadata(str(path), ("tokenizer.ggml.tokens",))
    header = GgufHeader.from_file(str(path))
    out = {}
    for info, (name, lazy) in zip(header.tensors, load_gguf_state_dict(header).items()):
        raw = lazy[None]
        if raw.dtype == torch.uint8:
            values = gguf.dequantize(raw.numpy(), gguf.GGMLQuantizationType(info.ggml_type))
            out[name] = torch.from_numpy(np.ascontiguousarray(values)).reshape(info.shape)
        else:
            out[name] = raw.float()
    return meta, out


# --- fast: pieces ----------------------------------------------------------------------------------------
def test_permute_qk_is_llama_cpp_pair_layout_and_transformers_undoes_it():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    # one head of 4 rows: transformers rotates (row 0, row 2) and (row 1, row 3); llama.cpp wants pairs adjacent
    one_head = torch.arange(4.0).reshape(4, 1)
    assert export.permute_qk(one_head, 1).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]
    w = torch.randn(3 * 64, 576)  # SmolLM2's k_proj: 3 key/value heads of 64
    permuted = export.permute_qk(w, 3)
    assert not torch.equal(permuted, w)
    back = LlamaTensorProcessor()._reverse_permute_weights(permuted.numpy(), 9, 3)
    assert np.array_equal(back, w.numpy())


def test_gguf_tensor_names_follow_llama_cpp_and_unknown_tensors_are_refused():
    assert export.gguf_tensor_name("model.layers.12.self_attn.q_proj.weight")[0] == "blk.12.attn_q.weight"
    assert export.gguf_tensor_name("model.layers.0.mlp.gate_proj.weight")[0] == "blk.0.ffn_gate.weight"
    assert export.gguf_tensor_name("model.layers.0.post_attention_layernorm.weight")[0] == "blk.0.ffn_norm.weight"
    assert export.gguf_tensor_name("model.embed_tokens.weight")[0] == "token_embd.weight"
    assert export.gguf_tensor_name("lm_head.weight")[0] == "output.weight"
    assert export.gguf_tensor_name("model.layers.0.self_attn.q_norm.weight") is None


@pytest.fixture(scope="module")
def shipped_gguf_metadata() -> dict:
    """The metadata llama.cpp wrote into the shipped SmolLM2 GGUF, read once for the module (~6 s a read)."""
    from transformers.integrations.gguf.reader import read_gguf_metadata

    from workshop_utils.runtime.packages import find_offline_gguf

    return read_gguf_metadata(str(find_offline_gguf()))[0]


def test_offline_tokenizer_gets_the_pre_tokenizer_llama_cpp_wrote_into_the_shipped_gguf(tokenizer,
                                                                                     shipped_gguf_metadata):
    shipped = shipped_gguf_metadata
    assert shipped["tokenizer.ggml.pre"] == "smollm"
    assert export.pre_tokenizer_name(tokenizer) == "smollm"


def test_chat_format_reproduces_smollm2_and_exaone_templates(tokenizer):
    from workshop_utils.model.sources import exaone_like_tokenizer

    convo = [{"role": "user", "content": "연차휴가는 며칠인가요?"}, {"role": "assistant", "content": "15일입니다."},
             {"role": "user", "content": "반차도 되나요?"}]
    for tok, eot in ((tokenizer, "<|im_end|>"), (exaone_like_tokenizer(copy.deepcopy(tokenizer)), "[|endofturn|]")):
        fmt = export.chat_format(tok)
        assert fmt is not None and fmt.end_of_turn(tok) == eot
        for system in (None, "당신은 누리온테크 사내 도우미입니다."):
            msgs = ([{"role": "system", "content": system}] if system else []) + convo
            hf = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            assert fmt.render(convo, system) == hf
        tpl = fmt.ollama_template()
        assert tpl.index(fmt.user_prefix + "{{ .Content }}" + fmt.user_suffix) < tpl.index(
            "{{ .Content }}" + fmt.assistant_suffix)


def test_modelfile_names_the_file_template_and_stop_tokens(tokenizer):
    fmt = export.chat_format(tokenizer)
    text = export.modelfile_text("run-q8_0.gguf", fmt, ["<|im_end|>"], 4096)
    assert "FROM ./run-q8_0.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert f'TEMPLATE """{fmt.ollama_template()}"""' in text and "PARAMETER num_ctx 4096" in text


def test_cli_export_missing_adapter_is_one_korean_line_and_exit_2(tmp_path, capsys):
    assert main(["export", "--adapter", str(tmp_path / "없는폴더"), "--format", "gguf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "어댑터 폴더가 없습니다" in err and "Traceback" not in err

    (tmp_path / "not-adapter").mkdir()
    assert main(["export", "--adapter", str(tmp_path / "not-adapter")]) == 2
    assert "adapter_config.json" in capsys.readouterr().err


def fake_adapter(tmp_path, base: str):
    """An adapter folder that passes the checks before loading (config + a weights file)."""
    adapter = tmp_path / "runs" / "demo" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": base}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    return adapter


def test_cli_export_keeps_existing_files_without_overwrite(tmp_path, capsys, offline_dir):
    adapter = fake_adapter(tmp_path, str(offline_dir))
    plan = export.plan_export(adapter, "q8_0")
    assert plan.gguf_path == tmp_path / "runs" / "demo" / "gguf-q8_0" / "demo-q8_0.gguf"
    assert plan.model_type == "llama" and 130e6 < plan.num_params < 140e6
    assert plan.fits_in_ram(ram_gib=2) and not plan.fits_in_ram(ram_gib=0.2)
    plan.gguf_path.parent.mkdir(parents=True)
    plan.gguf_path.write_text("내 파일")
    assert main(["export", "--adapter", str(adapter), "--quant", "q8_0"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert plan.gguf_path.read_text() == "내 파일"


def test_cli_export_refuses_an_architecture_llama_cpp_mapping_does_not_cover(tmp_path, capsys):
    base = tmp_path / "gpt2-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2}))
    adapter = fake_adapter(tmp_path, str(base))
    assert main(["export", "--adapter", str(adapter)]) == 2
    assert "gpt2" in capsys.readouterr().err


# --- slow: the offline model, round trip through transformers' GGUF loader ------------------------------
def prompts(tokenizer) -> list[str]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in KOREAN_QUESTIONS]


@torch.no_grad()
def logits(model, tokenizer, texts) -> torch.Tensor:
    return torch.cat([model(**tokenizer(t, return_tensors="pt")).logits[0] for t in texts])


def shipped_question(root, tokenizer) -> str:
    """The first question of the shipped data as a chat prompt (short, so generation stays quick on CPU)."""
    rec = json.loads((root / "data" / "raw" / "facilities.jsonl").read_text(encoding="utf-8").splitlines()[0])
    return tokenizer.apply_chat_template([{"role": "user", "content": rec["q"]}], tokenize=False,
                                         add_generation_prompt=True)


@pytest.fixture(scope="module")
def offline_export(tmp_path_factory, offline_dir, tokenizer):
    """One load of the offline model: base logits, a random LoRA adapter saved like `workshop train`
    saves it, the same object merged (fp32 reference), f16 written from it and q8_0 through the CLI."""
    from transformers import AutoModelForCausalLM

    tmp = tmp_path_factory.mktemp("export")
    texts = prompts(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(str(offline_dir), dtype=torch.float32)
    base_logits = logits(model, tokenizer, texts)
    adapter = tmp / "runs" / "demo" / "adapter"
    merged = save_random_adapter(model, tokenizer, adapter).merge_and_unload().eval()
    f16 = export.write_gguf(merged, tokenizer, tmp / "f16" / "demo-f16.gguf", "f16", verbose=False)
    assert main(["export", "--adapter", str(adapter), "--format", "gguf", "--quant", "q8_0"]) == 0
    return {"adapter": adapter, "merged": merged, "texts": texts, "base_logits": base_logits,
            "ref_logits": logits(merged, tokenizer, texts), "f16": f16,
            "q8_0": adapter.parent / "gguf-q8_0" / "demo-q8_0.gguf"}


@pytest.fixture(scope="module", autouse=True)
def gguf_parsed_once():
    """transformers' GGUF loader parses a file's header for the config, again for the weights and again for the
    tokenizer, and rebuilds gguf's tensor-name map for every submodule it walks (~19 s per load of the offline model
    on the CI CPU): in this module each file (path, size, mtime) is parsed once and each map built once, with the
    conversion's own helper (model/sources.gguf_parsed_once); what is loaded, and how, is unchanged."""
    from workshop_utils.model.sources import gguf_parsed_once as parsed_once

    with parsed_once():
        yield


def load_gguf(path, with_tokenizer: bool = True):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name) if with_tokenizer else None
    return model.eval(), tok


@pytest.mark.slow
def test_f16_gguf_round_trips_exactly_through_transformers(offline_export, tokenizer, root):
    ex = offline_export
    f16 = ex["f16"]
    assert (f16.arch, f16.pre_tokenizer, f16.tied, f16.stops) == ("llama", "smollm", True, ["<|im_end|>"])
    gm, gtok = load_gguf(f16.path)

    # weights: every tensor is the merged one rounded to fp16 (norms stay fp32), after undoing the q/k permutation
    merged_sd = ex["merged"].state_dict()
    for name, value in gm.state_dict().items():
        expected = merged_sd[name]
        expected = expected.half().float() if expected.dim() == 2 else expected
        assert torch.equal(value, expected), name

    # tokenizer and chat template travel inside the file
    assert gtok.chat_template == tokenizer.chat_template
    for text in ex["texts"]:
        assert gtok(text)["input_ids"] == tokenizer(text)["input_ids"]

    # logits: within fp16 rounding of the weights (measured max 0.047, mean 0.005 on logits up to ~40),
    # while the adapter itself moves them by up to 3.2 -- a file without it would fail
    got = logits(gm, gtok, ex["texts"])
    diff = (got - ex["ref_logits"]).abs().max().item()
    assert diff < 0.1, diff
    assert (ex["base_logits"] - ex["ref_logits"]).abs().max().item() > 1.0

    # the same greedy answer to a shipped question in the training prompt format
    prompt = shipped_question(root, tokenizer)
    ids = tokenizer(prompt, return_tensors="pt")
    ref = ex["merged"].generate(**ids, max_new_tokens=24, do_sample=False)
    out = gm.generate(**gtok(prompt, return_tensors="pt"), max_new_tokens=24, do_sample=False)
    assert out.tolist() == ref.tolist()


@pytest.mark.slow
def test_q8_0_gguf_from_the_cli_round_trips_within_the_stated_bound(offline_export, tokenizer, root,
                                                                   shipped_gguf_metadata):
    from transformers.integrations.gguf.reader import read_gguf_metadata

    ex = offline_export
    path = ex["q8_0"]
    modelfile = (path.parent / "Modelfile").read_text(encoding="utf-8")
    assert f"FROM ./{path.name}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert path.stat().st_size < 0.6 * ex["f16"].size_bytes  # 8.5 bits per weight vs 16

    # the metadata llama.cpp wrote into the shipped SmolLM2 GGUF, we write too (the same values where they are facts)
    ours, tensor_names = read_gguf_metadata(str(path))
    shipped = shipped_gguf_metadata
    keys = {k for k in shipped if k.startswith(("llama.", "tokenizer."))}
    assert keys <= set(ours), keys - set(ours)
    for k in keys:  # token and merge lists compare by count (the reader does not expand them), types in full
        assert ours[k] == shipped[k], k
    assert ours["general.architecture"] == "llama" and ours["general.file_type"] == 7  # MOSTLY_Q8_0
    assert "output.weight" not in tensor_names  # tied embeddings: llama.cpp reuses token_embd
    f16_meta, _ = read_gguf_metadata(str(ex["f16"].path))
    assert {k: v for k, v in ours.items() if k.startswith("tokenizer.")} == {
        k: v for k, v in f16_meta.items() if k.startswith("tokenizer.")}  # the tokenizer the f16 test loaded

    gm, _ = load_gguf(path, with_tokenizer=False)
    got = logits(gm, tokenizer, ex["texts"])
    d = (got - ex["ref_logits"]).abs()
    # stated bound for q8_0 (blocks of 32 weights, one fp16 scale each): max |diff| < 4 and mean < 0.3 over
    # 247 positions x 49,152 logits up to ~40 (measured 2.72 and 0.156); arg-max agrees at >= 95% (99.2%)
    assert d.max().item() < 4.0 and d.mean().item() < 0.3, (d.max().item(), d.mean().item())
    assert (got.argmax(-1) == ex["ref_logits"].argmax(-1)).float().mean().item() >= 0.95

    ids = tokenizer(shipped_question(root, tokenizer), return_tensors="pt")
    ref = ex["merged"].generate(**ids, max_new_tokens=24, do_sample=False)
    assert gm.generate(**ids, max_new_tokens=24, do_sample=False).tolist() == ref.tolist()


# --- slow: EXAONE (untied, no q/k permutation, its own architecture name) --------------------------------
@pytest.mark.slow
def test_exaone_export_matches_the_merged_state_dict(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    from workshop_utils.model.sources import EXAONE_CHAT_TEMPLATE, exaone_config, exaone_like_tokenizer

    tok = exaone_like_tokenizer(copy.deepcopy(tokenizer))
    shape = {"layers": 2, "hidden": 64, "intermediate": 128, "heads": 4, "kv_heads": 2, "vocab": 49216}
    config = exaone_config(shape, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), dtype=torch.float32)
    adapter = tmp_path / "runs" / "exaone-demo" / "adapter"
    merged = save_random_adapter(model, tok, adapter, std=0.05).merge_and_unload()
    assert not export.is_tied(merged)

    f16 = export.write_gguf(merged, tok, tmp_path / "exaone-f16.gguf", "f16", verbose=False)
    q8 = export.write_gguf(merged, tok, tmp_path / "exaone-q8_0.gguf", "q8_0", verbose=False)
    meta, tensors = gguf_tensors(f16.path)
    _, q8_tensors = gguf_tensors(q8.path)

    assert meta["general.architecture"] == "exaone" and f16.arch == "exaone"
    assert (meta["exaone.block_count"], meta["exaone.attention.head_count"], meta["exaone.attention.head_count_kv"],
            meta["exaone.embedding_length"], meta["exaone.rope.freq_base"]) == (2, 4, 2, 64, 500000.0)
    assert meta["tokenizer.ggml.eos_token_id"] == tok.convert_tokens_to_ids("[|endofturn|]")
    assert meta["tokenizer.chat_template"] == EXAONE_CHAT_TEMPLATE
    assert meta["tokenizer.ggml.tokens"][-1] == "[PAD49215]"  # vocabulary padded to the model's 49,216 rows

    sd = merged.state_dict()
    expected = {export.gguf_tensor_name(k)[0]: v for k, v in sd.items()}
    assert set(tensors) == set(expected) and "output.weight" in tensors  # untied: its own output layer
    for name, value in expected.items():
        assert tensors[name].shape == value.shape, name
        # f16: exactly the merged weights in fp16, q/k NOT permuted (llama.cpp's exaone uses NeoX RoPE)
        assert torch.equal(tensors[name], value.half().float() if value.dim() == 2 else value), name
        if value.dim() == 2:  # q8_0: within half a step (block amax / 127) plus the fp16 rounding of the
            blocks = value.reshape(-1, 32)  # step times the largest code (127 * 2**-11 steps)
            step = blocks.abs().amax(dim=1, keepdim=True) / 127
            err = (q8_tensors[name].reshape(-1, 32) - blocks).abs()
            assert (err <= (0.5 + 127 / 2048) * step + 1e-7).all(), name
    q = sd["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(tensors["blk.0.attn_q.weight"], export.permute_qk(q, 4).half().float())

    # the CLI path: fp16 merge from the saved adapter, untied output, EXAONE stop token in the Modelfile
    res = export.export_gguf(adapter, quant="q8_0", verbose=False)
    modelfile = res.modelfile.read_text(encoding="utf-8")
    assert res.arch == "exaone" and 'PARAMETER stop "[|endofturn|]"' in modelfile and "[|assistant|]" in modelfile
    assert res.ollama_create == f"ollama create exaone-demo -f {res.modelfile}"


# --- slow, optional: the files in real llama.cpp (only where llama-cpp-python is installed; not in CI) ------
needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed (optional check)")


def llama_cpp_logits(path, ids: list[int]) -> tuple[np.ndarray, object]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, logits_all=True, verbose=False)
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)]), llm


@pytest.mark.slow
@needs_llama_cpp
def test_llama_cpp_reads_the_f16_file_like_transformers(offline_export, tokenizer):
    ex = offline_export
    for text in ex["texts"]:
        ids = tokenizer(text)["input_ids"]
        got, llm = llama_cpp_logits(ex["f16"].path, ids)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # same Korean tokens
        with torch.no_grad():
            ref = ex["merged"](torch.tensor([ids])).logits[0].numpy()
        # llama.cpp's own kernels (fp16 weights): measured max 0.097, mean 0.010, arg-max agreement 99.7%
        assert np.abs(got - ref).max() < 0.3 and (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.97


@pytest.mark.slow
@needs_llama_cpp
def test_llama_cpp_runs_the_exaone_file_without_the_llama_permutation(tmp_path, tokenizer):
    """The one independent check of the "exaone" layout: llama.cpp's logits match transformers' only
    when q/k are written unpermuted (measured max 0.16 vs 9.5 with the llama permutation)."""
    from transformers import AutoModelForCausalLM

    from workshop_utils.model.sources import exaone_config, exaone_like_tokenizer

    tok = exaone_like_tokenizer(copy.deepcopy(tokenizer))
    shape = {"layers": 2, "hidden": 256, "intermediate": 512, "heads": 4, "kv_heads": 2, "vocab": 49216}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(exaone_config(shape, pad_token_id=tok.pad_token_id,
                                                           eos_token_id=tok.eos_token_id), dtype=torch.float32)
    with torch.no_grad():  # weights large enough that attention is sharp, so the RoPE layout matters
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.1) if p.dim() == 1 else p.normal_(0.0, 0.25 if "q_proj" in name or "k_proj" in name else 0.08)
    model.eval()
    text = tok.apply_chat_template([{"role": "user", "content": KOREAN_QUESTIONS[0]}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    right = export.write_gguf(model, tok, tmp_path / "exaone.gguf", "f16", verbose=False)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.copy_(export.permute_qk(layer.self_attn.q_proj.weight, 4))
            layer.self_attn.k_proj.weight.copy_(export.permute_qk(layer.self_attn.k_proj.weight, 2))
    wrong = export.write_gguf(model, tok, tmp_path / "exaone-permuted.gguf", "f16", verbose=False)
    good, _ = llama_cpp_logits(right.path, ids)
    bad, _ = llama_cpp_logits(wrong.path, ids)
    assert np.abs(good - ref).max() < 0.5 and (good.argmax(-1) == ref.argmax(-1)).mean() >= 0.95
    assert np.abs(bad - ref).max() > 3.0 and (bad.argmax(-1) == ref.argmax(-1)).mean() < 0.5
