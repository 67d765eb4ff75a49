#!/bin/sh
# t-demo.sh - examples/demo.sh (make demo) runs every step and shows
# each command before its output; examples/make-tiny-lora.sh makes the
# committed example adapter byte for byte.
. "$(dirname "$0")/lib.sh"

if sh "$TOP/examples/demo.sh" "$T/demo" > transcript 2>&1; then
	ok "demo.sh exits 0"
else
	notok "demo.sh exits 0 (exit $?)"; tail -5 transcript | sed 's/^/#   /'
fi

# The tools' commands, in the order the transcript shows them.
got=$(sed -n 's/^\$ \(nf4-quant\|lora-merge\|adapter-extract\|dq-inspect\) .*/\1/p' \
    transcript | tr '\n' ' ')
want="nf4-quant dq-inspect lora-merge adapter-extract dq-inspect lora-merge dq-inspect nf4-quant "
if [ "$got" = "$want" ]; then ok "every step's command is shown, in order"
else notok "every step's command is shown, in order (got: $got)"; fi

# output_of PATTERN: what the transcript shows after the first command
# that matches PATTERN, up to the next command.
output_of() {
	awk -v p="$1" '/^\$ / { if (on) exit; if ($0 ~ p) { on = 1; next } }
	    on' transcript
}
has() {
	if printf '%s\n' "$2" | grep -q -- "$3"; then ok "$1"; else
		notok "$1 (no '$3')"; printf '%s\n' "$2" | sed 's/^/#   /' | head -8
	fi
}

i=$(output_of '^\$ dq-inspect --compare examples/tiny-llama [^ ]*nf4 ')
has "inspect: bits per parameter" "$i" '^bits/param *[0-9.]* overall'
has "inspect: the DQ saving" "$i" '^DQ saving *0\.0[0-9]* bits/param'
has "inspect: the error of the NF4 weights" "$i" '^total *0\.00'
x=$(output_of '^\$ adapter-extract ')
has "extract: a line per module" "$x" 'layers\.1\.self_attn\.v_proj'
# snr DESC OUTPUT TEST: the SNR (dB) of the "total" line passes TEST.
snr() {
	if printf '%s\n' "$2" | awk "\$1 == \"total\" && \$4 $3 { f = 1 }
	    END { exit !f }"; then ok "$1"; else
		notok "$1"; printf '%s\n' "$2" | sed 's/^/#   /'
	fi
}
snr "compare: the adapter changes the model (SNR < 60 dB)" \
    "$(output_of '^\$ dq-inspect --compare examples/tiny-llama [^ ]*tuned ')" '< 60'
snr "compare: the extracted adapter merges to the same model (SNR > 60 dB)" \
    "$(output_of '^\$ dq-inspect --compare [^ ]*tuned ')" '> 60'
missing=
for f in tiny-llama-nf4/model.safetensors tiny-llama-tuned/model.safetensors \
    tiny-lora-2/adapter_model.safetensors tiny-llama-tuned-2/model.safetensors \
    tiny-llama-bf16/model.safetensors; do
	[ -f "$T/demo/$f" ] || missing="$missing $f"
done
[ -z "$missing" ] && ok "the demo writes every output" ||
    notok "the demo writes every output (missing:$missing)"
has "dequantize: the sizes" "$(output_of '^\$ du ')" \
    '^[0-9]*.*tiny-llama-bf16/model.safetensors$'

# The example adapter, made again by its recipe.
check "make-tiny-lora.sh runs" sh "$TOP/examples/make-tiny-lora.sh" "$T/lora"
same "make-tiny-lora.sh: the committed adapter_model.safetensors" \
    "$T/lora/adapter_model.safetensors" \
    "$TOP/examples/tiny-lora/adapter_model.safetensors"
same "make-tiny-lora.sh: the committed adapter_config.json" \
    "$T/lora/adapter_config.json" "$TOP/examples/tiny-lora/adapter_config.json"
check "the adapter is rank 4 on q_proj and v_proj" \
    grep -q '"r": 4' "$TOP/examples/tiny-lora/adapter_config.json"
