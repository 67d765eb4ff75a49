#!/bin/sh
# demo.sh: quantize the small example model that ships with peftio to NF4
# with double quantization, dequantize it back, and show what it saved.
set -eu
cd "$(dirname "$0")/.."

in=examples/tiny-llama
out=demo-out
mkdir -p "$out"
echo "== nf4-quant -v -f -o $out/tiny-llama-nf4 $in"
tools/nf4-quant/nf4-quant -v -f -o "$out/tiny-llama-nf4" "$in"
echo "== nf4-quant -d -f -o $out/tiny-llama-bf16 $out/tiny-llama-nf4"
tools/nf4-quant/nf4-quant -f -d -o "$out/tiny-llama-bf16" "$out/tiny-llama-nf4"
echo "== sizes"
ls -l "$in/model.safetensors" "$out/tiny-llama-nf4/model.safetensors" \
    "$out/tiny-llama-bf16/model.safetensors" | awk '{ print $5, $9 }'
echo "== quantization_config written to $out/tiny-llama-nf4/config.json"
sed -n '/quantization_config/,/}/p' "$out/tiny-llama-nf4/config.json"
