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
