#!/usr/bin/env bash
# Issue 14's device benchmark, one prepared run on a lent CUDA machine (16 cores, one H200):
# publishers sustained by `serve --workers 8 --enhancer-device cuda` against `--workers 1`
# (same device, same pinning), with the shared enhancer's batch and step time per tick.
#
#   here (once):  wheels the device's Python lacks, for cp312, into .whl/ (45 MiB; av is 35):
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl aiortc==1.16.0 aioice==0.13.0 av==18.1.0 \
#       pyee==13.0.1 pylibsrtp==1.0.0 cryptography==50.0.2 pyOpenSSL==26.4.0 google-crc32c==1.9.0 \
#       dnspython==2.9.2 ifaddr==0.2.0 soundfile==0.14.0 cffi==2.0.0 pycparser==3.0 \
#       webrtcvad-wheels opuslib-next-bundled==0.1.1 redis==8.1.0
#     and the speech clip (the device has no espeak-ng), 2.5 MiB, git-ignored:
#     echo /.gpu_sfu/ >> .git/info/exclude; mkdir -p .gpu_sfu; python -c "import sys;
#       sys.path.insert(0,'benchmarks'); from pathlib import Path; import soundfile as sf;
#       from sfu import speech_clip; from mediaserver.audio import resample;
#       c=speech_clip(None,80,Path('/tmp')); sf.write('.gpu_sfu/clip.wav',resample(c,48000,16000),16000)"
#   there:  run  command: bash scripts/gpu_workers.sh   carry: [".whl", ".gpu_sfu"]   timeout_s: 540
#     (.whl must hold only these wheels plus gpu_burst.sh's: one version of each; the working
#     tree + carry must stay under 64 MiB)
#
# Server (front, workers, inference process) pinned to cores 0-7; this benchmark and its
# SHARDS load-generator processes (whole rooms each) to 8-15. For each --workers value the
# publishers step up (STEPS1 / STEPS8) until a case is not sustained (< 1 % late or missing
# frames and server-added delay p95 <= 60 ms); the JSON's find_max holds the largest sustained
# N per workers value, the ratio, and the enhancer's batch/step at that N.
# Time: ~20 s once (pip, clip, the direct link), then a case is ~(server start ~8 s + joins
# + WARMUP + SECS + analysis/stop ~5 s): ~25 s at 64 publishers, ~40-50 s at 384 (est., CPU
# runs here: 18 s at 8 publishers with SECS=3 WARMUP=2; 16 publishers joined in 3.3 s over
# 2 shards, 30 s a case with WARMUP=5 SECS=6, on a loaded 2-core machine). No case starts after BUDGET s
# or when the previous case's wall time would overrun it; the JSON is rewritten after every
# case, so a cut-off run still returns what it measured.
# Environment: SECS (8), WARMUP (4), BUDGET (400), SHARDS (8), STEPS1, STEPS8.
set -uo pipefail
export PYTHONUNBUFFERED=1
: "${OUT:?run this through the device tool (OUT must be set)}"
SECS=${SECS:-8}
WARMUP=${WARMUP:-4}
BUDGET=${BUDGET:-400}
SHARDS=${SHARDS:-8}
STEPS1=${STEPS1:-16,32,48,64,96,128}
STEPS8=${STEPS8:-96,192,256,320,384,448,512}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true
echo "open files: $(ulimit -n); cores: $(nproc)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, aiortc, av, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'aiortc', aiortc.__version__, 'av', av.__version__)" || exit 1

timeout $((BUDGET + 100)) python3 benchmarks/sfu.py --find-max --forwarders enhance \
  --workers 1,8 --steps "1:$STEPS1" --steps "8:$STEPS8" --room-size 4 \
  --generators "$SHARDS" --server-cores 0-7 --generator-cores 8-15 --enhancer-device cuda \
  --seconds "$SECS" --warmup "$WARMUP" --budget-s "$BUDGET" --data .gpu_sfu \
  --out "$OUT/sfu_gpu_workers.json" 2>&1 | tee "$OUT/sfu_gpu_workers.log"
# the last cases' server logs (a failing case's reason)
for f in $(ls -t benchmarks/results/tmp/server-*.log 2>/dev/null | head -3); do
  tail -c 200000 "$f" > "$OUT/$(basename "$f")"
done
ls -la "$OUT"
