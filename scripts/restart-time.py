#!/usr/bin/env python3
"""Time a ledger server's start: exec `BIN serve --data-dir DIR --listen 127.0.0.1:PORT [ARGS]`,
poll `BIN get` every 20 ms until it answers, print the seconds since exec and the server's VmRSS.
The server is left running (its pid is printed). Used for the restart rows of BENCHMARKS.md:

    converge-ledger serve --data-dir D ... & converge-ledger bench ... append --writers 16 &
    sleep 4; kill -9 $SERVER; scripts/restart-time.py target/release/converge-ledger D 50092
"""
import subprocess
import sys
import time

binp, data, port = sys.argv[1], sys.argv[2], sys.argv[3]
extra = sys.argv[4:]
url = f"http://127.0.0.1:{port}"
t0 = time.monotonic()
p = subprocess.Popen([binp, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"] + extra,
                     stdout=subprocess.DEVNULL, stderr=sys.stderr)
while True:
    r = subprocess.run([binp, "get", "--server", url, "--context", "restart-probe", "--limit", "1"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode == 0:
        break
    if p.poll() is not None:
        sys.exit(f"server exited with {p.returncode}")
    time.sleep(0.02)
t1 = time.monotonic()
with open(f"/proc/{p.pid}/status") as f:
    rss = next(line.split()[1] for line in f if line.startswith("VmRSS"))
print(f"first_get_s={t1 - t0:.3f} rss_kb={rss} pid={p.pid}", flush=True)
