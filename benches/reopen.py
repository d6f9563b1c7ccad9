#!/usr/bin/env python3
"""Start-to-ready time of two shiplogd builds side by side, after a clean stop and after kill -9.

Usage: python3 benches/reopen.py BEFORE_SHIPLOGD BEFORE_DIR AFTER_SHIPLOGD AFTER_DIR [RUNS]

Give each build its own copy of the same store (cp -r), since a build may leave files the
other reads differently (clean-close). Runs alternate between the builds; medians are printed.
"""
import statistics
import subprocess
import sys
import time


def start(binary, data_dir, stop):
    began = time.monotonic()
    process = subprocess.Popen(
        [binary, "--dir", data_dir, "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    ready = None
    for line in process.stderr:
        if "ready to accept connections" in line:
            ready = time.monotonic() - began
            break
    if stop == "clean stop":
        process.terminate()
    else:
        process.kill()
    process.wait()
    if ready is None:
        sys.exit(f"{binary} did not start on {data_dir}")
    return ready


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    builds = {"before": (sys.argv[1], sys.argv[2]), "after": (sys.argv[3], sys.argv[4])}
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 7
    for stop in ("clean stop", "kill -9"):
        times = {name: [] for name in builds}
        for binary, data_dir in builds.values():
            start(binary, data_dir, stop)  # so the measured opens follow this kind of stop
        for _ in range(runs):
            for name, (binary, data_dir) in builds.items():
                times[name].append(start(binary, data_dir, stop))
        for name, values in times.items():
            print(f"after a {stop}: {name} median {statistics.median(values):.3f} s "
                  f"({', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
