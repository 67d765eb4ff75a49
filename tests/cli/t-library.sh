#!/bin/sh
# t-library.sh - libpeftio.so exports exactly the functions peftio.h
# declares: no internal function leaks into the ABI, none is missing.
. "$(dirname "$0")/lib.sh"

SO=$TOP/lib/libpeftio.so
${CC:-cc} -E -P "$TOP/lib/peftio.h" | grep -o 'peftio_[a-z0-9_]*[[:space:]]*(' |
    tr -d '( ' | sort -u > declared
nm -D --defined-only "$SO" | awk '$2 == "T" { print $3 }' | sort -u > exported
nm -D --defined-only "$SO" | awk '$2 != "T" && $2 != "A" { print $3 }' > data
if [ -s declared ] && cmp -s declared exported; then
	ok "libpeftio.so exports the $(wc -l < declared) functions of peftio.h"
else
	notok "exports differ from peftio.h (< declared only, > exported only)"
	diff declared exported | grep '^[<>]' | head -10 | sed 's/^/#   /'
fi
if [ -s data ]; then
	notok "libpeftio.so exports data: $(tr '\n' ' ' < data)"
else
	ok "libpeftio.so exports no data symbols"
fi
