#!/usr/bin/env bash
# Check a built Linux bundle as a user's machine runs it: unpacked outside the source tree, with a
# bare environment (no venv, no PYTHONPATH, HOME in a temporary folder).
#   packaging/smoke_test.sh [dist/mixtral-desk-VERSION-linux-ARCH.tar.gz | dist/mixtral-desk]
# 1. mixtral-desk --self-test (tiny GGUF through the frozen engine process and the store);
# 2. a 10-second start of the window on Qt's offscreen platform: it must still be running when
#    `timeout` stops it, with no traceback;
# 3. start-up time to the window's first paint (--exit-after-paint), best and median of 3;
# and prints the bundle's size. Run as root (CI), steps 1 and 2 run in a private mount namespace in
# which the source tree and the Python installation that built the bundle are hidden (empty), so
# that nothing can be loaded from them. Exit code 0 when all passed.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${1:-dist/mixtral-desk}
target=$(cd "$(dirname "$target")" && pwd)/$(basename "$target")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mixtral-desk-smoke-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
if [ -f "$target" ]; then
    tar xzf "$target"
    echo "== tarball: $(( $(stat -c %s "$target") / 1000000 )) MB; unpacked into $tmp"
else
    cp -a "$target" "$tmp/mixtral-desk"
fi
bundle=$tmp/mixtral-desk
exe=$bundle/mixtral-desk
echo "== bundle: $(du -sm "$bundle" | cut -f1) MB, $(find "$bundle" -type f | wc -l) files"
clean=(env -i "HOME=$tmp" "PATH=/usr/bin:/bin")

# Hide the source tree and the build's Python (pyenv, a venv's base) where we may (root).
isolate=()
{
    echo "$repo"
    prefix=$(python3 -c 'import sys; print(sys.base_prefix)' 2>/dev/null || true)
    case $prefix in ""|/usr|/usr/local) ;; *) echo "$prefix" ;; esac
} >"$tmp/hide.list"
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
    cat >"$tmp/isolate.sh" <<'EOS'
#!/bin/sh
list=$1; shift
while IFS= read -r dir; do [ -d "$dir" ] && mount -t tmpfs none "$dir"; done <"$list"
exec "$@"
EOS
    isolate=(unshare -m sh "$tmp/isolate.sh" "$tmp/hide.list")
    echo "== hidden while the bundle runs: $(tr '\n' ' ' <"$tmp/hide.list")"
fi

echo "== --self-test (clean environment, cwd $tmp)"
started=$EPOCHREALTIME
"${isolate[@]}" "${clean[@]}" "$exe" --self-test
echo "   ($(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $started}") s)"

echo "== the Chinese catalog travels in the bundle (compiled by the build)"
find "$bundle" -path '*zh_CN/LC_MESSAGES/mixtral_desk.mo' | grep -q . \
    || { echo "FAILED: no compiled zh_CN catalog in the bundle" >&2; exit 1; }
find "$bundle" -name 'qtbase_zh_CN.qm' | grep -q . \
    || { echo "FAILED: Qt's own zh_CN catalog is missing from the bundle" >&2; exit 1; }

echo "== 10-second offscreen start"
set +e
"${isolate[@]}" "${clean[@]}" QT_QPA_PLATFORM=offscreen "MIXTRAL_DESK_HOME=$tmp/home" \
    timeout 10 "$exe" >"$tmp/start.log" 2>&1
status=$?
set -e
if [ "$status" -ne 124 ] || grep -q "Traceback" "$tmp/start.log"; then
    echo "FAILED: the app exited with $status before 10 s (124 = still running, expected):" >&2
    cat "$tmp/start.log" >&2
    exit 1
fi
echo "   still running after 10 s; stopped by timeout (output: $(wc -l <"$tmp/start.log") lines)"

echo "== start-up time to first paint (offscreen)"
times=()
for run in 1 2 3; do
    rm -rf "$tmp/home"
    started=$EPOCHREALTIME
    painted=""
    while IFS= read -r line; do
        if [[ $line == first-paint* ]]; then
            painted=$(awk "BEGIN{printf \"%.2f\", $EPOCHREALTIME - $started}")
        fi
    done < <("${clean[@]}" QT_QPA_PLATFORM=offscreen "MIXTRAL_DESK_HOME=$tmp/home" \
                 timeout 30 "$exe" --exit-after-paint 2>&1)
    if [ -z "$painted" ]; then
        echo "FAILED: no first-paint line from 'mixtral-desk --exit-after-paint' (run $run)" >&2
        exit 1
    fi
    times+=("$painted")
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "   runs: ${times[*]} s; best $(head -1 <<<"$sorted") s, median $(sed -n 2p <<<"$sorted") s"
echo "smoke test passed"
