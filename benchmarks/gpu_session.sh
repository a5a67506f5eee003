#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (about 10 minutes on an H200), with that machine's own Python and
# torch (it reaches no package registry): the GPU tests, then the image benchmark — studio vs bare diffusers at
# SD 1.5 scale, and the UNet step eager vs the compiled path (channels-last, fused QKV, SDPA, torch.compile).
#     run: bash benchmarks/gpu_session.sh        results: $OUT (or benchmarks/results/ without $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GENAI_STUDIO_CACHE=/tmp/genai-studio-cache
out="${OUT:-benchmarks/results}"
python3 - <<'PY'
from pathlib import Path
from tests.gpu.test_cuda import sd15_architecture
folder = Path("/tmp/sd15-random")
if not (folder / "model_index.json").exists():
    sd15_architecture(Path("/tmp/sd15-build")).save_pretrained(folder)
PY
timeout 300 python3 -m pytest tests/gpu -m gpu -s -q -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log"
timeout 240 python3 benchmarks/image.py --model /tmp/sd15-random --size 512 --steps 20 --batch 1 --reps 3 \
  --unet-512 --compile 2>&1 | tee "$out/gpu-image.log"
cp benchmarks/results/image-*.md "$out/" 2>/dev/null || true
# Today's transformer families: one real-size random-weight Flux.1 / Z-Image step under each memory profile the
# plan picks for 80/24/16/12/8 GB cards (imitated by capping this process's share of the GPU): time and peak memory
timeout 420 python3 benchmarks/flow_memory.py --model both --size 1024 --reps 2 2>&1 | tee "$out/gpu-flow-memory.log"
cp benchmarks/results/flow-memory-*.md "$out/" 2>/dev/null || true
