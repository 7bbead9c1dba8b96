#!/usr/bin/env bash
# NVIDIA DALI for the lent GPU machine, which has no DALI and no network, and takes at
# most 64 MiB of files per call: DALI's wheel alone is 199 MB.
#
#   bash tools/device_dali.sh pack       here: download DALI and the packages it needs
#                                        that the machine lacks (wheels for its Python),
#                                        as one tar cut into parts of PART_MIB under
#                                        build/dali_parts/p0, p1, ... (ignored by git)
#   bash tools/device_dali.sh install    there: join the parts, check the tar's sha256,
#                                        pip install the wheels into $DALI_SITE
#                                        (default /tmp/dali_site); exit 1 if incomplete
#
# The parts travel one per call of the device tool (carry: build/dali_parts/pN), on a
# machine kept warm between the calls, whose ignored files stay there: e.g. calls 1-4
# each carry one part and run `true`, and call 5 carries the last one and runs
# benchmarks/gpu_suite.sh, which runs `install` first when build/dali_parts exists and
# then has DALI's GPU test and loader row. The machine goes back after its idle time
# (30 s on the H200), which loses the parts: make the calls back to back.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=build/dali_parts
PART_MIB=${PART_MIB:-56}  # (the tree, about 2.3 MiB, travels with each part: 64 MiB a call in all)
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}
# DALI 2.4.0 for CUDA 13 and what it requires that the GPU machine's image lacks
# (device entry's KINDS.md: numpy, six, packaging, pyyaml, typing-extensions are there)
WHEELS=(
  nvidia-dali-cuda130==2.4.0
  nvidia-nvimgcodec-cu13==0.9.0.20
  nvidia-libnvcomp-cu13==5.3.0.16
  nvidia-nvjpeg==13.3.2.43
  nvidia-nvjpeg2k-cu13==0.11.0.51
  nvidia-nvtiff-cu13==0.8.0.82
  astunparse==1.6.3
  gast==0.7.0
  optree==0.20.0
  makefun==1.16.0
  libcst==1.9.0
  nvtx==0.2.17
)

pack() {
  local py=${PYTHON:-python3} work=build/dali_wheels
  rm -rf "$work" "$PARTS" && mkdir -p "$work" "$PARTS"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$work" "${WHEELS[@]}"
  tar -cf build/dali_wheels.tar -C "$work" . && rm -rf "$work"
  local sum
  sum=$(sha256sum build/dali_wheels.tar | cut -d' ' -f1)
  split -b "${PART_MIB}M" -d -a 1 build/dali_wheels.tar "$PARTS/chunk"
  local n i=0
  n=$(ls "$PARTS"/chunk* | wc -l)
  for f in "$PARTS"/chunk*; do  # each part a folder that carry names, with the whole's checksum and count
    mkdir -p "$PARTS/p$i"
    mv "$f" "$PARTS/p$i/chunk"
    echo "$sum $n" >"$PARTS/p$i/whole"
    i=$((i + 1))
  done
  rm -f build/dali_wheels.tar
  echo "$n parts of at most $PART_MIB MiB under $PARTS (wheels for Python $DEVICE_PYTHON):"
  du -sh "$PARTS"/p*
  echo "carry one per call, in order: $(cd "$PARTS" && ls -d p* | sed "s|^|$PARTS/|" | tr '\n' ' ')"
}

install() {
  local py=${PYTHON:-python3} site=${DALI_SITE:-/tmp/dali_site}
  [ -d "$PARTS" ] || { echo "no $PARTS here: nothing to install"; exit 1; }
  local sum n
  read -r sum n <"$(ls -d "$PARTS"/p*/whole | head -n 1)"
  local have
  have=$(ls -d "$PARTS"/p*/chunk 2>/dev/null | wc -l)
  if [ "$have" -ne "$n" ]; then
    echo "DALI: $have of $n parts here ($(cd "$PARTS" && ls -d p*/chunk | tr '\n' ' ')): not installed"
    exit 1
  fi
  local tarball=/tmp/dali_wheels.tar i
  : >"$tarball"
  for ((i = 0; i < n; i++)); do cat "$PARTS/p$i/chunk" >>"$tarball"; done
  if [ "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$sum" ]; then
    echo "DALI: the joined parts do not match the packed tar's sha256: not installed"
    exit 1
  fi
  rm -rf /tmp/dali_wheels && mkdir -p /tmp/dali_wheels && tar -xf "$tarball" -C /tmp/dali_wheels
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    /tmp/dali_wheels/*.whl
  # torch must still import beside it (the wheels add a package `nvidia` of their own)
  PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$py" -c \
    "import torch, nvidia.dali as d; print('DALI', d.__version__, 'installed in $site, beside torch', torch.__version__)"
}

case "${1:-}" in
  pack) pack ;;
  install) install ;;
  *) echo "usage: $0 pack|install" >&2; exit 2 ;;
esac
