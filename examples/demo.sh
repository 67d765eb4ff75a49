#!/bin/sh
# demo.sh: the four tools on the small example model, as a transcript in
# which every command is shown ("$ ...") before what it prints:
#
#   quantize     nf4-quant: examples/tiny-llama to NF4, double-quantized
#   inspect      dq-inspect: bits per parameter, DQ saving, error
#   merge        lora-merge: the example adapter examples/tiny-lora
#   extract      adapter-extract: the adapter back from the merged model
#   compare      dq-inspect --compare: what the adapter changed, and the
#                model merged again from the extracted adapter
#   dequantize   nf4-quant -d: the NF4 model back to bf16
#
#   sh examples/demo.sh [outdir]   (default demo-out)
#
# Run from the top of the source tree with the tools built there ("make
# demo" does both).  Exits non-zero when a step fails.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
for t in nf4-quant lora-merge adapter-extract dq-inspect; do
	PATH=$top/tools/$t:$PATH
done
export PATH
out=${1:-demo-out}
mkdir -p "$out"

# note TEXT: a comment line of the transcript, after a blank line.
note() {
	printf '\n# %s\n' "$*"
}

# step COMMAND: show COMMAND as typed at a prompt, then run it; what it
# writes on standard error joins the transcript.
step() {
	printf '$ %s\n' "$1"
	eval "$1" 2>&1
}

m=examples/tiny-llama
a=examples/tiny-lora
echo "# peftio demo on $m: a two-layer Llama of 494,208 parameters in bf16"

note "Quantize to NF4 with double quantization, as QLoRA stores its base model"
step "nf4-quant -f -o $out/tiny-llama-nf4 $m"
step "grep -E 'quant_type|double_quant|quant_method' $out/tiny-llama-nf4/config.json"

note "Inspect: bits per parameter, the saving of double quantization, the error"
step "dq-inspect --compare $m $out/tiny-llama-nf4 | grep -E 'bits/param|saved|RMSE|^total'"

note "Merge the example adapter (LoRA rank 4 on q_proj and v_proj), in f32"
step "lora-merge -f --dtype f32 -o $out/tiny-llama-tuned $m $a"

note "Extract it back: the rank-4 SVD of what the merge changed"
step "adapter-extract -v -f -r 4 --target q_proj --target v_proj -o $out/tiny-lora-2 $m $out/tiny-llama-tuned"

note "Compare: what the adapter changed in the model,"
step "dq-inspect --compare $m $out/tiny-llama-tuned | grep -E 'RMSE|^total'"
echo "# and how far from it a merge of the extracted adapter is"
step "lora-merge -f --dtype f32 -o $out/tiny-llama-tuned-2 $m $out/tiny-lora-2"
step "dq-inspect --compare $out/tiny-llama-tuned $out/tiny-llama-tuned-2 | grep -E 'RMSE|^total'"

note "Dequantize the NF4 model back to bf16"
step "nf4-quant -d -f -o $out/tiny-llama-bf16 $out/tiny-llama-nf4"
step "du -b $m/model.safetensors $out/tiny-llama-nf4/model.safetensors $out/tiny-llama-bf16/model.safetensors"
