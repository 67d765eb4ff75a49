#!/bin/sh
# run.sh - make install into a temporary tree, build and run a program
# against it through pkg-config, then make uninstall and require that
# nothing but empty directories is left.  Run by make installcheck, which
# passes MAKE, CC, LDSAN and PKG_CONFIG.

TOP=$(cd "$(dirname "$0")/../.." && pwd)
MAKE=${MAKE:-make}
CC=${CC:-cc}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
T=$(mktemp -d "${TMPDIR:-/tmp}/peftio-install.XXXXXX")
trap 'rm -rf "$T"' EXIT
pass=0
fail=0

ok() { echo "ok - $*"; pass=$((pass + 1)); }
notok() { echo "not ok - $*"; fail=$((fail + 1)); }

version=$(sed -n 's/^#define PEFTIO_VERSION_STRING[^"]*"\(.*\)"/\1/p' \
    "$TOP/lib/peftio.h")

# compdir PREFIX: where make install puts the bash completions.
compdir() {
	$PKG_CONFIG --define-variable=prefix="$1" --variable=completionsdir \
	    bash-completion 2>/dev/null || echo "$1/share/bash-completion/completions"
}

# installed ROOT PREFIX: every file make install promises is under ROOT.
installed() {
	root=$1
	missing=
	for t in nf4-quant lora-merge adapter-extract dq-inspect; do
		f=$root/$(compdir "$3" | sed "s|^$3/||")/$t
		if [ ! -f "$f" ]; then
			missing="$missing bash-completion/$t"
		elif ! "$TOP/tools/$t/$t" --bash-completion | cmp -s - "$f"; then
			missing="$missing bash-completion/$t(differs)"
		fi
	done
	for f in bin/nf4-quant bin/lora-merge bin/adapter-extract \
	    bin/dq-inspect lib/libpeftio.a lib/libpeftio.so.$version \
	    include/peftio.h lib/pkgconfig/peftio.pc; do
		[ -f "$root/$f" ] || missing="$missing $f"
	done
	for m in "$TOP"/man/*.[1-9]; do
		s=${m##*.}
		[ -f "$root/share/man/man$s/$(basename "$m")" ] ||
		    missing="$missing man$s/$(basename "$m")"
	done
	[ "$(readlink "$root/lib/libpeftio.so.0")" = "libpeftio.so.$version" ] ||
	    missing="$missing lib/libpeftio.so.0"
	[ "$(readlink "$root/lib/libpeftio.so")" = "libpeftio.so.0" ] ||
	    missing="$missing lib/libpeftio.so"
	if [ -z "$missing" ]; then ok "install: every file under $2"; else
		notok "install: missing under $2:$missing"; fi
}

# leftover ROOT: nothing but empty directories under ROOT.
leftover() {
	left=$(find "$1" ! -type d)
	if [ -z "$left" ]; then ok "uninstall: nothing left under $2"; else
		notok "uninstall: left under $2: $(echo $left)"; fi
}

# The EXAMPLES program of peftio(3), as the page prints it.
sed -n '/^\.Sh EXAMPLES/,/^\.Sh/p' "$TOP/man/peftio.3" |
    sed -n '/^\.Bd -literal/,/^\.Ed/p' | sed '/^\.Bd/,/^\.Ed/!d' |
    awk '/^\.Ed/ { exit } !/^\.Bd/' | sed 's/\\e/\\/g' > "$T/example.c"

cat > "$T/prog.c" <<'EOS'
#include <stdio.h>
#include <string.h>

#include <peftio.h>

int
main(void)
{
	printf("%s\n", peftio_version());
	return strcmp(peftio_version(), PEFTIO_VERSION_STRING) != 0;
}
EOS

# PREFIX alone: the .pc file then names the tree it is in.
P=$T/usr
if $MAKE -s -C "$TOP" install PREFIX="$P" >"$T/log" 2>&1; then
	ok "make install PREFIX"
else
	notok "make install PREFIX"; sed 's/^/#   /' "$T/log" | tail -5
fi
installed "$P" PREFIX "$P"
# The installed completion, loaded as bash-completion loads it.
got=$(bash -c '. "$1"
    f=$(complete -p nf4-quant | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
    COMP_WORDS=(nf4-quant --no-d); COMP_CWORD=1; "$f"
    echo "${COMPREPLY[*]}"' sh "$(compdir "$P")/nf4-quant" 2>&1)
if [ "$got" = "--no-double-quant" ]; then
	ok "the installed completion completes nf4-quant --no-d"
else
	notok "the installed completion completes nf4-quant --no-d ($got)"
fi
export PKG_CONFIG_PATH="$P/lib/pkgconfig"
if flags=$($PKG_CONFIG --cflags --libs peftio 2>"$T/log") &&
    $CC $LDSAN -o "$T/prog" "$T/prog.c" $flags 2>>"$T/log"; then
	ok "a program builds with pkg-config --cflags --libs peftio"
else
	notok "a program builds with pkg-config"; sed 's/^/#   /' "$T/log"
fi
out=$(LD_LIBRARY_PATH="$P/lib" "$T/prog" 2>&1)
if [ "$out" = "$version" ]; then
	ok "the program runs against the installed library"
else
	notok "the program runs against the installed library ($out)"
fi
# peftio(3)'s EXAMPLES program, built and run against the installed tree.
if [ -s "$T/example.c" ] && $CC $LDSAN -o "$T/example" "$T/example.c" \
    $flags 2>"$T/log"; then
	ok "peftio(3) EXAMPLES: the program builds"
else
	notok "peftio(3) EXAMPLES: the program builds"; sed 's/^/#   /' "$T/log"
fi
if LD_LIBRARY_PATH="$P/lib" "$T/example" "$TOP/examples/tiny-llama" \
    > "$T/example.out" 2>&1 &&
    grep -qx "model.embed_tokens.weight BF16 65536" "$T/example.out" &&
    [ "$(wc -l < "$T/example.out")" -gt 10 ]; then
	ok "peftio(3) EXAMPLES: the program lists the example's tensors"
else
	notok "peftio(3) EXAMPLES: the program lists the example's tensors"
	head -3 "$T/example.out" | sed 's/^/#   /'
fi
if LD_LIBRARY_PATH="$P/lib" ldd "$T/prog" 2>/dev/null |
    grep -q "libpeftio.so.0 => $P/lib/libpeftio.so.0"; then
	ok "the program loads libpeftio.so.0 from the installed tree"
else
	notok "the program loads libpeftio.so.0 from the installed tree"
fi
if "$P/bin/dq-inspect" --help >/dev/null 2>&1; then
	ok "an installed tool runs"
else
	notok "an installed tool runs"
fi
$MAKE -s -C "$TOP" uninstall PREFIX="$P" >"$T/log" 2>&1 ||
    notok "make uninstall PREFIX"
leftover "$P" PREFIX

# DESTDIR: staged, the .pc file names the final PREFIX.
D=$T/stage
if $MAKE -s -C "$TOP" install PREFIX=/opt/peftio DESTDIR="$D" \
    >"$T/log" 2>&1; then
	ok "make install DESTDIR"
else
	notok "make install DESTDIR"; sed 's/^/#   /' "$T/log" | tail -5
fi
installed "$D/opt/peftio" DESTDIR /opt/peftio
if grep -qx 'prefix=/opt/peftio' "$D/opt/peftio/lib/pkgconfig/peftio.pc"
then
	ok "the staged peftio.pc names the final prefix"
else
	notok "the staged peftio.pc names the final prefix"
fi
$MAKE -s -C "$TOP" uninstall PREFIX=/opt/peftio DESTDIR="$D" \
    >"$T/log" 2>&1 || notok "make uninstall DESTDIR"
leftover "$D" DESTDIR

echo "install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
