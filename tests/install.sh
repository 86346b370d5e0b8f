#!/bin/sh
# `cmake --install` into a scratch prefix: digits runs from PREFIX/bin, the man page made from
# the help texts holds every command's options and renders without warnings, and the bash
# completion completes commands and options.   usage: tests/install.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
source=$2
scratch=$(mktemp -d "${TMPDIR:-/tmp}/digits-install.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$scratch/prefix" >"$scratch/install.log" 2>&1 ||
  { cat "$scratch/install.log"; fail "cmake --install failed"; }
bin=$scratch/prefix/bin/digits
man=$scratch/prefix/share/man/man1/digits.1
completion=$scratch/prefix/share/bash-completion/completions/digits
for f in "$bin" "$man" "$completion"; do [ -f "$f" ] || fail "$f not installed"; done
[ -x "$bin" ] || fail "$bin is not executable"

# on the PATH, the installed executable is the one that runs
version=$(PATH="$scratch/prefix/bin:$PATH" digits --version)
[ "$version" = "$("$build/digits" --version)" ] || fail "installed digits says '$version'"

# the man page: a section per command of `digits --help`, each with its options
commands=$("$bin" --help | sed -n '/^commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p')
[ "$(echo "$commands" | wc -l)" -ge 10 ] || fail "digits --help lists: $commands"
for c in $commands; do
  grep -qx ".SS $c" "$man" || fail "the man page has no section for $c"
  for option in $("$bin" "$c" --help | grep -oE '^ +(-[a-zA-Z], )?--[a-z][a-z-]*' |
                  grep -oE -- '--[a-z][a-z-]*'); do
    grep -q -- "$option" "$man" || fail "the man page lacks $c's $option"
  done
done
grep -q '^\.TH DIGITS 1 .*"digits ' "$man" || fail "no .TH line naming the version"
if command -v man >/dev/null 2>&1 && command -v groff >/dev/null 2>&1; then
  warnings=$(MANWIDTH=100 man --warnings -l "$man" 2>&1 >/dev/null || true)
  [ -z "$warnings" ] || fail "man warns: $warnings"
  MANWIDTH=100 man -l "$man" 2>/dev/null | grep -q -- "--epochs N" ||
    fail "the rendered page lacks train's --epochs"
else
  echo "SKIP: rendering the man page (man or groff not installed)"
fi

# the completion, through the installed digits
complete_words() {
  PATH="$scratch/prefix/bin:$PATH" bash -c '
    . "$1"; shift
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _digits
    printf "%s\n" "${COMPREPLY[@]}"' sh "$completion" "$@"
}
[ "$(complete_words digits tr)" = train ] || fail "'digits tr' completes to '$(complete_words digits tr)'"
[ "$(complete_words digits che)" = check-data ] || fail "'digits che' completes wrongly"
[ "$(complete_words digits train --epo)" = --epochs ] || fail "'train --epo' completes wrongly"
complete_words digits predict - | grep -qx -- -m || fail "'predict -' does not offer -m"
complete_words digits predict - | grep -qx -- --probs || fail "'predict -' does not offer --probs"
[ "$(complete_words digits help rep)" = report ] || fail "'help rep' completes wrongly"
echo "ok: installed bin/digits ($version), man1/digits.1 ($(echo $commands | wc -w) commands), the bash completion"
