#!/bin/sh
# nf4-quant end to end: the layout transformers + bitsandbytes write, the
# reverse, pipes, determinism, overwrite rules and bad input.
. "$(dirname "$0")/lib.sh"

# --- transformers' own 4-bit checkpoints of examples/tiny-llama --------
# tests/data/bnb-ref/*.lst list every tensor (name, dtype, shape, xxh3
# of the bytes) of the checkpoints transformers 5.17 + bitsandbytes
# 0.50 wrote for this model; nf4-quant must give the same.
for v in nf4-dq1: nf4-dq0:--no-double-quant fp4-dq0:-t,fp4,--no-double-quant; do
	name=${v%%:*}
	args=$(echo "${v#*:}" | tr , ' ')
	# shellcheck disable=SC2086
	check "quantize tiny-llama $name" "$NF4" $args -o "$name" "$EXAMPLE"
	"$STDUMP" "$name" > "$name.lst"
	same "$name: every tensor as transformers wrote it" \
	    "$DATA/bnb-ref/$name.lst" "$name.lst"
	same "$name: config.json as transformers wrote it" \
	    "$DATA/bnb-ref/$name.config.json" "$name/config.json"
	same "$name: generation_config.json copied" \
	    "$EXAMPLE/generation_config.json" "$name/generation_config.json"
done

# --- dequantize ---------------------------------------------------------
check "dequantize" "$NF4" -d -o deq nf4-dq0
"$STDUMP" deq | awk '{ print $1, $2, $3 }' > deq.shapes
"$STDUMP" "$EXAMPLE" | awk '{ print $1, $2, $3 }' > in.shapes
same "dequantized names, dtypes and shapes equal the original's" \
    in.shapes deq.shapes
check "dequantize to f32" "$NF4" -d --dtype f32 -o deq32.safetensors nf4-dq1
if grep -q '"quantization_config"' deq/config.json; then
	notok "-d removes quantization_config"
else
	ok "-d removes quantization_config"
fi

# --- single files, pipes, determinism -----------------------------------
check "file to file" "$NF4" -o a.safetensors "$EXAMPLE/model.safetensors"
same "file output equals directory output" nf4-dq1/model.safetensors \
    a.safetensors
"$NF4" - < "$EXAMPLE/model.safetensors" | cat > piped.safetensors
same "stdin to a pipe gives the same bytes" a.safetensors piped.safetensors
"$NF4" -o - - < "$EXAMPLE/model.safetensors" > redirected.safetensors
same "stdout redirected to a file gives the same bytes" a.safetensors \
    redirected.safetensors
for j in 1 2 3 8; do
	"$NF4" -j $j -o j$j.safetensors "$EXAMPLE/model.safetensors"
	same "-j $j gives the same bytes" a.safetensors j$j.safetensors
done
for j in 1 2 8; do
	"$NF4" -d -j $j -o d$j.safetensors a.safetensors
done
same "-d -j 2 gives the bytes of -d -j 1" d1.safetensors d2.safetensors
same "-d -j 8 gives the bytes of -d -j 1" d1.safetensors d8.safetensors
"$NF4" - < "$EXAMPLE/model.safetensors" | head -c 100 > /dev/null
ok "a reader that closes early does not hang"

# --- sharded input -------------------------------------------------------
check "sharded directory" "$NF4" -o sharded "$DATA/llama-sharded"
n=$(ls sharded/model-0000*-of-00005.safetensors | wc -l)
[ "$n" -eq 5 ] && ok "five shards written" || notok "five shards written ($n)"
if grep -q '"model.layers.0.mlp.down_proj.weight.quant_state.bitsandbytes__nf4"' \
    sharded/model.safetensors.index.json; then
	ok "index lists the quant_state tensors"
else
	notok "index lists the quant_state tensors"
fi
check "sharded input to one file" "$NF4" -o one.safetensors "$DATA/llama-sharded"
"$STDUMP" sharded > s1.lst
"$STDUMP" one.safetensors > s2.lst
same "shards and single file hold the same tensors" s1.lst s2.lst

# --- overwrite rules -----------------------------------------------------
cp a.safetensors keep.safetensors
fails "refuses to overwrite without -f" 1 "$NF4" -o a.safetensors \
    "$EXAMPLE/model.safetensors"
same "existing output untouched" keep.safetensors a.safetensors
check "-f overwrites" "$NF4" -f --no-double-quant -o a.safetensors \
    "$EXAMPLE/model.safetensors"
usage_fails "no -o for a file input is a usage error" "$NF4" "$EXAMPLE"

# --- bad input ------------------------------------------------------------
printf 'not a checkpoint' > junk.safetensors
fails "garbage input" 1 "$NF4" -o out1 junk.safetensors
grep_err "message names the file" "junk.safetensors"
absent "no output left for garbage input" out1
head -c 500000 "$EXAMPLE/model.safetensors" > trunc.safetensors
fails "truncated input" 1 "$NF4" -o out2.safetensors trunc.safetensors
absent "no output left for truncated input" out2.safetensors
mkdir missing
cp "$DATA/llama-sharded"/*.json "$DATA/llama-sharded"/model-0000[1234]* missing/
fails "directory with a missing shard" 1 "$NF4" -o out3 missing
grep_err "message names the missing shard" "model-00005-of-00005"
absent "no output left for a missing shard" out3
fails "input that does not exist" 1 "$NF4" -o out4 does-not-exist
usage_fails "unknown type" "$NF4" -t nf8 -o out5 "$EXAMPLE"
usage_fails "bad blocksize" "$NF4" -b 48 -o out5 "$EXAMPLE"
fails "quantizing a 4-bit checkpoint again" 1 "$NF4" -o out6 nf4-dq1
grep_err "message names the tensor" "quant_state"
W=model.layers.0.mlp.up_proj.weight
mkst overlap.safetensors "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"$W\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]}}" 24
fails "overlapping offsets" 1 "$NF4" -o out7.safetensors overlap.safetensors
grep_err "message names the file" "overlap.safetensors"
absent "no output left for overlapping offsets" out7.safetensors
mkst dtype.safetensors "{\"$W\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,32]}}" 32
fails "unknown dtype" 1 "$NF4" -o out8.safetensors dtype.safetensors
grep_err "message names the dtype" "F128"
# A weight with a NaN in its first element.
printf '\000\000\300\177' > nan.bin
head -c 508 /dev/zero >> nan.bin
mkst nan.safetensors "{\"$W\":{\"dtype\":\"F32\",\"shape\":[2,64],\"data_offsets\":[0,512]}}" 0 nan.bin
fails "NaN weight refused" 1 "$NF4" -o out9.safetensors nan.safetensors
grep_err "message names the tensor" "$W"
absent "no output left for a NaN weight" out9.safetensors
check "--allow-nonfinite quantizes it" "$NF4" --allow-nonfinite \
    -o out9.safetensors nan.safetensors
# GPT-2 Conv1D weights ([in, out]) are transposed to [out, in] before
# they are quantized, as transformers does; -d transposes them back.
C=transformer.h.0.attn.c_attn.weight
mkst conv1d.safetensors "{\"$C\":{\"dtype\":\"F32\",\"shape\":[4,64],\"data_offsets\":[0,1024]}}" 1024
check "GPT-2 Conv1D weight quantized" "$NF4" -o out10.safetensors \
    conv1d.safetensors
if "$STDUMP" out10.safetensors | grep -q "^$C U8 \[128,1\]"; then
	ok "Conv1D: packed codes"
else
	notok "Conv1D: packed codes"
fi
check "Conv1D: dequantize" "$NF4" -d -o out10d.safetensors out10.safetensors
if "$STDUMP" out10d.safetensors | grep -q "^$C F32 \[4,64\]"; then
	ok "Conv1D: -d gives back [in, out]"
else
	notok "Conv1D: -d gives back [in, out]"
fi
check "--exclude leaves it out" "$NF4" --exclude '*.c_attn.weight' \
    -o out10e.safetensors conv1d.safetensors

# --- a Hugging Face Trainer checkpoint folder ------------------------------
# Training state is left out (named under -v), whatever its size; the
# files a model needs are copied whatever their size; subfolders are left
# out with a note.
mkdir ck ck/runs
cp "$EXAMPLE"/* ck/
truncate -s 1100M ck/optimizer.pt
for f in scheduler.pt scaler.pt rng_state.pth rng_state_1.pth \
    trainer_state.json training_args.bin; do echo x > ck/$f; done
echo '{"version": "1.0"}' > ck/tokenizer.json
echo event > ck/runs/events
# A file over 1 GiB (sparse here) with its last bytes marked.
truncate -s 1100M ck/tokenizer.model
printf 'END' | dd of=ck/tokenizer.model bs=1 seek=$((1100 * 1048576 - 3)) \
    conv=notrunc 2>/dev/null
check "trainer checkpoint folder: quantized" "$NF4" -v -o ckq ck
grep_err "-v names the optimizer state left out" "optimizer.pt"
grep_err "-v names the trainer state left out" "trainer_state.json"
grep_err "-v names rng_state_1.pth left out" "rng_state_1.pth"
grep_err "-v names the subfolder left out" "runs/"
left=
for f in optimizer.pt scheduler.pt scaler.pt rng_state.pth rng_state_1.pth \
    trainer_state.json training_args.bin runs; do
	[ -e ckq/$f ] && left="$left $f"
done
[ -z "$left" ] && ok "no training state in the output" ||
    notok "no training state in the output (copied:$left)"
same "tokenizer.json copied" ck/tokenizer.json ckq/tokenizer.json
[ "$(stat -c %s ckq/tokenizer.model 2>/dev/null)" = $((1100 * 1048576)) ] &&
    [ "$(tail -c 3 ckq/tokenizer.model)" = END ] &&
    ok "a file over 1 GiB copied whole" || notok "a file over 1 GiB copied whole"
rm -rf ckq ck/tokenizer.model
check "without -v" "$NF4" -o ckq ck
if grep -q "optimizer.pt\|runs/" "$T/err"; then
	notok "no notes without -v"; else ok "no notes without -v"; fi
rm -rf ckq ck/optimizer.pt

# A partial Hugging Face cache: a dangling link among the extra files, or
# something that is not a regular file, is an error naming it.
mkdir pc
cp "$EXAMPLE"/* pc/
ln -s ../blobs/missing pc/tokenizer.json
fails "dangling symbolic link refused" 1 "$NF4" -o pcq pc
grep_err "message names the link" "pc/tokenizer.json"
absent "no output for a dangling link" pcq
rm pc/tokenizer.json
ln -s /dev/null pc/tokenizer.json
fails "a device refused" 1 "$NF4" -o pcq pc
grep_err "message names the device" "pc/tokenizer.json"
absent "no output for a device" pcq
rm pc/tokenizer.json
mkfifo pc/vocab.txt
fails "a pipe refused" 1 "$NF4" -o pcq pc
grep_err "message names the pipe" "pc/vocab.txt"
absent "no output for a pipe" pcq

# --- inputs quantizing would make nonsense of ------------------------------
fails "a PEFT adapter directory refused" 1 "$NF4" -o ad.out \
    "$DATA/lora/lora-bf16"
grep_err "message says it is an adapter" "PEFT adapter"
grep_err "message says what to run" "lora-merge"
absent "no output for an adapter" ad.out
fails "a PEFT adapter file refused" 1 "$NF4" -o ad.safetensors \
    "$DATA/lora/ia3-f32/adapter_model.safetensors"
grep_err "message names the adapter tensor" "ia3_l"
absent "no output for an adapter file" ad.safetensors
mkst int8.safetensors "{\"$W\":{\"dtype\":\"I8\",\"shape\":[2,64],\"data_offsets\":[0,128]},\"${W%.weight}.SCB\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[128,136]}}" 136
fails "an 8-bit checkpoint (SCB) refused" 1 "$NF4" -o int8.out.safetensors \
    int8.safetensors
grep_err "message says 8-bit" "already 8-bit quantized"
absent "no output for an 8-bit checkpoint" int8.out.safetensors
for m in gptq awq; do
	mkdir q$m
	cp "$EXAMPLE"/* q$m/
	sed 's/^{/{"quantization_config": {"quant_method": "'$m'", "bits": 4},/' \
	    "$EXAMPLE/config.json" > q$m/config.json
	fails "a $m checkpoint refused" 1 "$NF4" -o q$m.out q$m
	grep_err "message names the method $m" "quant_method $m"
	grep_err "message names config.json" "q$m/config.json"
	absent "no output for a $m checkpoint" q$m.out
done
mkdir q8
cp "$EXAMPLE"/* q8/
sed 's/^{/{"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": true},/' \
    "$EXAMPLE/config.json" > q8/config.json
fails "a bitsandbytes 8-bit config refused" 1 "$NF4" -o q8.out q8
grep_err "message says 8-bit" "bitsandbytes, 8-bit"
sed 's/^{/{"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true},/' \
    "$EXAMPLE/config.json" > q8/config.json
fails "a bitsandbytes 4-bit config refused" 1 "$NF4" -o q8.out q8
grep_err "message says to use -d" "use -d"
absent "no output for a quantized config" q8.out
