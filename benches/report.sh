#!/usr/bin/env bash
# Prints the criterion results of `cargo bench --bench ledger` as a Markdown table:
# median and mean time per iteration, and the median rate in elements (entries) per second
# where the benchmark declares a throughput. Needs jq. Run from the workspace root.
set -euo pipefail
dir="${CARGO_TARGET_DIR:-target}/criterion"
printf '| benchmark | median | mean | 95%% CI of the mean | median rate |\n|---|---|---|---|---|\n'
find "$dir" -path '*/new/benchmark.json' | sort -V | while read -r bench; do
  estimates="$(dirname "$bench")/estimates.json"
  [ -f "$estimates" ] || continue
  jq -r --slurpfile e "$estimates" '
    def t: if . >= 1e9 then "\(. / 1e9 * 1000 | round / 1000) s"
           elif . >= 1e6 then "\(. / 1e6 * 100 | round / 100) ms"
           elif . >= 1e3 then "\(. / 1e3 * 100 | round / 100) µs"
           else "\(. * 10 | round / 10) ns" end;
    def r: if . >= 1e6 then "\(. / 1e6 * 1000 | round / 1000) M/s"
           elif . >= 1e3 then "\(. / 1e3 * 10 | round / 10) k/s"
           else "\(. * 10 | round / 10) /s" end;
    $e[0] as $est
    | ($est.median.point_estimate) as $median
    | "| \(.full_id) | \($median | t) | \($est.mean.point_estimate | t) | \($est.mean.confidence_interval.lower_bound | t) – \($est.mean.confidence_interval.upper_bound | t) | "
      + (if .throughput.Elements then (.throughput.Elements * 1e9 / $median | r) else "" end) + " |"
  ' "$bench"
done
