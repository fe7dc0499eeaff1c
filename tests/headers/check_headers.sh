#!/usr/bin/env bash
# Compiles every public header on its own (a translation unit holding only its #include), with
# each given compiler, in C++17 and C++20, under the strict warning set engines use:
#   -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Werror
# Third-party headers (Eigen, Vulkan, nlohmann) come in through -isystem, so only moeroute's own
# warnings count. -fsyntax-only and one job per (header, compiler, standard) keep it fast.
#
# usage: check_headers.sh INCLUDE_DIR JOBS "ISYSTEM_DIRS" COMPILER...
set -uo pipefail
inc="$1"; jobs="$2"; isystem="$3"; shift 3
[ $# -ge 1 ] || { echo "check_headers: no compiler given" >&2; exit 2; }
flags=(-fsyntax-only -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Werror
       -I"$inc")
for d in $isystem; do flags+=(-isystem "$d"); done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mapfile -t headers < <(cd "$inc" && find moeroute -name '*.hpp' | LC_ALL=C sort)
[ ${#headers[@]} -gt 0 ] || { echo "check_headers: no headers under $inc" >&2; exit 2; }

# One line per compile: compiler, standard, header.
for cxx in "$@"; do
  command -v "$cxx" >/dev/null || { echo "check_headers: compiler not found: $cxx" >&2; exit 2; }
  for std in c++17 c++20; do
    for h in "${headers[@]}"; do printf '%s %s %s\n' "$cxx" "$std" "$h"; done
  done
done > "$work/jobs"

export work
compile_one() {
  local cxx="$1" std="$2" h="$3"
  local log="$work/$(printf '%s_%s_%s' "$(basename "$cxx")" "$std" "$h" | tr '/+' '__').log"
  shift 3
  if ! printf '#include "%s"\n' "$h" | "$cxx" -std="$std" "$@" -x c++ - >"$log" 2>&1; then
    echo "FAIL $cxx -std=$std $h"
    cat "$log"
    return 1
  fi
}
export -f compile_one

n=$(wc -l < "$work/jobs")
if xargs -P "$jobs" -L 1 bash -c 'compile_one "$0" "$1" "$2" "${@:3}"' \
     < <(while read -r cxx std h; do printf '%s %s %s %s\n' "$cxx" "$std" "$h" "${flags[*]}"; done < "$work/jobs"); then
  echo "check_headers: $n compiles (${#headers[@]} headers x $# compilers x C++17/20) passed"
else
  echo "check_headers: some of $n compiles failed (see above)"
  exit 1
fi
