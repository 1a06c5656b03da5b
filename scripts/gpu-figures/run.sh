#!/bin/bash
# The device script of BENCHMARKS.md's "Vulkan on a real GPU": run on a lent GPU machine
# from the repository root, with `.gl/` holding the Vulkan loader's .deb files and
# `.gpu/` holding `lib/` (libhwloc.so.15 and libudev.so.1, for a machine without them),
# `vulkan-bench` (the `vulkan` bench binary, built here with
# `cargo bench --bench vulkan --no-run` and stripped), `vulkan-unit` and `vulkan-it` (optional: magpie-vulkan's
# unit-test and `tests/vulkan` binaries, from `cargo test -p magpie-vulkan --release --no-run`),
# `vulkan-tf-ops` (optional: the workspace's `tests/vulkan_tf_ops.rs`, every GPU kernel against
# the CPU's, NaN rules included, from `cargo test --release --test vulkan_tf_ops --no-run`) and this directory's `torch_figures.py`. Writes everything
# under $OUT (or ./gpu-out) and prints a summary last.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
# The bench links hwloc (the CPU backend's topology): carried in .gpu/lib where absent.
if ! ldconfig -p | grep -q 'libhwloc.so.15'; then
    export LD_LIBRARY_PATH=$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ] && ! ls /usr/share/vulkan/icd.d/*nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES=$icd
fi
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}; icds: $(ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null | tr '\n' ' ')"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/nvidia-smi.txt"
uptime | tee -a "$OUT/nvidia-smi.txt"

export RUST_LOG=${RUST_LOG:-magpie_vulkan=debug}
# The SM clock and power once a second while the figures run (appended to nvidia-smi.txt:
# at most 8 files come back), to show the warm-up brought the clocks up.
echo "# during the figures: time, clocks.sm, power.draw" >> "$OUT/nvidia-smi.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw --format=csv,noheader -l 1 >> "$OUT/nvidia-smi.txt" 2>&1 &
smi=$!
timeout 150 .gpu/vulkan-bench --figures > "$OUT/vulkan.jsonl" 2> "$OUT/vulkan.stderr"
echo "vulkan-bench exit $?"
kill "$smi" 2>/dev/null
wait "$smi" 2>/dev/null
grep -E '^[0-9]{4}/' "$OUT/nvidia-smi.txt" | awk -F', ' '{print $2}' | sort | uniq -c | sort -rn | head -5 | tr '\n' ';'; echo " (SM clock samples during the figures)"
for t in vulkan-unit vulkan-it vulkan-tf-ops; do
    if [ -x .gpu/$t ]; then
        # --show-output: a test that found no GPU says SKIPPED (and passes); counted here.
        timeout 60 .gpu/$t --test-threads 4 --show-output > "$OUT/$t.txt" 2>&1
        echo "$t exit $?; $(grep -E '^test result' "$OUT/$t.txt"); SKIPPED lines: $(grep -c SKIPPED "$OUT/$t.txt")"
        grep -E 'FAILED|panicked' "$OUT/$t.txt" | head -20
    fi
done
PYTHONUNBUFFERED=1 timeout 90 python3 .gpu/torch_figures.py > "$OUT/torch.jsonl" 2> "$OUT/torch.stderr"
echo "torch exit $?"
tail -5 "$OUT/vulkan.stderr"
tail -3 "$OUT/torch.stderr"
echo "=== vulkan"
cat "$OUT/vulkan.jsonl"
echo "=== torch"
cat "$OUT/torch.jsonl"
