#!/bin/sh
# dq-inspect: PEFT's trainable-parameter lines from a Llama-2-7b-shaped
# header, bits per parameter of NF4 with and without double quantization,
# --compare against an independent computation, --verify, several
# checkpoints, sharded and adapter directories, JSON and YAML.
. "$(dirname "$0")/lib.sh"

# val FILE ANCHOR KEY: the value of the first "KEY" (JSON or YAML) after
# the first line containing ANCHOR.
val() {
	awk -v a="$2" -v k="$3" '
	    !seen && index($0, a) { seen = 1 }
	    seen {
		line = $0
		if (match(line, "\"?" k "\"?: ")) {
			v = substr(line, RSTART + RLENGTH)
			sub(/,$/, "", v); gsub(/"/, "", v)
			print v; exit
		}
	    }' "$1"
}

# near DESC GOT WANT TOL: |GOT - WANT| <= TOL
near() {
	if awk -v g="$2" -v w="$3" -v t="$4" 'BEGIN {
	    d = g - w; if (d < 0) d = -d; exit !(g != "" && d <= t) }'; then
		ok "$1"
	else
		notok "$1 (got '$2', want $3 +- $4)"
	fi
}

# llama NAME H I L V: a safetensors file shaped like a Llama model, F16,
# zero data in a sparse file (only the header is written).
llama() {
	hdr=$(awk -v H="$2" -v I="$3" -v L="$4" -v V="$5" '
	    function t(name, a, b,   n) {
		n = (b == "" ? a : a * b) * 2
		printf "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[%s%s],\"data_offsets\":[%.0f,%.0f]}", \
		    sep, name, a, (b == "" ? "" : "," b), off, off + n
		off += n; sep = ","
	    }
	    BEGIN {
		off = 0; sep = ","
		printf "{\"__metadata__\":{\"format\":\"pt\"}"
		t("model.embed_tokens.weight", V, H)
		for (i = 0; i < L; i++) {
			p = "model.layers." i "."
			t(p "self_attn.q_proj.weight", H, H)
			t(p "self_attn.k_proj.weight", H, H)
			t(p "self_attn.v_proj.weight", H, H)
			t(p "self_attn.o_proj.weight", H, H)
			t(p "mlp.gate_proj.weight", I, H)
			t(p "mlp.up_proj.weight", I, H)
			t(p "mlp.down_proj.weight", H, I)
			t(p "input_layernorm.weight", H)
			t(p "post_attention_layernorm.weight", H)
		}
		t("model.norm.weight", H)
		t("lm_head.weight", V, H)
		printf "}"
		printf "%.0f\n", off > "/dev/stderr"
	    }' 2>"$T/size")
	mkst "$1" "$hdr" 0
	truncate -s "+$(cat "$T/size")" "$1"
}

# data_at FILE TENSOR: byte offset of the tensor's data in the file.
data_at() {
	hl=$(od -An -t u4 -N 4 "$1" | tr -d ' ')
	head -c $((8 + hl)) "$1" | tail -c "$hl" |
	    sed -n "s/.*\"$2\":{[^}]*\"data_offsets\":\[\([0-9]*\),.*/\1/p" |
	    awk -v h="$hl" '{ print 8 + h + $1 }'
}

# --- PEFT's print_trainable_parameters for Llama-2-7b ------------------
llama l7.safetensors 4096 11008 32 32000
peft() {
	"$INSPECT" --plan lora -r "$1" --target "$2" l7.safetensors \
	    > out.txt 2> err.txt
	if grep -qxF "$3" out.txt; then ok "7b: r=$1 $2"; else
		notok "7b: r=$1 $2"; grep trainable out.txt | sed 's/^/#   /'
	fi
}
peft 8 q_proj,v_proj "trainable params: 4,194,304 || all params: 6,742,609,920 || trainable%: 0.0622"
all=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
peft 16 $all "trainable params: 39,976,960 || all params: 6,778,392,576 || trainable%: 0.5898"
peft 64 $all "trainable params: 159,907,840 || all params: 6,898,323,456 || trainable%: 2.3181"
check "7b: the default table" "$INSPECT" l7.safetensors
n=$(grep -c 'F16' "$T/out")
[ "$n" -eq 291 ] && ok "7b: 291 tensors listed" || notok "7b: 291 tensors listed ($n)"

"$INSPECT" --json --plan full l7.safetensors > full.json
[ "$(val full.json '"plan"' trainable_params)" = 6738415616 ] &&
    ok "7b: full fine-tuning trains every parameter" ||
    notok "7b: full fine-tuning trains every parameter"
for m in "ia3 614400" "prompt 81920" "prefix 5242880" "bitfit 0"; do
	"$INSPECT" --json --plan ${m% *} --virtual-tokens 20 l7.safetensors \
	    > m.json
	got=$(val m.json '"plan"' trainable_params)
	[ "$got" = "${m#* }" ] && ok "7b: ${m% *} trains ${m#* }" ||
	    notok "7b: ${m% *} trains ${m#* } (got $got)"
done

# --- prefix tuning with grouped-query attention --------------------------
# 4 heads, 2 kv heads, head_dim 16, 2 layers: 20 x 2 x 2 x (16 x 2).
check "prefix: GQA checkpoint folder" "$INSPECT" --json --plan prefix \
    --virtual-tokens 20 "$DATA/llama-sharded"
got=$(val "$T/out" '"plan"' trainable_params)
[ "$got" = 2560 ] && ok "prefix: head_dim x num_key_value_heads" ||
    notok "prefix: head_dim x num_key_value_heads (got $got, want 2560)"
# No config.json: the width of k_proj (2 kv heads of 32): 20 x 2 x 2 x 64.
check "prefix: GQA file" "$INSPECT" --json --plan prefix \
    --virtual-tokens 20 "$EXAMPLE/model.safetensors"
got=$(val "$T/out" '"plan"' trainable_params)
[ "$got" = 5120 ] && ok "prefix: without config.json, the keys' width" ||
    notok "prefix: without config.json, the keys' width (got $got, want 5120)"

# --- LLaMA-65B: the QLoRA paper's 780 GB for full fine-tuning ----------
llama l65.safetensors 8192 22016 80 32000
"$INSPECT" --json --plan full l65.safetensors > l65.json
near "65b: full fine-tuning needs about 780 GB" \
    "$(val l65.json '"memory_bytes"' full)" 780e9 5e9
near "65b: 65.2e9 parameters" "$(val l65.json '"totals"' params)" 65.2e9 0.1e9
"$INSPECT" --yaml --plan qlora -r 64 --target $all l65.safetensors > l65.yaml
near "65b: QLoRA fits in 48 GB" "$(val l65.yaml 'memory_bytes:' qlora)" \
    42e9 6e9

# --- bits per parameter of NF4, with and without double quantization ---
mkst w.safetensors '{"model.layers.0.mlp.up_proj.weight":{"dtype":"F16","shape":[4096,4096],"data_offsets":[0,33554432]}}' 0
truncate -s +33554432 w.safetensors
"$NF4" -o dq.safetensors w.safetensors
"$NF4" --no-double-quant -o nodq.safetensors w.safetensors
"$INSPECT" --json dq.safetensors > dq.json
"$INSPECT" --yaml nodq.safetensors > nodq.yaml
near "NF4+DQ: 4.127 bits/param" "$(val dq.json '"totals"' bits_per_param)" \
    4.127 0.001
near "NF4+DQ: DQ saves 0.373 bits/param" \
    "$(val dq.json '"totals"' dq_saved_bits_per_param)" 0.373 0.001
near "NF4: 4.5 bits/param" "$(val nodq.yaml 'totals:' bits_per_param)" \
    4.5 0.001
near "NF4: no DQ saving" \
    "$(val nodq.yaml 'totals:' dq_saved_bits_per_param)" 0 0
# Small tensors: the 1 KiB nested map outweighs the absmax it shrinks, so
# the saving is negative (computed here from the stored sizes).
"$NF4" -o small.q "$TOP/tests/data/llama-sharded"
"$INSPECT" --json small.q > small.json
want=$("$STDUMP" small.q | awk '
	$1 ~ /\.absmax$/ { gsub(/[][]/, "", $3); nb = $3 + 0; saved += 8 * 3 * nb }
	$1 ~ /\.nested_absmax$/ { gsub(/[][]/, "", $3); saved -= 8 * 4 * $3 }
	$1 ~ /\.nested_quant_map$/ { saved -= 8 * 1024 }
	$2 == "U8" && $3 ~ /,1\]$/ { split($3, a, /[[,]/); q += 2 * a[2] }
	END { printf "%.6f", saved / q }')
near "small tensors: a negative DQ saving ($want)" \
    "$(val small.json '"totals"' dq_saved_bits_per_param)" "$want" 0.0005
[ "$(val dq.json '"totals"' original_bytes)" = 33554432 ] &&
    ok "original size from the quant_state" ||
    notok "original size from the quant_state"
[ "$(val dq.json '"quant"' double_quant)" = true ] &&
    [ "$(val nodq.yaml 'quant:' double_quant)" = false ] &&
    ok "quant.double_quant" || notok "quant.double_quant"

# --- --compare against an independent computation -----------------------
"$NF4" -o q.safetensors "$EXAMPLE/model.safetensors"
"$NF4" -d --dtype f32 -o y.safetensors q.safetensors
"$NF4" -d --dtype f32 -o x.safetensors "$EXAMPLE/model.safetensors"
check "--compare" "$INSPECT" --json --compare "$EXAMPLE" q.safetensors
cp "$T/out" cmp.json
w=model.layers.0.self_attn.q_proj.weight
n=$((128 * 128 * 4))
od -An -v -t f4 -w4 -j "$(data_at x.safetensors $w)" -N $n x.safetensors > x.txt
od -An -v -t f4 -w4 -j "$(data_at y.safetensors $w)" -N $n y.safetensors > y.txt
paste x.txt y.txt | awk '{
	x = $1; y = $2; d = x - y; if (d < 0) d = -d
	sxx += x * x; syy += y * y; sxy += x * y; sdd += d * d
	if (d > m) m = d; n++
    } END {
	printf "%.10g %.10g %.10g %.10g\n", sqrt(sdd / n), m,
	    10 * log(sxx / sdd) / log(10), sxy / sqrt(sxx * syy)
    }' > ref.txt
read -r rmse maxe snr cosv < ref.txt
near "compare: RMSE" "$(val cmp.json "\"$w\"" rmse)" "$rmse" 1e-8
near "compare: max |error|" "$(val cmp.json "\"$w\"" max_abs_error)" \
    "$maxe" 1e-7
near "compare: SNR dB" "$(val cmp.json "\"$w\"" snr_db)" "$snr" 1e-4
near "compare: cosine" "$(val cmp.json "\"$w\"" cosine)" "$cosv" 1e-6
grep -q '^        "tensors": 14,$' cmp.json &&
    ok "compare: all 14 quantized tensors" ||
    notok "compare: all 14 quantized tensors"
mkst other.safetensors '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' 4
fails "compare with a model that lacks the tensors" 1 \
    "$INSPECT" --compare other.safetensors q.safetensors

# --- --compare of two unquantized checkpoints -----------------------------
# y and x are the dequantized 4-bit model and the original, both F32: the
# same figures as the 4-bit compare, tensor by tensor.
check "--compare unquantized" "$INSPECT" --json --compare x.safetensors \
    y.safetensors
cp "$T/out" plain.json
w=model.layers.0.self_attn.q_proj.weight
near "plain compare: RMSE" "$(val plain.json "\"$w\"" rmse)" "$rmse" 1e-8
near "plain compare: max |error|" \
    "$(val plain.json "\"$w\"" max_abs_error)" "$maxe" 1e-7
near "plain compare: SNR dB" "$(val plain.json "\"$w\"" snr_db)" "$snr" 1e-4
near "plain compare: cosine" "$(val plain.json "\"$w\"" cosine)" "$cosv" 1e-6
near "plain compare: an unquantized norm is equal" \
    "$(val plain.json '"model.norm.weight"' rmse)" 0 0
n=$(grep -c '"compare": {' plain.json)
[ "$n" -eq 22 ] && ok "plain compare: all 21 tensors and the totals" ||
    notok "plain compare: all 21 tensors and the totals ($n)"
# Totals over all compared elements: w [1,2,3,4] against [1,2,3,5] (F32)
# and b [1,1,1,1] equal in both (BF16): 8 elements, one off by 1.
f1='\000\000\200\077' f2='\000\000\000\100' f3='\000\000\100\100'
f4='\000\000\200\100' f5='\000\000\240\100' b1='\200\077'
printf "$f1$f2$f3$f4$b1$b1$b1$b1" > a.dat
printf "$f1$f2$f3$f5$b1$b1$b1$b1" > b.dat
H='{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}}'
mkst pa.safetensors "$H" 0 a.dat
mkst pb.safetensors "$H" 0 b.dat
check "--compare two small checkpoints" "$INSPECT" --json \
    --compare pa.safetensors pb.safetensors
cp "$T/out" small.json
# the totals: from the last "compare" object on
awk '/"compare": \{/ { buf = "" } { buf = buf $0 "\n" }
    END { printf "%s", buf }' small.json > total.json
near "small: w RMSE 0.5" "$(val small.json '"w"' rmse)" 0.5 1e-12
near "small: w SNR 10 log10(30)" "$(val small.json '"w"' snr_db)" \
    14.77121255 1e-6
near "small: w cosine 34/sqrt(30 x 39)" "$(val small.json '"w"' cosine)" \
    0.9939990885 1e-9
near "small: total RMSE sqrt(1/8)" "$(val total.json '"compare": {' rmse)" \
    0.3535533906 1e-9
near "small: total max |d| 1" \
    "$(val total.json '"compare": {' max_abs_error)" 1 0
near "small: total SNR 10 log10(34)" \
    "$(val total.json '"compare": {' snr_db)" 15.31478917 1e-6
near "small: total cosine 38/sqrt(34 x 43)" \
    "$(val total.json '"compare": {' cosine)" 0.9938249838 1e-9
[ "$(val total.json '"compare": {' params)" = 8 ] &&
    [ "$(val total.json '"compare": {' tensors)" = 2 ] &&
    ok "small: totals over 2 tensors, 8 elements" ||
    notok "small: totals over 2 tensors, 8 elements"
check "--compare text" "$INSPECT" --compare pa.safetensors pb.safetensors
grep -q '^total  *0.353553 *1 *15.315 *0.993825$' "$T/out" &&
    ok "small: the text total line" || {
	notok "small: the text total line"; grep total "$T/out" | sed 's/^/#   /'; }
# Nothing at all to compare: exit 1, saying why.
fails "compare: no tensor name in common" 1 \
    "$INSPECT" --compare other.safetensors pb.safetensors
grep_err "compare: the reason" "no tensor name in common"
mkst int.safetensors '{"w":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}' 16
fails "compare: no floating-point tensor" 1 \
    "$INSPECT" --compare pa.safetensors int.safetensors
grep_err "compare: the reason" "no floating-point"
if grep -q nan "$T/out"; then notok "compare: no nan printed"
else ok "compare: no nan printed"; fi

# --- --verify ---------------------------------------------------------------
check "--verify a file written by nf4-quant" "$INSPECT" --verify q.safetensors
grep -q "0 mismatched" "$T/out" && ok "verify: no mismatch" ||
    notok "verify: no mismatch"
cp q.safetensors bad.safetensors
w=model.layers.1.mlp.up_proj.weight
printf '\377' | dd of=bad.safetensors bs=1 seek=$(($(data_at bad.safetensors $w) + 100)) \
    conv=notrunc 2>/dev/null
fails "--verify catches a flipped byte" 1 "$INSPECT" --verify bad.safetensors
grep_err "verify: names the tensor" "'$w'"
check "--verify on a file without checksums" "$INSPECT" --verify \
    "$EXAMPLE/model.safetensors"
grep -q "no checksums" "$T/out" && ok "verify: says no checksums" ||
    notok "verify: says no checksums"

# --- several checkpoints, sharded and adapter directories ------------------
fails "a bad checkpoint among good ones: exit 1 at the end" 1 \
    "$INSPECT" q.safetensors missing.safetensors "$EXAMPLE"
n=$(grep -c '^checkpoint ' "$T/out")
[ "$n" -eq 2 ] && ok "the good checkpoints are reported" ||
    notok "the good checkpoints are reported ($n)"
"$INSPECT" --json "$DATA/llama-sharded" > sharded.json
want=$("$STDUMP" "$DATA/llama-sharded" | awk '{
	s = $3; gsub(/[][]/, "", s); n = split(s, d, ","); p = 1
	for (i = 1; i <= n; i++) p *= d[i]
	t += p } END { printf "%.0f\n", t }')
[ "$(val sharded.json '"totals"' params)" = "$want" ] &&
    ok "sharded directory: every shard counted" ||
    notok "sharded directory: every shard counted"
mkdir ad
mkst ad/adapter_model.safetensors '{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":[4,128],"data_offsets":[0,2048]},"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":{"dtype":"F32","shape":[128,4],"data_offsets":[2048,4096]}}' 4096
printf '{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}\n' \
    > ad/adapter_config.json
check "adapter directory" "$INSPECT" --json ad
cp "$T/out" ad.json
[ "$(val ad.json '"modules"' rank)" = 4 ] &&
    [ "$(val ad.json '"modules"' params)" = 1024 ] &&
    [ "$(val ad.json '"adapter"' bytes)" = 4096 ] &&
    ok "adapter: rank per module and size" ||
    notok "adapter: rank per module and size"

# --- 8-bit weights: codes and SCB, 8 + 32 / columns bits ------------------
check "quantize to 8 bits" "$NF4" -t int8 -o i8 "$EXAMPLE"
check "an 8-bit checkpoint" "$INSPECT" i8
cp "$T/out" i8.txt
row='^model\.layers\.0\.mlp\.down_proj\.weight  *INT8  *128x344  *44,032 '
grep -q "$row *44,544  *8\.093\$" i8.txt &&
    ok "8-bit row: INT8, codes and SCB, 8 + 32/344 bits" ||
    notok "8-bit row: INT8, codes and SCB, 8 + 32/344 bits"
grep -q '^  *int8 row-wise: codes 44,032, SCB 512$' i8.txt &&
    ok "8-bit pieces: codes, SCB" || notok "8-bit pieces: codes, SCB"
grep -q '^tensors  *21 (14 quantized: int8, 0 with double quantization)$' \
    i8.txt && ok "summary: int8" || notok "summary: int8"
check "--json of an 8-bit checkpoint" "$INSPECT" --json i8
cp "$T/out" i8.json
[ "$(val i8.json down_proj '"type"')" = int8 ] &&
    [ "$(val i8.json down_proj rows)" = 128 ] &&
    [ "$(val i8.json down_proj columns)" = 344 ] &&
    [ "$(val i8.json down_proj codes)" = 44032 ] &&
    [ "$(val i8.json down_proj scb)" = 512 ] &&
    ok "--json: quant type int8, rows, columns, bytes of codes and SCB" ||
    notok "--json: quant type int8, rows, columns, bytes of codes and SCB"
check "--compare an 8-bit checkpoint" "$INSPECT" --json --compare \
    "$EXAMPLE" i8
cp "$T/out" i8c.json
[ "$(val i8c.json dq_saved_bits_per_param tensors)" = 14 ] &&
    [ "$(val i8c.json dq_saved_bits_per_param params)" = 362496 ] &&
    ok "--compare: every 8-bit weight" ||
    notok "--compare: every 8-bit weight"

# --- JSON and YAML carry the same content -------------------------------
# agree WHAT JANCHOR YANCHOR KEY: a.json and a.yaml both hold KEY after
# their anchors, with the same value.
agree() {
	j=$(val a.json "$2" "$4")
	y=$(val a.yaml "$3" "$4")
	if [ -n "$j" ] && [ "$j" = "$y" ]; then ok "json and yaml: $1.$4"
	else notok "json and yaml: $1.$4 (json '$j', yaml '$y')"; fi
}
check "--json --plan lora" "$INSPECT" --json --plan lora q.safetensors
cp "$T/out" a.json
check "--yaml --plan lora" "$INSPECT" --yaml --plan lora q.safetensors
cp "$T/out" a.yaml
for k in params bytes quantized_params original_bytes saved_bytes; do
	agree totals '"totals"' 'totals:' $k
done
agree plan '"plan"' 'plan:' all_params
agree plan '"plan"' 'plan:' trainable_params

# --- usage ----------------------------------------------------------------
"$INSPECT" --plan foo q.safetensors > /dev/null 2>&1
[ $? -eq 2 ] && ok "unknown --plan method: exit 2" ||
    notok "unknown --plan method: exit 2"
"$INSPECT" > /dev/null 2>&1
[ $? -eq 2 ] && ok "no checkpoint: exit 2" || notok "no checkpoint: exit 2"
fails "missing checkpoint" 1 "$INSPECT" missing.safetensors
check "--help" "$INSPECT" --help
cp "$T/out" help.txt
"$INSPECT" -h > h.txt 2>&1
[ $? -eq 0 ] && grep -q '^usage: dq-inspect ' h.txt && cmp -s h.txt help.txt &&
    ok "-h: the usage on standard output, exit 0" ||
    notok "-h: the usage on standard output, exit 0"
"$INSPECT" -j 257 q.safetensors > /dev/null 2>&1
[ $? -eq 2 ] && ok "-j above the limit: exit 2" ||
    notok "-j above the limit: exit 2"
