#!/usr/bin/env bash
# Render an HTML report (the Snakemake report or results/report/landing.html) to a PNG with headless
# Chromium, as a reader's browser would show its first screen.
#   bench/report_screenshot.sh results/report.html shot.png [1400,1000]
# Needs chromium (or chromium-browser / google-chrome) on PATH. --no-sandbox: containers often run as root.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]" >&2
    exit 2
fi
html=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1400,1000}
[[ -f "$html" ]] || { echo "$0: no such file: $1" >&2; exit 2; }
browser=""
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null; then browser=$name; break; fi
done
[[ -n "$browser" ]] || { echo "$0: no chromium on PATH (apt-get install chromium)" >&2; exit 3; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# virtual time lets the report's JavaScript (React) render before the shot is taken
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --virtual-time-budget=10000 --window-size="$size" --screenshot="$out" "file://$html" >/dev/null 2>&1
[[ -s "$out" ]] || { echo "$0: $browser wrote no screenshot to $out" >&2; exit 1; }
echo "$out"
