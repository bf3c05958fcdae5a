"""The GPU fast path for QLoRA training: the same training, less memory, more tokens per second.

What the seed's recipe does on a GPU, and what the fast path changes (each part switchable in
`TrainSettings`; `workshop bench` measures each, see docs/benchmarks.md):

- padded batches (up to 25% of the tokens are padding with RAFT's uneven lengths)
  -> padding-free batches: the micro-batch's sequences concatenated into one row, `position_ids`
     restarting at 0 for each; attention stays inside each sequence (transformers detects the packed
     format from the position ids), the prompt is masked as before.
- logits and fp32 cross-entropy over all positions of a 102,400-token vocabulary (~1.7 GB per 4k tokens)
  -> completion-only: logits only where an answer token follows, and with Liger's fused linear
     cross-entropy the logits are never materialized at all.
- eager rope / RMSNorm / SwiGLU -> Liger's Triton kernels, applied to the model instance
  (`apply_liger_kernel_to_llama(model=...)`): Liger picks kernels by `model_type` and does not know
  'exaone', but transformers 5 runs EXAONE with the Llama classes, so the Llama kernels fit.
- attention over the packed row: `workshop_varlen`, torch's variable-length flash attention
  (`torch.nn.attention.varlen`, torch >= 2.10, compute capability >= 8.0) registered as a transformers
  attention function: each sequence attends only to itself, so the cost grows with the sum of the
  squared sequence lengths, not with the square of the row (sdpa over a packed row computes the whole
  row x row score matrix and masks most of it away: at 8 sequences of ~1,060 tokens that is 8x the
  attention work). Where the kernel is missing (T4, older torch) sdpa with transformers'
  block-diagonal mask. flex_attention is opt-in via `model.attn_implementation`; each new packed
  length recompiles it, and on an H200 its warm-up did not finish in 10 minutes (docs/benchmarks.md).
- gradient checkpointing on or off -> decided from the memory budget: off when the card has room, on
  when it does not, and in between only the first N layers recompute their activations.
- peft's fp32 upcast of embeddings and lm_head (+1.7 GB for EXAONE) -> kept in the compute dtype,
  and on a tight budget kept in CPU memory while not in use (VocabOffload: 2 x 0.78 GiB for EXAONE),
  which lets the micro-batch grow.
- checkpointed layers keep their inputs on the GPU (one hidden state per layer: 2.2 GiB for EXAONE at 8
  sequences) -> on a tight budget in pinned CPU memory (ActivationOffload), copied out and back on a side
  stream behind the compute; the micro-batch grows again (8 instead of 4 within 8 GiB).
- 16 GB mode (T4 class): fp16 with loss scaling, sdpa, every layer checkpointed, fused loss.
- opt-in (`train.fp8_backward: on`): the backward's product through each frozen 4-bit weight (dx = dy W) on FP8
  tensor cores (fp8.py): the forward and the loss stay as they are, the gradients differ by FP8's rounding.

Numerically it is the same training: tests/test_fastpath.py compares loss and LoRA gradients of the
fast and the plain path on CPU (FP8 input gradients, when turned on, are compared as close, not equal:
tests/test_fp8_backward.py).
"""
