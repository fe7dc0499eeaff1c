#!/usr/bin/env bash
# Compiles every public header on its own (a translation unit holding only its #include) with
# each given compiler in C++17, and all public headers together in one translation unit per
# compiler in C++20, under the strict warning set engines use:
#   -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Werror
# The C++17 pass proves each header self-contained; the C++20 pass sees every header's code
# under the newer standard (concept checks, C++20 deprecations) at the cost of one compile.
# Third-party headers (Eigen, Vulkan, nlohmann) come in through -isystem, so only moeroute's own
# warnings count. -fsyntax-only and one job per compile keep it fast.
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

# The C++20 pass's translation unit: every public header, in sorted order.
for h in "${headers[@]}"; do printf '#include "%s"\n' "$h"; done > "$work/all_headers.hpp"

# One line per compile: compiler, standard, header.
for cxx in "$@"; do
  command -v "$cxx" >/dev/null || { echo "check_headers: compiler not found: $cxx" >&2; exit 2; }
  for h in "${headers[@]}"; do printf '%s c++17 %s\n' "$cxx" "$h"; done
  printf '%s c++20 %s\n' "$cxx" "$work/all_headers.hpp"
done > "$work/jobs"

export work
compile_one() {
  local cxx="$1" std="$2" h="$3"
  local log="$work/$(printf '%s_%s_%s' "$(basename "$cxx")" "$std" "${h#"$work"/}" | tr '/+' '__').log"
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
  echo "check_headers: $n compiles (${#headers[@]} headers alone in C++17 + all together in C++20, x $# compilers) passed"
else
  echo "check_headers: some of $n compiles failed (see above)"
  exit 1
fi
