#!/usr/bin/env python3
"""Benchmark of hot reload: save a file in a 1,000-rule / 100-file folder and
time until the daemon runs the new version (polling /v1/status every 2 ms).
Prints median and p99 over RUNS saves. Usage: bench/reload.py DEALFLOW CORPUS"""
import json, os, statistics, subprocess, sys, tempfile, time, urllib.request

binary, corpus = sys.argv[1], sys.argv[2]
runs = int(os.environ.get("RUNS", "40"))
data = tempfile.mkdtemp()
daemon = subprocess.Popen([binary, "run", "--workflows", corpus, "--data", data, "--listen", "127.0.0.1:0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
url = daemon.stdout.readline().strip().removeprefix("dealflow listening on ")

def version():
    with urllib.request.urlopen(url + "/v1/status") as r:
        return json.load(r)["version"]

files = sorted(os.path.join(root, f) for root, _, names in os.walk(corpus) for f in names if f.endswith(".yaml"))
times = []
try:
    for i in range(runs):
        before = version()
        path = files[i % len(files)]
        with open(path, "a") as f:
            f.write(f"\n# save {i}\n")
        start = time.perf_counter()
        while version() == before:
            time.sleep(0.002)
        times.append((time.perf_counter() - start) * 1000)
        time.sleep(0.3)
finally:
    daemon.terminate()
    daemon.wait()
times.sort()
p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
print(f"reload: files={len(files)} runs={runs} median={statistics.median(times):.0f} ms "
      f"p99={p99:.0f} ms min={times[0]:.0f} ms max={times[-1]:.0f} ms (debounce 100 ms)")
