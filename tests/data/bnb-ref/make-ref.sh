#!/bin/sh
# make-ref.sh FIXTURES: regenerate the reference listings from the
# checkpoints transformers 5.17 + bitsandbytes 0.50 wrote for
# examples/tiny-llama (FIXTURES/bnb/bnb-{nf4-dq1,nf4-dq0,fp4-dq0}).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$here/../../..
for v in nf4-dq1 nf4-dq0 fp4-dq0; do
	"$top/tests/cli/stdump" "$1/bnb/bnb-$v" > "$here/$v.lst"
	cp "$1/bnb/bnb-$v/config.json" "$here/$v.config.json"
done
# The other forms (FIXTURES/bnb-int8): the 8-bit and the bf16-storage
# checkpoints of the same model, and GPT-2 in 4 and 8 bit cut to what
# tests/data/int8/gpt2 holds (its first block's attention).
for v in int8:bnb-int8 nf4-dq1-bf16:bnb-nf4-dq1-storage-bf16; do
	"$top/tests/cli/stdump" "$1/bnb-int8/${v#*:}" > "$here/${v%%:*}.lst"
	cp "$1/bnb-int8/${v#*:}/config.json" "$here/${v%%:*}.config.json"
done
for v in gpt2-int8 gpt2-nf4-dq1; do
	"$top/tests/cli/stdump" "$1/bnb-int8/$v" |
	    grep '^transformer\.h\.0\.attn\.' > "$here/$v.lst"
	cp "$1/bnb-int8/$v/config.json" "$here/$v.config.json"
done
