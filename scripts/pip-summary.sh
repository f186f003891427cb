#!/usr/bin/env bash
# What a failed `pip install -v` says, without the noise: pip's own error (from its first ERROR line
# on, without the "WARNING: Location ... is ignored" lines that extra file:// indexes print), then
# each pin of the constraints file whose release needs another Python than the one pip installed for
# (pip's ResolutionImpossible does not say so; its -v output does).
# Usage: scripts/pip-summary.sh LOG [CONSTRAINTS]     (used by setup.sh and check-constraints.sh)
set -euo pipefail
log=$1
constraints=${2:-constraints.txt}
max=${PIP_SUMMARY_LINES:-60}

awk -v max="$max" '
  /^WARNING: Location .* is ignored/ || /Link requires a different Python/ { next }
  !on && /^[[:space:]]*(ERROR|error):/ { on = 1 }
  on && ++n <= max { print }
  END {
    if (n > max) printf "[... %d more lines]\n", n - max
    if (!on) print "[no ERROR line in the log; its last lines:]"
  }
' "$log"
# a failure without an ERROR line (killed, no space left, ...): its last lines
grep -qE '^[[:space:]]*(ERROR|error):' "$log" || { grep -vE '^WARNING: Location .* is ignored' "$log" || true; } | tail -n 15

[ -f "$constraints" ] || exit 0
# "  Link requires a different Python (3.11.2 not in: '>=3.11.5'): https://.../soupsieve-4.1.3-py3-none-any.whl (from ...)"
sed -n "s/.*Link requires a different Python (\([^ ]*\) not in: '\([^']*\)'): \([^ ]*\).*/\1|\2|\3/p" "$log" |
  awk -F'|' -v constraints="$constraints" '
    function norm(s) { s = tolower(s); gsub(/[-_.]+/, "-", s); return s }
    BEGIN {
      while ((getline line < constraints) > 0) {
        sub(/#.*/, "", line); sub(/;.*/, "", line); gsub(/[[:space:]]/, "", line)
        if (split(line, p, "==") != 2) continue
        sub(/\[.*/, "", p[1]); pins[norm(p[1])] = p[2]; names[norm(p[1])] = p[1]
      }
    }
    {
      file = $3; sub(/[#?].*/, "", file); sub(/.*\//, "", file)
      if (file ~ /\.whl$/) { split(file, f, "-"); name = f[1]; version = f[2] }
      else {
        sub(/\.(tar\.gz|tar\.bz2|tgz|zip)$/, "", file)
        if (!match(file, /-[^-]*$/)) next
        name = substr(file, 1, RSTART - 1); version = substr(file, RSTART + 1)
      }
      key = norm(name)
      if (pins[key] == version && !(key in seen)) {
        seen[key] = 1
        printf "%s pins %s==%s, which requires Python %s; this is Python %s\n", constraints, names[key], version, $2, $1
      }
    }'
