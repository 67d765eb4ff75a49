#!/bin/sh
# adapter-extract end to end: extract from a model made by merging a
# committed adapter, merge the result back, compare; PEFT's layout;
# embeddings; -j; refusals that write nothing.
. "$(dirname "$0")/lib.sh"

L=$DATA/lora
B=$L/llama-f32

# norms FILE: "module norm" from a -v table on stderr.
norms() {
	awk '$1 ~ /^model\./ && NF == 5 { print $1, $5 }' "$1"
}

# close DESC DIFFTABLE DELTATABLE TOL: every module's |M - T| is at most
# TOL times its |T - B|.
close() {
	norms "$3" | sort > d.n
	norms "$2" | sort > e.n
	if join d.n e.n | awk -v tol="$4" '
	    { n++; if ($3 > tol * $2) bad++ }
	    END { exit !(n > 0 && bad == 0) }'; then ok "$1"
	else notok "$1"; join d.n e.n | head -5 | sed 's/^/#   /'; fi
}

# --- a tuned model from a rank-8 adapter on all seven projections -----
check "make a tuned model" "$MERGE" -o tuned "$B" "$L/pair/a"
check "extract -r 8" "$EXTRACT" -v -r 8 -o ad "$B" tuned
cp "$T/err" delta.v
[ -f ad/adapter_config.json ] && [ -f ad/adapter_model.safetensors ] &&
    ok "adapter directory written" || notok "adapter directory written"
"$STDUMP" ad > ad.lst
if [ "$(grep -c 'lora_A.weight F32 \[8,' ad.lst)" -eq 14 ] &&
    [ "$(grep -c 'lora_B.weight F32 \[[0-9]*,8\]' ad.lst)" -eq 14 ] &&
    grep -q '^base_model.model.model.layers.0.mlp.down_proj.lora_A.weight F32 \[8,172\]' ad.lst &&
    grep -q '^base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight F32 \[32,8\]' ad.lst
then ok "PEFT key names and shapes"; else notok "PEFT key names and shapes"; fi
for k in '"peft_type": "LORA"' '"r": 8' '"lora_alpha": 8' \
    '"task_type": "CAUSAL_LM"' '"q_proj"' '"down_proj"' \
    '"use_rslora": false' '"fan_in_fan_out": false'; do
	if grep -qF "$k" ad/adapter_config.json; then ok "config has $k"
	else notok "config has $k"; fi
done
check "merge the extracted adapter back" "$MERGE" -o back "$B" ad
check "difference to the tuned model" "$EXTRACT" -v -r 1 -o diff tuned back
cp "$T/err" diff.v
close "merge back reproduces the tuned weights (1e-5)" diff.v delta.v 1e-5

# --- exact SVD gives the same model; -j does not change the bytes --------
check "--exact" "$EXTRACT" --exact -v -r 8 -o adx "$B" tuned
check "merge the exact adapter back" "$MERGE" -o backx "$B" adx
check "difference (exact)" "$EXTRACT" -v -r 1 -o diffx tuned backx
cp "$T/err" diffx.v
close "exact: merge back reproduces the tuned weights" diffx.v delta.v 1e-5
for j in 1 2 8; do
	check "-j $j" "$EXTRACT" -j $j -r 8 -o j$j "$B" tuned
done
for j in 2 8; do
	same "same adapter with -j 1 and -j $j" j1/adapter_model.safetensors \
	    j$j/adapter_model.safetensors
	same "same config with -j 1 and -j $j" j1/adapter_config.json \
	    j$j/adapter_config.json
done
check "--seed changes nothing structural" "$EXTRACT" --seed 7 -r 8 -o s7 \
    "$B" tuned
same "--seed: same config" j1/adapter_config.json s7/adapter_config.json

# --- --alpha: scale alpha/r folded into lora_B ---------------------------
check "--alpha 16" "$EXTRACT" --alpha 16 -r 8 -o a16 "$B" tuned
grep -qF '"lora_alpha": 16' a16/adapter_config.json &&
    ok "lora_alpha 16 written" || notok "lora_alpha 16 written"
check "merge the alpha-16 adapter back" "$MERGE" -o backa "$B" a16
check "difference (alpha 16)" "$EXTRACT" -v -r 1 -o diffa tuned backa
cp "$T/err" diffa.v
close "alpha 16: merge back reproduces the tuned weights" diffa.v delta.v 1e-5

# --- energy: per-module ranks in rank_pattern / alpha_pattern ------------
check "--energy 0.999 --max-rank 16" "$EXTRACT" -v --energy 0.999 \
    --max-rank 16 -o ae "$B" tuned
grep -qF '"r": 8' ae/adapter_config.json &&
    ok "energy: rank 8 found" || notok "energy: rank 8 found"
check "--target q_proj --energy 0.5" "$EXTRACT" --target q_proj \
    --energy 0.5 -o ah "$B" tuned
"$STDUMP" ah > ah.lst
if [ "$(wc -l < ah.lst)" -eq 4 ] && ! grep -q k_proj ah.lst; then
	ok "--target selects q_proj only"
else notok "--target selects q_proj only"; fi
check "merge the energy adapter back" "$MERGE" -o backh "$B" ah
check "--exclude down_proj" "$EXTRACT" --exclude down_proj -r 8 -o ax \
    "$B" tuned
"$STDUMP" ax > ax.lst
! grep -q down_proj ax.lst && [ "$(wc -l < ax.lst)" -eq 24 ] &&
    ok "--exclude drops down_proj" || notok "--exclude drops down_proj"

# --- embeddings --------------------------------------------------------
check "make a tuned model with an embedding LoRA" "$MERGE" -o tunede "$B" \
    "$L/embed-f32"
check "default: embedding left out" "$EXTRACT" -r 4 -o ade "$B" tunede
grep_err "says the embedding was not extracted" "model.embed_tokens.weight"
[ "$(grep -c 'not extracted' "$T/err")" -eq 1 ] &&
    [ "$(grep -c embed_tokens "$T/err")" -eq 1 ] && ok "one line about it" ||
    notok "one line about it"
check "--target embed_tokens" "$EXTRACT" -v -r 4 --target embed_tokens \
    --target q_proj -o ade2 "$B" tunede
cp "$T/err" deltae.v
"$STDUMP" ade2 > ade2.lst
grep -q '^base_model.model.model.embed_tokens.lora_embedding_A F32 \[4,320\]' \
    ade2.lst && grep -q \
    '^base_model.model.model.embed_tokens.lora_embedding_B F32 \[64,4\]' \
    ade2.lst && ok "embedding keys and shapes" ||
    notok "embedding keys and shapes"
check "merge the embedding adapter back" "$MERGE" -o backe "$B" ade2
check "difference (embedding)" "$EXTRACT" -v -r 1 --target embed_tokens \
    --target q_proj -o diffe tunede backe
cp "$T/err" diffe.v
close "embedding: merge back reproduces the tuned weights" diffe.v \
    deltae.v 1e-5

# --- refusals: exit 1, one line, nothing written -----------------------
mkst one.safetensors '{"lm_head.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}' 16
mkst wide.safetensors '{"lm_head.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}' 24
fails "missing tensors" 1 "$EXTRACT" -r 2 -o bad1 one.safetensors tuned
absent "nothing written (missing tensors)" bad1
grep_err "names the tensor" "tensor model\."
fails "shape mismatch" 1 "$EXTRACT" -r 2 -o bad2 one.safetensors \
    wide.safetensors
grep_err "names the mismatched tensor" "lm_head.weight"
absent "nothing written (shape)" bad2
mkdir a1 a2
cp one.safetensors a1/model.safetensors
cp one.safetensors a2/model.safetensors
echo '{"model_type": "llama"}' > a1/config.json
echo '{"model_type": "mistral"}' > a2/config.json
fails "different architectures" 1 "$EXTRACT" -r 2 -o bad3 a1 a2
absent "nothing written (architecture)" bad3
fails "no difference" 1 "$EXTRACT" -r 2 -o bad4 "$B" "$B"
absent "nothing written (no difference)" bad4
fails "output exists" 1 "$EXTRACT" -r 8 -o ad "$B" tuned
check "-f replaces it" "$EXTRACT" -f -r 8 -o ad "$B" tuned

# --- usage -------------------------------------------------------------
usage_fails "no arguments" "$EXTRACT"
usage_fails "no output" "$EXTRACT" -r 8 "$B" tuned
usage_fails "-r with --energy" "$EXTRACT" -r 8 --energy 0.9 -o x "$B" tuned
usage_fails "bad rank" "$EXTRACT" -r 0 -o x "$B" tuned
usage_fails "bad energy" "$EXTRACT" --energy 1.5 -o x "$B" tuned
usage_fails "unknown option" "$EXTRACT" --bogus -o x "$B" tuned
check "--help" "$EXTRACT" --help
