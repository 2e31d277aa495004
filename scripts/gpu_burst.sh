#!/usr/bin/env bash
# One prepared run on a lent CUDA machine (the `device` tool), then back to CPU training.
#
#   here:  python -m mediaserver.enhance.train --data ../shared/data --extra .data/extra16 \
#              --out /tmp/x --write-pack .gpu/pack --pack-mb 52
#          (and the wheels of soundfile, cffi, pycparser, webrtcvad-wheels for cp312 in .whl/)
#   there: bash scripts/gpu_burst.sh        (carry: .gpu, .whl, checkpoints/msenh-v3)
#
# 1. Trains the enhancer on CUDA in bf16 at a large batch from the carried checkpoint (if any),
#    mixing on the GPU from the pack, writing the resumable checkpoint to $OUT/ckpt every 60 s.
# 2. Measures CUDA batched inference at 1,024 / 4,096 / 16,384 streams with
#    `mediaserver bench enhancer --device cuda` into $OUT/enhancer_bench_cuda.json.
# Environment: TRAIN_MIN (default 5.5), BATCH (512), STREAMS (1024,4096,16384), SKIP_BENCH=1.
set -uo pipefail
export PYTHONUNBUFFERED=1
: "${OUT:?run this through the device tool (OUT must be set)}"
TRAIN_MIN=${TRAIN_MIN:-5.5}
BATCH=${BATCH:-512}
STREAMS=${STREAMS:-1024,4096,16384}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

mkdir -p "$OUT/ckpt" "$OUT/model"
# resume: a checkpoint an earlier burst returned (.gpu/resume), else the CPU run's
for ck in .gpu/resume/checkpoint.pt checkpoints/msenh-v3/checkpoint.pt; do
  [ -f "$ck" ] && { cp "$ck" "$OUT/ckpt/"; echo "resuming from $ck"; break; }
done
timeout $(python3 -c "print(int($TRAIN_MIN * 60 + 120))") \
  python3 -m mediaserver.enhance.train --pack .gpu/pack --device cuda --bf16 --batch "$BATCH" --lr 8e-4 \
    --out "$OUT/model" --ckpt-dir "$OUT/ckpt" --ckpt-every-s 60 --valid-every 200 --log-every 50 \
    --max-minutes "$TRAIN_MIN" 2>&1 | tee "$OUT/train.log"
nvidia-smi --query-gpu=memory.used --format=csv,noheader

[ "${SKIP_BENCH:-0}" = 1 ] && { ls -la "$OUT" "$OUT/ckpt"; exit 0; }
# Inference: a speech-with-pauses signal from the pack's validation clips.
python3 - <<'PY'
import json, numpy as np, soundfile as sf, os
from pathlib import Path
root = Path("/tmp/benchdata")
for bank, sub in (("speech", "speech/test"), ("noise", "noise/test")):
    audio, sr = sf.read(f".gpu/pack/valid/{bank}.flac", dtype="float32")
    lengths = json.loads(Path(f".gpu/pack/valid/{bank}.json").read_text())["lengths"]
    (root / sub).mkdir(parents=True, exist_ok=True)
    bounds = np.cumsum([0] + lengths)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        sf.write(root / sub / f"{bank}{i:03d}.wav", audio[a:b], sr)
PY
MODEL="$OUT/model"; [ -f "$MODEL/enhancer.pt" ] || MODEL=""
timeout 170 python3 -m mediaserver bench enhancer --device cuda --streams "$STREAMS" --seconds 3 \
  ${MODEL:+--model "$MODEL"} --data /tmp/benchdata --json "$OUT/enhancer_bench_cuda.json" 2>&1 | tail -40 | tee "$OUT/bench.log"
ls -la "$OUT" "$OUT/ckpt" "$OUT/model"
