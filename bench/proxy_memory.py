#!/usr/bin/env python3
"""gantry-proxy's memory holding a large configuration, with nothing else
running: gantry-cp on SQLite takes the data-plane benchmark's N-route
document (`routes_document`, default 10,000 routes), one gantry-proxy
follows it, and the proxy's RSS and peak RSS are printed once it has
applied the routes and settled.

    cargo build --release -p gantry-cp -p gantry-proxy
    bench/proxy_memory.py [--routes 10000] [--settle 12] [--bin-dir target/release] [--dump]

With --dump, /config_dump is then fetched once: its time, size, and the
proxy's RSS after it (rendered on request; nothing should stay).

Uses ports 19400-19405; stops only what it started."""
import argparse, json, os, shutil, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dataplane import routes_document  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN, XDS, HTTP, HTTPS, PROXY_ADMIN = 19400, 19401, 19402, 19403, 19405


def get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"null")


def until(what, f, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if f():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"proxy_memory: {what} did not happen within {timeout} s")


def status_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--settle", type=float, default=12, help="seconds after the routes are live")
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--dump", action="store_true", help="then fetch /config_dump and report its cost")
    ap.add_argument("--wrap", default="", help="run the proxy under this command, e.g. 'heaptrack -o /tmp/proxy'")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="gantry-proxy-memory-")
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("GANTRY_KEYRING", None)
    procs = []
    try:
        cp = subprocess.Popen([os.path.join(args.bin_dir, "gantry-cp"),
                               "--database-url", f"sqlite://{work}/gantry.db",
                               "--admin-listen", f"127.0.0.1:{ADMIN}", "--xds-listen", f"127.0.0.1:{XDS}",
                               "--proxy-http-port", str(HTTP), "--proxy-https-port", str(HTTPS)],
                              # Its default keyring is created in its working directory.
                              cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(f"{work}/cp.log", "w"))
        procs.append(cp)
        until("gantry-cp start", lambda: get(f"http://127.0.0.1:{ADMIN}/status"))
        t = time.time()
        rev = post_json(f"http://127.0.0.1:{ADMIN}/config",
                        routes_document(args.routes, "http://127.0.0.1:9"))["revision"]
        print(f"config of {args.routes} routes committed as revision {rev} in {time.time() - t:.1f} s")
        proxy = subprocess.Popen(args.wrap.split() + [os.path.join(args.bin_dir, "gantry-proxy"),
                                  "--xds-address", f"http://127.0.0.1:{XDS}", "--node-id", "memory",
                                  "--admin-listen", f"127.0.0.1:{PROXY_ADMIN}", "--workers", "1"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/proxy.log", "w"))
        procs.append(proxy)
        t = time.time()
        until("the routes to reach the proxy",
              lambda: json.loads(get(f"http://127.0.0.1:{ADMIN}/fleet/memory"))["revision"] == rev)
        print(f"gantry-proxy synced in {time.time() - t:.1f} s; settling {args.settle:.0f} s")
        time.sleep(args.settle)
        m = status_kib(proxy.pid)
        print(f"gantry-proxy RSS {m['VmRSS'] / 1024:.0f} MiB (peak {m['VmHWM'] / 1024:.0f} MiB) "
              f"holding {args.routes} routes")
        if args.dump:
            t = time.time()
            body = get(f"http://127.0.0.1:{PROXY_ADMIN}/config_dump", timeout=600)
            took = time.time() - t
            json.loads(body)
            time.sleep(args.settle)
            after = status_kib(proxy.pid)
            print(f"/config_dump: {len(body) / 1048576:.1f} MiB of JSON in {took:.2f} s; "
                  f"RSS {after['VmRSS'] / 1024:.0f} MiB {args.settle:.0f} s later "
                  f"(peak {after['VmHWM'] / 1024:.0f} MiB)")
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
