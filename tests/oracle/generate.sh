#!/bin/sh
# Write, with this tree's tools, every output that check.py loads into the
# reference libraries.  Usage, from the project root after `make`:
#   tests/oracle/generate.sh [FIXTURES [OUTDIR]]
# FIXTURES defaults to ../shared/fixtures, OUTDIR to tests/oracle/out.
set -eu
F=${1:-../shared/fixtures}
O=${2:-tests/oracle/out}
T=tools
rm -rf "$O"
mkdir -p "$O"

q() { "$T/nf4-quant/nf4-quant" -q "$@"; }
x() { "$T/adapter-extract/adapter-extract" -q "$@"; }
m() { "$T/lora-merge/lora-merge" -q "$@"; }

# 1, 2: bitsandbytes forms of a bf16 Llama, and the dequantized model
B=$F/bnb/llama-bf16
cp "$F/bnb/logits.safetensors" "$O/logits.safetensors"
cp -r "$B" "$O/base-bf16"
q -o "$O/q-nf4-dq1" "$B"
q --no-double-quant -o "$O/q-nf4-dq0" "$B"
q -t fp4 --no-double-quant -o "$O/q-fp4-dq0" "$B"
q -t int8 -o "$O/q-int8" "$B"
q --storage bf16 -o "$O/q-nf4-dq1-bf16" "$B"
q -d -o "$O/dq-nf4-dq1" "$O/q-nf4-dq1"

# 3: initialisations that change the base
P=$F/peft-init/llama-f32
mkdir -p "$O/init"
cp -r "$P" "$O/init/base"
for i in pissa olora; do
	x --init $i -r 8 -o "$O/init/$i-adapter" --residual "$O/init/$i-residual" "$P"
done
x --init loftq --loftq-iter 1 -r 8 -o "$O/init/loftq-adapter" \
    --residual "$O/init/loftq-residual" "$P"
x --init loftq --loftq-iter 1 --no-double-quant -r 8 \
    -o "$O/init/loftq0-adapter" --residual "$O/init/loftq0-residual" "$P"
cp -r "$F/peft-init/loftq-4b-1i" "$O/init/peft-loftq"

# 4: an extracted adapter and its merge
L=$F/peft
mkdir -p "$O/extract"
cp -r "$L/llama-f32" "$O/extract/base"
x -r 8 -o "$O/extract/adapter" "$L/llama-f32" "$L/tuned-lowrank-f32"
m -o "$O/extract/merged" "$L/llama-f32" "$O/extract/adapter"

# 5: merges of the other tuner types
U=$F/peft-tuners
mkdir -p "$O/tuners"
cp -r "$U/llama-f32" "$O/tuners/base"
for k in loha lokr oft; do
	cp -r "$U/tuner-$k" "$O/tuners/$k"
	m -o "$O/tuners/merged-$k" "$U/llama-f32" "$U/tuner-$k"
done
