#!/bin/sh
# make-tiny-lora.sh: make examples/tiny-lora, the LoRA adapter of the demo,
# with the tools themselves.
#
#   sh examples/make-tiny-lora.sh [adapter_dir]   (default examples/tiny-lora)
#
# The adapter stands for a small fine-tuning of examples/tiny-llama: rank
# 4 on q_proj and v_proj, whose delta (lora_B lora_A alpha/r) is a tenth
# of the rank-4 truncated SVD of each of those weights, so that it makes
# their four largest singular values 10% larger.  It is made in three
# steps, in a temporary directory:
#
#   1. adapter-extract --init pissa -r 4: those four directions (the
#      principal singular vectors) as a PiSSA adapter;
#   2. lora-merge -w 0.1: tiny-llama with a tenth of that adapter added,
#      in bf16 like tiny-llama: the "fine-tuned" model;
#   3. adapter-extract -r 4: the LoRA adapter of the difference.
#
# Every step is deterministic (the randomized SVD has a fixed seed, and
# the result does not depend on -j), so the adapter comes out byte for
# byte as committed; tests/cli/t-demo.sh checks that.
set -eu
cd "$(dirname "$0")/.."
out=${1:-examples/tiny-lora}
model=examples/tiny-llama
bin=$(pwd)/tools

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tiny-lora.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

"$bin/adapter-extract/adapter-extract" -q --init pissa -r 4 \
    --target q_proj --target v_proj -o "$tmp/pissa" \
    --residual "$tmp/residual" "$model"
"$bin/lora-merge/lora-merge" -q -w 0.1 -o "$tmp/tuned" "$model" "$tmp/pissa"
"$bin/adapter-extract/adapter-extract" -q -f -r 4 \
    --target q_proj --target v_proj -o "$out" "$model" "$tmp/tuned"
