#!/bin/sh
# Faults while writing: a full device, a full file system, a file size
# limit, a directory that cannot be written, signals in the middle of a
# conversion, and a reader that goes away.  Every failure must exit with its documented
# status and leave the destination as it was, with no temporary file.
# Cases that need what this system does not allow (mounting a file
# system) are reported as "ok - ... # SKIP reason".
. "$(dirname "$0")/lib.sh"

M=$EXAMPLE/model.safetensors
L=$DATA/lora
MNT=

cleanup() {
	for m in $MNT; do
		umount "$m" 2>/dev/null
	done
	rm -rf "$T"
}
trap cleanup EXIT

skip() {
	echo "ok - $1 # SKIP $2"
}

# status DESC WANT CMD...: CMD exits with status WANT and prints one
# line on stderr.
status() {
	desc=$1
	want=$2
	shift 2
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	lines=$(wc -l <"$T/err")
	if [ "$st" -eq "$want" ] && [ "$lines" -eq 1 ]; then
		ok "$desc"
	else
		notok "$desc (exit $st, want $want; $lines stderr lines)"
		sed 's/^/#   /' "$T/err" | head -5
	fi
}

# only DIR NAME...: DIR holds exactly the entries NAME... (no temporaries).
only() {
	desc=$1
	d=$2
	shift 2
	want=$(for n in "$@"; do echo "$n"; done | sort)
	got=$(ls -A "$d" | sort)
	if [ "$got" = "$want" ]; then
		ok "$desc"
	else
		notok "$desc (holds: $(echo $got))"
	fi
}

# AddressSanitizer keeps its own handlers of SIGBUS, SIGSEGV and SIGFPE.
ASAN=
nm "$NF4" 2>/dev/null | grep -q __asan_init && ASAN=1

printf 'the old output\n' > old.bin

# --- /dev/full -------------------------------------------------------------
status "nf4-quant -o /dev/full" 1 "$NF4" -o /dev/full "$M"
grep_err "says why" "No space left on device"
status "nf4-quant to standard output on /dev/full" 1 \
    sh -c '"$1" - < "$2" > /dev/full' sh "$NF4" "$M"
grep_err "names standard output" "<stdout>"
check "quantize a model to dequantize" "$NF4" -o q.safetensors "$M"
status "nf4-quant -d to /dev/full" 1 \
    sh -c '"$1" -d -o - "$2" > /dev/full' sh "$NF4" q.safetensors
status "lora-merge to /dev/full" 1 \
    sh -c '"$1" -o - "$2" "$3" > /dev/full' sh "$MERGE" "$L/llama-f32" \
    "$L/rslora-f32"

# --- a full file system ------------------------------------------------------
mkdir small
if mount -t tmpfs -o size=128k tmpfs small 2>/dev/null; then
	MNT="$MNT $T/small"
	cp old.bin small/out.safetensors
	mkdir small/outdir
	cp old.bin small/outdir/model.safetensors
	status "file on a full file system" 1 \
	    "$NF4" -f -o small/out.safetensors "$M"
	grep_err "says why" "No space left on device"
	same "the existing file keeps its bytes" old.bin small/out.safetensors
	status "directory on a full file system" 1 \
	    "$NF4" -o small/newdir "$EXAMPLE"
	status "replacing a directory on a full file system" 1 \
	    "$NF4" -f -o small/outdir "$DATA/llama-sharded"
	same "the existing directory keeps its file" old.bin \
	    small/outdir/model.safetensors
	only "the existing directory holds nothing new" small/outdir \
	    model.safetensors
	status "lora-merge on a full file system" 1 \
	    "$MERGE" -f -o small/out.safetensors "$L/llama-f32" \
	    "$L/rslora-f32"
	same "the existing file still keeps its bytes" old.bin \
	    small/out.safetensors
	check "make a tuned model" "$MERGE" -o tuned "$L/llama-f32" \
	    "$L/pair/a"
	status "adapter-extract on a full file system" 1 \
	    "$EXTRACT" -r 64 -o small/ad "$L/llama-f32" tuned
	only "no temporary file or directory left" small out.safetensors \
	    outdir
else
	skip "a full file system" "cannot mount a tmpfs here"
fi

# --- a file size limit (ulimit -f): SIGXFSZ, or EFBIG when it is ignored ---
cp old.bin limited.safetensors
# (The inner shell's own "File size limit exceeded" goes to /dev/null.)
st=$(sh -c 'ulimit -f 64; "$1" -f -o limited.safetensors "$2" 2>/dev/null
    echo $?' sh "$NF4" "$M" 2>/dev/null)
[ "$st" -eq 153 ] && ok "past the file size limit: SIGXFSZ (153)" ||
    notok "past the file size limit: SIGXFSZ (exit $st, want 153)"
( trap '' XFSZ; ulimit -f 64; "$NF4" -f -o limited.safetensors "$M" ) \
    2>"$T/err"
st=$?
lines=$(wc -l < "$T/err")
[ "$st" -eq 1 ] && [ "$lines" -eq 1 ] && grep -q "File too large" "$T/err" &&
    ok "SIGXFSZ ignored: exit 1, one line saying why" ||
    notok "SIGXFSZ ignored: exit $st, $lines lines: $(cat "$T/err")"
same "the limited destination keeps its bytes" old.bin limited.safetensors
! ls -A | grep -q '^\.limited\.' && ok "no temporary left past the limit" ||
    notok "no temporary left past the limit"

# --- a directory that cannot be written --------------------------------------
# As root, a directory's permissions do not stop writes; a path under
# a regular file cannot be written by anyone.
cp old.bin old.copy
status "output under a regular file" 1 \
    "$NF4" -o old.bin/out.safetensors "$M"
grep_err "says why" "Not a directory"
status "output directory under a regular file" 1 \
    "$MERGE" -o old.bin/m "$L/llama-f32" "$L/rslora-f32"
same "the regular file keeps its bytes" old.copy old.bin
if [ "$(id -u)" -ne 0 ]; then
	mkdir rodir
	cp old.bin rodir/out.safetensors
	chmod 555 rodir
	status "read-only directory" 1 "$NF4" -f -o rodir/out.safetensors "$M"
	same "the existing file keeps its bytes" old.bin rodir/out.safetensors
	only "nothing left in the read-only directory" rodir out.safetensors
	chmod 755 rodir
else
	mkdir rodir
	if mount -t tmpfs -o size=1m tmpfs rodir 2>/dev/null; then
		MNT="$MNT $T/rodir"
		cp old.bin rodir/out.safetensors
		mkdir rodir/outdir
		if mount -o remount,ro rodir 2>/dev/null; then
			status "read-only file system" 1 \
			    "$NF4" -f -o rodir/out.safetensors "$M"
			grep_err "says why" "Read-only file system"
			same "the existing file keeps its bytes" old.bin \
			    rodir/out.safetensors
			status "directory on a read-only file system" 1 \
			    "$MERGE" -f -o rodir/outdir "$DATA/llama-sharded" \
			    "$L/lora-bf16"
			only "nothing left on the read-only file system" \
			    rodir out.safetensors outdir
		else
			skip "read-only file system" "cannot remount read-only"
		fi
	else
		# Root writes through a directory's permissions.
		skip "read-only directory" "root, and cannot mount a tmpfs"
	fi
fi

# --- signals -------------------------------------------------------------------
# A background job starts with SIGINT and SIGQUIT ignored, nohup(1) ignores
# SIGHUP, and the tools keep an ignored signal ignored; run them with every
# signal at its default action instead.
if env --default-signal true 2>/dev/null; then
	DFL="env --default-signal"
else
	DFL=
fi

# stop PID: wait at most 10 s for PID, then kill it; its exit status.
stop() {
	k=0
	while kill -0 "$1" 2>/dev/null && [ "$k" -lt 100 ]; do
		sleep 0.1
		k=$((k + 1))
	done
	if kill -0 "$1" 2>/dev/null; then
		echo "# pid $1 still runs: $(tr '\0' ' ' </proc/$1/cmdline \
		    2>/dev/null), state $(awk '{print $3}' /proc/$1/stat \
		    2>/dev/null), in $(cat /proc/$1/wchan 2>/dev/null)"
		kill -KILL "$1" 2>/dev/null
	fi
	wait "$1"
}

# appears PATTERN: wait at most 10 s for a name matching the grep
# PATTERN in the current directory; true if one appeared.
appears() {
	k=0
	until ls -A | grep -q -- "$1"; do
		[ "$k" -ge 100 ] && return 1
		sleep 0.1
		k=$((k + 1))
	done
}

# A model directory whose config.json is a FIFO nobody writes: nf4-quant
# writes every tensor into its temporary output directory, then waits
# there, in the middle of the conversion, until the signal comes.
mkdir slow
cp "$M" slow/
mkfifo slow/config.json
mkdir dest
cp old.bin dest/model.safetensors
# Batch schedulers send more than INT and TERM; no core files here.
ulimit -c 0 2>/dev/null
for sig in INT TERM HUP QUIT USR1 USR2 ALRM XCPU XFSZ VTALRM PROF BUS; do
	case $sig in
	HUP) n=1 ;;
	INT) n=2 ;;
	QUIT) n=3 ;;
	BUS) n=7 ;;
	USR1) n=10 ;;
	USR2) n=12 ;;
	ALRM) n=14 ;;
	TERM) n=15 ;;
	XCPU) n=24 ;;
	XFSZ) n=25 ;;
	VTALRM) n=26 ;;
	PROF) n=27 ;;
	esac
	if { [ $sig = INT ] || [ $sig = QUIT ]; } && [ -z "$DFL" ]; then
		skip "SIG$sig" "env --default-signal is missing"
		continue
	fi
	if [ $sig = BUS ] && [ -n "$ASAN" ]; then
		skip "SIG$sig" "AddressSanitizer handles it"
		continue
	fi
	$DFL "$NF4" -f -o dest slow 2>"$T/err" &
	pid=$!
	if appears '^\.dest\.tmp\.'; then
		ok "SIG$sig: the temporary directory exists before the signal"
	else
		notok "SIG$sig: the temporary directory exists before the signal"
	fi
	kill -$sig $pid
	stop $pid
	st=$?
	[ "$st" -eq $((128 + n)) ] && ok "SIG$sig: exit status $st" ||
	    notok "SIG$sig: exit status $st, want $((128 + n))"
	! ls -A | grep -q '^\.dest\.' && ok "SIG$sig: no temporary left" ||
	    notok "SIG$sig: no temporary left ($(ls -A | grep '^\.dest\.'))"
	same "SIG$sig: the destination is unchanged" old.bin \
	    dest/model.safetensors
	only "SIG$sig: the destination holds nothing new" dest \
	    model.safetensors
done

# Input through a FIFO, stopped before its end: no output exists yet.
mkfifo in.fifo
cp old.bin piped.safetensors
for sig in INT TERM; do
	case $sig in
	INT) n=2 ;;
	TERM) n=15 ;;
	esac
	if [ $sig = INT ] && [ -z "$DFL" ]; then
		skip "SIGINT on a slow pipe" "env --default-signal is missing"
		continue
	fi
	$DFL "$NF4" -f -o piped.safetensors - < in.fifo 2>"$T/err" &
	pid=$!
	exec 3> in.fifo
	head -c 600000 "$M" >&3
	kill -$sig $pid
	stop $pid
	st=$?
	exec 3>&-
	[ "$st" -eq $((128 + n)) ] && ok "SIG$sig on a slow pipe: exit $st" ||
	    notok "SIG$sig on a slow pipe: exit $st, want $((128 + n))"
	same "SIG$sig on a slow pipe: the destination is unchanged" old.bin \
	    piped.safetensors
	! ls -A | grep -q '^\.piped\.' && ok "SIG$sig on a slow pipe: no temporary" ||
	    notok "SIG$sig on a slow pipe: no temporary"
done

# --- a reader that goes away -------------------------------------------------
# Like cat or gzip, a tool whose reader exits is ended by SIGPIPE (and
# removes its temporary files); with SIGPIPE ignored it exits 1 with a
# message.  Either way it neither hangs nor leaves anything behind.
( "$NF4" - < "$M" 2>"$T/pipe.err"; echo $? > pipe.st ) | head -c 100 > head.out
[ "$(cat pipe.st)" -eq 141 ] && ok "SIGPIPE ends nf4-quant (status 141)" ||
    notok "SIGPIPE ends nf4-quant (status $(cat pipe.st), want 141)"
[ ! -s "$T/pipe.err" ] && ok "and it says nothing" ||
    notok "and it says nothing ($(cat "$T/pipe.err"))"
[ "$(wc -c < head.out)" -eq 100 ] && ok "the reader got its 100 bytes" ||
    notok "the reader got its 100 bytes"
( trap '' PIPE; "$NF4" - < "$M" 2>"$T/pipe.err"; echo $? > pipe.st ) |
    head -c 100 > /dev/null
[ "$(cat pipe.st)" -eq 1 ] && ok "SIGPIPE ignored: exit 1" ||
    notok "SIGPIPE ignored: exit $(cat pipe.st), want 1"
if [ "$(wc -l < "$T/pipe.err")" -eq 1 ] &&
    grep -q 'Broken pipe' "$T/pipe.err"; then
	ok "SIGPIPE ignored: one line saying why"
else
	notok "SIGPIPE ignored: one line saying why"
	sed 's/^/#   /' "$T/pipe.err" | head -3
fi
( "$MERGE" -o - "$L/llama-f32" "$L/rslora-f32" 2>/dev/null; echo $? > pipe.st ) |
    head -c 10 > /dev/null
[ "$(cat pipe.st)" -eq 141 ] && ok "SIGPIPE ends lora-merge (status 141)" ||
    notok "SIGPIPE ends lora-merge (status $(cat pipe.st), want 141)"

# undercap DESC OUT WANT CMD...: CMD, run under a limit, either exits 0
# having written OUT, the same bytes as WANT (a file or a directory), or
# exits 1 with one line on stderr and leaves neither OUT nor a temporary.
undercap() {
	desc=$1; out=$2; want=$3; shift 3
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	if [ "$st" -eq 0 ] && [ -e "$out" ] && diff -r "$out" "$want" >/dev/null
	then
		ok "$desc: a whole output"
	elif [ "$st" -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] &&
	    ! left "$out"; then
		ok "$desc: exit 1, nothing left"
	else
		notok "$desc (exit $st)"
		sed 's/^/#   /' "$T/err" | head -5
	fi
	rm -rf "$out"
}

# --- a memory limit ---------------------------------------------------------
# Out of memory anywhere (OpenBLAS's work buffers included) ends the run
# with one line and status 1; it never hangs.  AddressSanitizer cannot
# run under a limit on address space.
if ! command -v timeout >/dev/null 2>&1; then
	skip "a memory limit" "no timeout(1)"
elif nm "$MERGE" 2>/dev/null | grep -q __asan_init; then
	skip "a memory limit" "built with AddressSanitizer"
else
	check "a merge to extract from" "$MERGE" -o merged.safetensors \
	    "$L/llama-f32" "$L/rslora-f32"
	check "an extraction without a limit" "$EXTRACT" -r 4 -o extracted \
	    "$L/llama-f32" merged.safetensors
	# 100 MB holds the libraries but not a tensor's work buffers: the
	# failure path must be taken.
	status "lora-merge under ulimit -v 100000" 1 sh -c \
	    'ulimit -v $1; exec timeout 60 "$2" -o oom.safetensors "$3" "$4"' \
	    sh 100000 "$MERGE" "$L/llama-f32" "$L/rslora-f32"
	# A tensor is named with the file it is in.
	if grep -q "^lora-merge: tensor '" "$T/err"; then
		notok "lora-merge under ulimit -v 100000: the file is named"
		sed 's/^/#   /' "$T/err"
	else
		ok "lora-merge under ulimit -v 100000: the file is named"
	fi
	status "adapter-extract under ulimit -v 100000" 1 sh -c \
	    'ulimit -v $1; exec timeout 60 "$2" -r 4 -o oomdir "$3" "$4"' \
	    sh 100000 "$EXTRACT" "$L/llama-f32" merged.safetensors
	absent "no output nor temporary is left" oom.safetensors oomdir
	# Above that, where the run fails depends on how much address space
	# the C library and OpenBLAS reserve on this machine (thread stacks,
	# malloc arenas, BLAS buffers).  Either way: the whole output, or
	# status 1 with one line and nothing left.
	for v in 150000 300000; do
		undercap "lora-merge under ulimit -v $v" oom.safetensors \
		    merged.safetensors sh -c \
		    'ulimit -v $1; exec timeout 60 "$2" -o oom.safetensors "$3" "$4"' \
		    sh $v "$MERGE" "$L/llama-f32" "$L/rslora-f32"
		undercap "adapter-extract under ulimit -v $v" oomdir extracted sh -c \
		    'ulimit -v $1; exec timeout 60 "$2" -r 4 -o oomdir "$3" "$4"' \
		    sh $v "$EXTRACT" "$L/llama-f32" merged.safetensors
	done
fi

# --- an input truncated while it is read ------------------------------------
# The adapter is mapped, then lora-merge waits for its base on a FIFO;
# the adapter file is emptied before the base comes.  Its pages are gone
# (SIGBUS from the mapping): exit 1 with a line saying why, no temporary.
if [ -n "$ASAN" ]; then
	skip "an input truncated while mapped" "AddressSanitizer handles SIGBUS"
elif [ ! -r /proc/self/maps ]; then
	skip "an input truncated while mapped" "no /proc/PID/maps"
else
	check "a one-file base" "$MERGE" -o one.safetensors "$L/llama-f32" \
	    "$L/rslora-f32"
	cp -r "$L/rslora-f32" shrinking
	mkfifo base.fifo
	"$MERGE" -o shrunk.safetensors - shrinking < base.fifo 2>"$T/err" &
	pid=$!
	exec 3> base.fifo
	k=0
	until grep -q adapter_model /proc/$pid/maps 2>/dev/null || [ $k -ge 100 ]; do
		sleep 0.1
		k=$((k + 1))
	done
	: > shrinking/adapter_model.safetensors
	cat one.safetensors >&3
	exec 3>&-
	stop $pid
	st=$?
	[ "$st" -eq 1 ] && ok "an input truncated while mapped: exit 1" ||
	    notok "an input truncated while mapped: exit $st, want 1"
	if [ "$(wc -l < "$T/err")" -eq 1 ]; then
		grep_err "says the input changed" "input changed while being read"
	else
		notok "one line on stderr ($(cat "$T/err"))"
	fi
	absent "no output nor temporary" shrunk.safetensors
fi

# --- dq-inspect's report on a full device or a closed pipe ----------------------
# One line with the reason (it printed two, without one).
for f in "" --json --yaml; do
	status "dq-inspect $f to /dev/full" 1 sh -c \
	    '"$1" $2 "$3" "$4" "$3" > /dev/full' sh "$INSPECT" "$f" \
	    "$L/llama-f32" "$DATA/llama-sharded"
	grep_err "says why" "standard output: write error: No space left on device"
	# A pipe whose only reader is gone before anything is written
	# (a FIFO opened for reading and writing, then the reader closed).
	[ -p gone.fifo ] || mkfifo gone.fifo
	exec 4<> gone.fifo
	exec 5> gone.fifo
	exec 4<&-
	( trap '' PIPE; "$INSPECT" $f "$L/llama-f32" "$DATA/llama-sharded" \
	    >&5 2>"$T/err"; echo $? > pipe.st )
	exec 5>&-
	if [ "$(cat pipe.st)" -eq 1 ] && [ "$(wc -l < "$T/err")" -eq 1 ] &&
	    grep -q 'write error: Broken pipe' "$T/err"; then
		ok "dq-inspect $f, SIGPIPE ignored, reader gone: one line"
	else
		notok "dq-inspect $f, SIGPIPE ignored, reader gone: one line (exit $(cat pipe.st))"
		sed 's/^/#   /' "$T/err" | head -3
	fi
done
