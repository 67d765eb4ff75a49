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

# No cycle between the library's objects: an edge "a b" says a.o uses a
# function or object defined in b.o; tsort refuses a graph with a loop.
objects_uses() {
	for o in "$TOP"/lib/*.o; do
		b=$(basename "$o" .o)
		nm --defined-only "$o" |
		    awk -v o="$b" '$2 ~ /^[TDBRC]$/ { print $3, o }'
	done | sort > defs
	for o in "$TOP"/lib/*.o; do
		b=$(basename "$o" .o)
		nm -u "$o" | awk -v o="$b" '{ print $2, o }'
	done | sort > uses
	join uses defs | awk '$2 != $3 { print $2, $3 }' | sort -u
}
objects_uses > edges
if ! grep -q '^torchbin pickle$' edges; then
	notok "object dependencies not found (lib/*.o built?)"
elif tsort edges >/dev/null 2>loop; then
	ok "no cycle between library objects ($(wc -l < edges) edges)"
else
	notok "a cycle between library objects:" \
	    "$(grep -v 'input contains' loop | sed 's/^tsort: //' | tr '\n' ' ')"
fi
printf 'a b\nb c\nc a\n' > loop3
if tsort loop3 >/dev/null 2>&1; then
	notok "tsort does not report a cycle"
else
	ok "tsort reports a cycle"
fi
