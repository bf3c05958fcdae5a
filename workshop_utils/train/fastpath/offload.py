"""VocabOffload: the embedding and lm_head in pinned CPU memory while not in use."""
from __future__ import annotations

import torch

from ...model.lora import base_model


# --- vocabulary weights off the GPU between uses ---------------------------------------------------------
class VocabOffload:
    """Keep the frozen input embedding and lm_head in pinned CPU memory while training.

    The embedding rows of a micro-batch are gathered on the CPU (the table never goes to the GPU); the
    lm_head weight is copied to the GPU when the decoder starts its forward (the copy runs while the
    layers compute) and dropped when the model's forward returns, after Liger's fused loss -- which
    keeps no reference to it for backward. During backward, where a checkpointed step peaks, neither
    is on the GPU: for EXAONE's 102,400 x 4,096 vocabulary that is 2 x 0.78 GiB, room for a bigger
    micro-batch on a small card. Single process only (DDP/FSDP broadcast and shard GPU parameters).
    Used as a context manager around `trainer.train()`; `restore()` puts both back.
    """

    def __init__(self, model):
        self.base = base_model(model)
        self.emb = self.base.get_input_embeddings()
        self.head = self.base.get_output_embeddings()
        if self.head is None or self.head.weight is self.emb.weight:
            raise ValueError("VocabOffload: 임베딩과 lm_head를 공유하는(tied) 모델에는 쓰지 않습니다")
        self.device = self.emb.weight.device
        self.handles: list = []
        self.cpu_emb = self.cpu_head = None

    def __enter__(self):
        return self.offload()

    def __exit__(self, *exc):
        self.restore()

    def offload(self) -> "VocabOffload":
        if self.handles:
            return self
        pin = self.device.type == "cuda"
        self.cpu_emb, self.cpu_head = ((w.pin_memory() if pin else w) for w in
                                       (m.weight.data.to("cpu") for m in (self.emb, self.head)))
        # the parameters keep an empty GPU placeholder: whatever moves the model between devices
        # (accelerate's preparation does) cannot bring the tables back
        for m in (self.emb, self.head):
            m.weight.data = torch.empty(0, dtype=m.weight.dtype, device=self.device)
        emb, table = self.emb, self.cpu_emb

        def embed(input_ids):
            rows = torch.nn.functional.embedding(input_ids.to("cpu"), table, emb.padding_idx)
            return rows.to(input_ids.device)

        emb.forward = embed
        self.handles = [self.base.model.register_forward_pre_hook(self._head_in),
                        self.base.register_forward_hook(self._head_out)]
        if pin:
            torch.cuda.empty_cache()
        return self

    def _head_in(self, module, args):
        self.head.weight.data = self.cpu_head.to(self.device, non_blocking=True)

    def _head_out(self, module, args, output):
        self.head.weight.data = torch.empty(0, dtype=self.cpu_head.dtype, device=self.device)

    def restore(self) -> None:
        if not self.handles:
            return
        for h in self.handles:
            h.remove()
        self.handles = []
        del self.emb.forward
        self.emb.weight.data = self.cpu_emb.to(self.device)
        self.head.weight.data = self.cpu_head.to(self.device)
        self.cpu_emb = self.cpu_head = None
