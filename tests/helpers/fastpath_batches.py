"""Shared by the compiled-layer, activation-offload and FP8 tests: a small EXAONE-shaped 4-bit LoRA model on the fast
path, packed random sequences, one training step, and the CPU's layer compiler."""
import contextlib

import torch

from workshop_utils.config import LoraSettings, ModelSettings
from workshop_utils.data.prompts import IGNORE_INDEX
from workshop_utils.train.fastpath import compile as fastpath_compile
from workshop_utils.train.fastpath.apply import prepare_fast_model
from workshop_utils.train.fastpath.plan import FastPlan
from workshop_utils.train.loss import fast_completion_loss

TINY = "random:exaone:layers=3,hidden=64,intermediate=128,heads=4,kv_heads=2"


def lora_model(compile_layers: bool, checkpoint_layers: int, attention: str, dropout: float = 0.0,
               offload_activations: bool = False, fp8_backward: bool = False, hash_dropout: bool = False):
    """(model, plan, tokenizer): TINY in fp32 with LoRA through prepare_fast_model, every lora_B non-zero (so that
    every LoRA matrix gets a gradient), in training mode."""
    from workshop_utils.model.load import load_model

    loaded = load_model(ModelSettings(model_id=TINY, compute_dtype="float32"), verbose=False)
    torch.manual_seed(0)
    plan = FastPlan(True, mode="budget", padding_free=True, attention=attention, num_layers=3,
                    checkpoint_layers=checkpoint_layers, upcast_non_4bit=False, compile_layers=compile_layers,
                    offload_activations=offload_activations, fp8_backward=fp8_backward,
                    hash_dropout=hash_dropout)
    model, _ = prepare_fast_model(loaded.model, plan, LoraSettings(lora_dropout=dropout))
    g = torch.Generator().manual_seed(2)
    for n, p in sorted(model.named_parameters()):
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.05
    model.train()
    return model, plan, loaded.tokenizer


def features(lens, seed=1):
    """Random sequences of the given lengths, the last quarter of each labelled (the answer)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lens:
        ids = torch.randint(10, 40000, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n - n // 4) + ids[n - n // 4:]})
    return out


def loss_and_grads(model, batch, seed=0):
    """One forward + backward of the fast path's loss: (loss, LoRA gradients)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, _ = fast_completion_loss(model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def cpu_layer_compiler(monkeypatch):
    """Compiled layers on CPU through aot_eager (the same capture and autograd as inductor, no C++ code generation),
    dynamo reset before and after (each test counts its own graphs), and compile errors raised: a passed check sets
    suppress_errors for the training, other tests get it back as it was."""
    import torch._dynamo

    monkeypatch.setattr(fastpath_compile, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    with torch._dynamo.config.patch(suppress_errors=False):
        yield
    torch._dynamo.reset()
