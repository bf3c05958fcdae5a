#!/bin/bash
# The compiled decoder layers and the varlen attention kernels, checked and measured in ONE GPU call.
#
# Here, once, from the project root (after `make install`, so that the offline tokenizer is converted;
# PYTHON=.venv/bin/python if the system python3 has no pip):
#   scripts/gpu_perf.sh build     # writes ./.gpu (~25 MB, ignored by git): the wheels the GPU image lacks
#                                 # (transformers 5.24 for the exaone type, peft, liger-kernel, datasets),
#                                 # bitsandbytes trimmed to its CUDA 13.0 library, the tokenizer
# Device call (nvidia-h200), carry [".gpu"] (and ".peer" from ../shared/tools/peer/build.sh for PEER=...):
#   bash scripts/gpu_perf.sh
# Environment (all optional):
#   RECIPES   workshop bench recipes in priority order (those that would end past the budget are skipped)
#   PEER      peer kit variants run in the same call, e.g. "uns+flat uns+flat+fp16 uns+flat+nogc+bs16 gc"
#   PEER_GPU  run the peer kit at the same time on this GPU (nvidia-h200-x2: 1) instead of after the recipes
#   BUDGET_S  seconds for everything (default 470: an 8-minute call with room for the start)
#   CHECKS    0 skips the kernel and small-model checks (scripts/gpu_perf.py --no-checks)
# What comes back ($OUT): gpu_perf.log, bench.json, checks.json; the last thing printed is the table.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ "${1:-}" = build ]; then
  set -e
  exclude=$(git rev-parse --git-path info/exclude)
  grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
  rm -rf .gpu && mkdir -p .gpu/whl .gpu/site .gpu/tok /tmp/gpu_perf_dl
  P="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any"
  # versions as constraints.txt pins them; the image has torch 2.11 (cu130), triton, accelerate, tokenizers, pyarrow
  ${PYTHON:-python3} -m pip download -q --no-deps $P -d /tmp/gpu_perf_dl transformers==5.24.0 peft==0.21.2 \
    liger-kernel==0.8.5 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 bitsandbytes==0.50.2
  for w in /tmp/gpu_perf_dl/*.whl; do
    case $(basename "$w") in
      bitsandbytes-*) unzip -q -o "$w" -d .gpu/site
                      find .gpu/site/bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*cuda130*' -delete ;;
      *) cp "$w" .gpu/whl/ ;;
    esac
  done
  tok=$(ls -d "${WORKSHOP_CACHE:-$HOME/.cache/qlora-raft-workshop}"/smollm2-* 2>/dev/null | head -1)
  [ -n "$tok" ] || { echo "변환된 오프라인 모델이 없습니다: make install 뒤 workshop check를 한 번 실행하세요"; exit 1; }
  cp "$tok"/tokenizer* "$tok"/special_tokens_map.json "$tok"/chat_template.jinja .gpu/tok/ 2>/dev/null || true
  du -sh .gpu
  exit 0
fi
[ -d .gpu/whl ] || { echo ".gpu 없음: 이 기계에서 scripts/gpu_perf.sh build 를 먼저 실행하고 carry에 .gpu를 넣으세요"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_perf_site .gpu/whl/*.whl || exit 1
export PYTHONPATH="$root:/tmp/gpu_perf_site:$root/.gpu/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false WORKSHOP_TOKENIZER="$root/.gpu/tok"
out=${OUT:-build/gpu_perf}
mkdir -p "$out"
args=(--out "$out" --work build/gpu_perf --budget "${BUDGET_S:-470}")  # $OUT gets 3 files, not the per-recipe JSONs
[ -n "${RECIPES:-}" ] && args+=(--recipes $RECIPES)
[ -n "${PEER:-}" ] && args+=(--peer $PEER)
[ -n "${PEER_GPU:-}" ] && args+=(--peer-gpu "$PEER_GPU")
[ "${CHECKS:-1}" = 0 ] && args+=(--no-checks)
set -o pipefail
python3 scripts/gpu_perf.py "${args[@]}" 2>&1 | tee "$out/gpu_perf.log"
