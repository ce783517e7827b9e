#!/usr/bin/env python3
"""Data-plane benchmark: gantry-proxy against Envoy, nginx and no proxy.

Run through bench/dataplane.sh, which installs wrk, nginx and Envoy and
builds the binaries first. Every target runs interleaved (direct, gantry,
envoy, nginx, direct, ...) for several rounds per scenario, each proxy with
one worker pinned to one core, the load generator and the upstream on the
other. Prints a markdown table per scenario: median req/s, p50, p99, RSS
after the run, and each ratio to "direct".
"""

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Fixed local ports, checked free at start.
PORTS = {
    "upstream": 19180,
    "upstream_tls": 19181,
    "nginx": 19182,
    "nginx_tls": 19183,
    "cp_admin": 19101,
    "cp_xds": 19118,
    "listener_http": 19200,  # Envoy binds the listeners as configured
    "listener_https": 19201,
    "envoy_admin": 19190,
    "gantry_admin": 19191,
    # Scenarios 3 and 4: a separate Envoy on a static bootstrap.
    "envoy_static": 19202,
    "envoy_static_admin": 19192,
}
GANTRY_OFFSET = 100  # gantry-proxy binds listener ports + this


def log(*a):
    print("dataplane:", *a, file=sys.stderr, flush=True)


def port_free(p):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", p))
            return True
        except OSError:
            return False


def wait_port(p, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", p)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {p} never opened")


def http(method, url, body=None, headers=None, timeout=30):
    st, _, out = http_full(method, url, body, headers, timeout)
    return st, out


def http_full(method, url, body=None, headers=None, timeout=30):
    """(status, response headers with lower-case names, body); status 0 when
    nothing answered."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        return 0, {}, str(e).encode()


class Procs:
    """The processes this harness started; only these are stopped."""

    def __init__(self):
        self.procs = {}

    def start(self, name, argv, cpu, log_path, env=None):
        if cpu is not None:
            argv = ["taskset", "-c", cpu] + argv
        f = open(log_path, "ab")
        p = subprocess.Popen(
            argv, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.procs[name] = p
        return p

    def pid(self, name):
        return self.procs[name].pid

    def alive(self, name):
        return self.procs[name].poll() is None

    def stop(self, name):
        """Stop one of this harness's processes (its process group)."""
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()

    def stop_all(self):
        for name, p in self.procs.items():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def process_tree(pid):
    """A process and its descendants (nginx: master + worker), found by
    parent pid in /proc."""
    parents = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                # The command name may hold spaces: the ppid follows the ")".
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(d))
    pids, i = [pid], 0
    while i < len(pids):
        pids += parents.get(pids[i], [])
        i += 1
    return pids


def pin_tree(pid, cpu):
    """Move a running process, its threads and its children to `cpu`, and
    check they moved: a "one core" row that silently measured the split
    layout would be worse than none."""
    want = {int(cpu)}
    for p in process_tree(pid):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{p}/task")]
        except OSError:
            continue
        for t in tids:
            try:
                os.sched_setaffinity(t, want)
            except ProcessLookupError:
                pass  # a thread that ended meanwhile
        try:
            if os.sched_getaffinity(p) != want:
                raise SystemExit(f"could not move pid {p} to CPU {cpu}")
        except ProcessLookupError:
            pass


def rss_kib(pid):
    """RSS of a process and its descendants (nginx: master + worker)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def nginx_conf(d, kind, cert, key):
    """`upstream`: the origin server; `proxy`: a plain reverse proxy to it."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    if kind == "upstream":
        locations = f"""
        location = /1m {{ root {d}/www; }}
        location / {{ return 200 "hello from the upstream\\n"; }}"""
        http_port, tls_port = PORTS["upstream"], PORTS["upstream_tls"]
        upstream_block = ""
    else:
        locations = """
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_max_temp_file_size 0;
        }"""
        http_port, tls_port = PORTS["nginx"], PORTS["nginx_tls"]
        upstream_block = f"""
    upstream origin {{
        server 127.0.0.1:{PORTS["upstream"]};
        keepalive 64;
    }}"""
    return f"""{user}worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
{upstream_block}
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        {locations}
    }}
}}
"""


def envoy_binary():
    venv = os.path.join(ROOT, ".venv-envoy")
    libs = os.path.join(venv, "lib")
    if os.path.isdir(libs):
        for d in os.listdir(libs):
            real = os.path.join(libs, d, "site-packages", "envoy", "_bin", "envoy")
            if os.path.exists(real):
                return real
    return os.path.join(venv, "bin", "envoy")


def envoy_bootstrap(path):
    src = open(os.path.join(ROOT, "deploy/envoy/bootstrap-delta-ads.yaml")).read()
    for a, b in [
        ("  id: envoy-1\n", "  id: bench-envoy\n"),
        ("port_value: 18000\n", f"port_value: {PORTS['cp_xds']}\n"),
        ("port_value: 9901\n", f"port_value: {PORTS['envoy_admin']}\n"),
    ]:
        assert src.count(a) == 1, a
        src = src.replace(a, b)
    open(path, "w").write(src)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*argv, stdin=None):
    r = subprocess.run(["openssl", *argv], input=stdin, capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"openssl {' '.join(argv)}: {r.stderr.decode(errors='replace')}")
    return r.stdout


def rsa_key_pair(d):
    """Scenario 3's RSA key pair, as PEM files in `d`: (private, public)."""
    priv, pub = os.path.join(d, "jwt-private.pem"), os.path.join(d, "jwt-public.pem")
    openssl("genrsa", "-out", priv, "2048")
    openssl("rsa", "-in", priv, "-pubout", "-out", pub)
    return priv, pub


def sign_rs256(priv, pub, claims):
    """A compact RS256 JWT (RSASSA-PKCS1-v1_5 with SHA-256, which is what
    `openssl dgst -sha256 -sign` makes with an RSA key), checked against the
    public key before use."""
    header = {"alg": "RS256", "typ": "JWT"}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    sig = openssl("dgst", "-sha256", "-sign", priv, stdin=signing_input.encode())
    sig_file = priv + ".sig"
    with open(sig_file, "wb") as f:
        f.write(sig)
    openssl("dgst", "-sha256", "-verify", pub, "-signature", sig_file, stdin=signing_input.encode())
    return f"{signing_input}.{b64url(sig)}"


def rsa_jwk(pub, kid):
    """The public key as a JWK: `n` from `openssl rsa -modulus`, `e` from
    `openssl rsa -text` (big-endian, base64url, no padding, as RFC 7518)."""
    modulus = openssl("rsa", "-pubin", "-in", pub, "-noout", "-modulus").decode().strip()
    if not modulus.startswith("Modulus="):
        raise SystemExit(f"unexpected openssl -modulus output: {modulus[:80]!r}")
    n = int(modulus.split("=", 1)[1], 16)
    text = openssl("rsa", "-pubin", "-in", pub, "-noout", "-text").decode()
    m = re.search(r"Exponent:\s*(\d+)", text)
    if not m:
        raise SystemExit(f"no exponent in openssl -text output:\n{text}")
    e = int(m.group(1))

    def uint(v):
        return b64url(v.to_bytes((v.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": uint(n), "e": uint(e)}


# Envoy's native filters for scenarios 3 and 4 (field names from the v3 API:
# envoy.extensions.filters.http.{api_key_auth,jwt_authn,local_ratelimit}.v3).
def envoy_api_key_auth(key, client):
    return {
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": [{"key": key, "client": client}],
            "key_sources": [{"header": "apikey"}],
            # Kong sends the consumer upstream; the closest Envoy has.
            "forwarding": {"header": "x-consumer-username"},
        },
    }


def envoy_jwt_authn(issuer, jwk):
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "bench": {
                    "issuer": issuer,
                    "local_jwks": {"inline_string": json.dumps({"keys": [jwk]})},
                    # Kong forwards the token upstream; Envoy strips it by default.
                    "forward": True,
                    # gantry-proxy caches verified tokens (64k, docs/plugins.md);
                    # Envoy's cache is off unless configured.
                    "jwt_cache_config": {"jwt_cache_size": 65536},
                    # The token comes from Envoy's default place,
                    # `Authorization: Bearer`, as Kong's jwt default.
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def envoy_local_ratelimit():
    """One token bucket too big to empty (the benchmark's limit is never hit),
    with rate-limit response headers as gantry-proxy sends Kong's."""
    all_of_it = {"numerator": 100, "denominator": "HUNDRED"}
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench_ratelimit",
            "token_bucket": {
                "max_tokens": 4294967295,
                "tokens_per_fill": 4294967295,
                "fill_interval": "1s",
            },
            "filter_enabled": {"runtime_key": "bench_ratelimit_enabled", "default_value": all_of_it},
            "filter_enforced": {"runtime_key": "bench_ratelimit_enforced", "default_value": all_of_it},
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        },
    }


def envoy_static_bootstrap(path, http_filters):
    """A static Envoy bootstrap (JSON): one listener like the ADS Envoy's, the
    given HTTP filters then the router, one route to the origin cluster
    (upstream HTTP/1.1 connections are pooled: keep-alive), no access log."""
    def addr(port):
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "http",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "route_config": {
            "name": "bench",
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "origin"}}],
            }],
        },
        "http_filters": http_filters + [{
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }],
    }
    # As gantry-cp sets them for the ADS Envoy's clusters.
    limits = {"priority": "DEFAULT", "max_connections": 100000, "max_pending_requests": 100000,
              "max_requests": 100000, "max_retries": 1000}
    doc = {
        "node": {"id": "bench-envoy-static", "cluster": "bench"},
        "static_resources": {
            "listeners": [{
                "name": "http",
                "address": addr(PORTS["envoy_static"]),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": [{
                "name": "origin",
                "type": "STATIC",
                "connect_timeout": "60s",
                "circuit_breakers": {"thresholds": [limits]},
                "load_assignment": {
                    "cluster_name": "origin",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(PORTS["upstream"])}}]}],
                },
            }],
        },
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 50000,
            },
        }]},
        "admin": {"address": addr(PORTS["envoy_static_admin"])},
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def redis_ping():
    try:
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"],
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.stdout.strip() == "PONG"


def ensure_redis():
    """Scenario 4 counts in Redis on 127.0.0.1:6379: start it if it is down."""
    if redis_ping():
        return
    log("Redis does not answer on 127.0.0.1:6379; starting it with scripts/services.sh")
    subprocess.run([os.path.join(ROOT, "scripts", "services.sh")], stdout=sys.stderr)
    if not redis_ping():
        raise SystemExit("Redis is not up on 127.0.0.1:6379 (needed by scenario 4); see scripts/services.sh")


def parse_duration(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)", s)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url, duration, conns, cpu, host=None, headers=None):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency"]
    if host:
        argv += ["-H", f"Host: {host}"]
    for k, v in (headers or {}).items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(url)
    if cpu is not None:
        argv = ["taskset", "-c", cpu] + argv
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": parse_duration(p50.group(1)) if p50 else None,
        "p99": parse_duration(p99.group(1)) if p99 else None,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": errors.group(0) if errors else "",
        "raw": out,
    }


def routes_document(n, upstream):
    """`n` routes over 1,000 services, mixed prefix / regex / host (20
    distinct hosts), as a Kong declarative document.

    The hosts are few on purpose: a route without hosts must be reachable
    from every virtual host, so the translator copies it into each one and
    RDS grows with hosts x host-less routes (see docs/benchmarks.md)."""
    services = []
    per = max(1, n // 1000)
    k = 0
    for s in range(min(1000, n)):
        routes = []
        for _ in range(per):
            if k >= n:
                break
            kind = k % 3
            r = {"name": f"r{k}"}
            if kind == 0:
                r["paths"] = [f"/api/v1/prefix{k}"]
            elif kind == 1:
                r["paths"] = [f"~/api/v1/re{k}/[0-9]+$"]
            else:
                r["paths"] = [f"/h{k}"]
                r["hosts"] = [f"host{k % 20}.example.com"]
            routes.append(r)
            k += 1
        services.append({"name": f"s{s}", "url": upstream, "routes": routes})
    return {"_format_version": "3.0", "services": services}


def fmt_ms(v):
    if v is None:
        return "—"
    return f"{v * 1000:.0f} µs" if v < 1 else f"{v:.2f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--rate-tool", default=None, help="gantry-bench binary for fixed-rate latency")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--perf", default="", help="profile this target (e.g. gantry-proxy) with perf record during its runs; report written to bench-perf-<scenario>.txt")
    ap.add_argument("--gantry-arg", action="append", default=[],
                    help="one more argument for gantry-proxy (repeat), e.g. --gantry-arg=--access-log=/tmp/a.log")
    ap.add_argument("--only", default="", help="comma-separated scenario numbers, e.g. 1,5")
    args = ap.parse_args()

    ncpu = os.cpu_count() or 1
    proxy_cpu, load_cpu = ("0", "1") if ncpu >= 2 else (None, None)
    for name, p in PORTS.items():
        for q in (p, p + GANTRY_OFFSET) if name.startswith("listener") else (p,):
            if not port_free(q):
                raise SystemExit(f"port {q} ({name}) is in use; stop what holds it")

    work = tempfile.mkdtemp(prefix="gantry-bench-")
    procs = Procs()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        return run(args, work, procs, proxy_cpu, load_cpu)
    finally:
        procs.stop_all()
        if not os.environ.get("GANTRY_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def run(args, work, procs, proxy_cpu, load_cpu):
    # TLS material for scenario 6: one self-signed certificate for "localhost".
    cert, key = os.path.join(work, "tls.crt"), os.path.join(work, "tls.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    os.makedirs(os.path.join(work, "www"))
    with open(os.path.join(work, "www", "1m"), "wb") as f:
        f.write(os.urandom(1024 * 1024))

    # The origin: nginx on the load generator's core.
    for kind in ("upstream", "proxy"):
        d = os.path.join(work, f"nginx-{kind}")
        os.makedirs(d)
        if kind == "upstream":
            os.symlink(os.path.join(work, "www"), os.path.join(d, "www"))
        conf = os.path.join(d, "nginx.conf")
        open(conf, "w").write(nginx_conf(d, kind, cert, key))
        cpu = load_cpu if kind == "upstream" else proxy_cpu
        procs.start(f"nginx-{kind}", ["nginx", "-p", d, "-c", conf], cpu, os.path.join(d, "out.log"))
    wait_port(PORTS["upstream"])
    wait_port(PORTS["nginx"])

    # The control plane, on the load generator's core (it is idle while
    # traffic flows).
    cp_log = os.path.join(work, "cp.log")
    procs.start(
        "cp",
        [os.path.join(args.bin_dir, "gantry-cp"), "run",
         "--database-url", f"sqlite://{work}/bench.db",
         "--admin-listen", f"127.0.0.1:{PORTS['cp_admin']}",
         "--xds-listen", f"127.0.0.1:{PORTS['cp_xds']}",
         "--proxy-listen-address", "127.0.0.1",
         "--proxy-http-port", str(PORTS["listener_http"]),
         "--proxy-https-port", str(PORTS["listener_https"])],
        load_cpu, cp_log,
    )
    wait_port(PORTS["cp_admin"])
    admin = f"http://127.0.0.1:{PORTS['cp_admin']}"

    bootstrap = os.path.join(work, "envoy.yaml")
    envoy_bootstrap(bootstrap)
    procs.start(
        "envoy",
        [envoy_binary(), "-c", bootstrap, "--concurrency", "1", "--log-level", "warn",
         "--disable-hot-restart"],
        proxy_cpu, os.path.join(work, "envoy.log"),
    )
    procs.start(
        "gantry",
        [os.path.join(args.bin_dir, "gantry-proxy"), "--workers", "1",
         "--xds-address", f"http://127.0.0.1:{PORTS['cp_xds']}",
         "--node-id", "bench-gantry",
         "--admin-listen", f"127.0.0.1:{PORTS['gantry_admin']}",
         "--port-offset", str(GANTRY_OFFSET)] + args.gantry_arg,
        proxy_cpu, os.path.join(work, "gantry.log"),
        env={**os.environ, "RUST_LOG": "warn"},
    )

    hp, sp = PORTS["listener_http"], PORTS["listener_https"]
    base = {
        "direct": (f"http://127.0.0.1:{PORTS['upstream']}", f"https://localhost:{PORTS['upstream_tls']}", None),
        "gantry-proxy": (f"http://127.0.0.1:{hp + GANTRY_OFFSET}", f"https://localhost:{sp + GANTRY_OFFSET}", "gantry"),
        "envoy": (f"http://127.0.0.1:{hp}", f"https://localhost:{sp}", "envoy"),
        "nginx": (f"http://127.0.0.1:{PORTS['nginx']}", f"https://localhost:{PORTS['nginx_tls']}", "nginx-proxy"),
    }
    origin = f"http://127.0.0.1:{PORTS['upstream']}"

    def configure(doc):
        st, body = http("POST", f"{admin}/config", doc, timeout=300)
        if st not in (200, 201):
            raise SystemExit(f"POST /config: {st} {body[:500]!r}")
        return json.loads(body)

    def wait_serving(path, host=None, tls=False):
        hdrs = {"Host": host} if host else {}
        for name in ("gantry-proxy", "envoy"):
            url = base[name][1 if tls else 0] + path
            deadline = time.time() + 120
            while True:
                if tls:
                    r = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", url],
                                       capture_output=True, text=True)
                    st = int(r.stdout or 0)
                else:
                    st, _ = http("GET", url, headers=hdrs, timeout=5)
                if st == 200:
                    break
                if time.time() > deadline:
                    raise SystemExit(f"{name} never served {url} (last status {st}); logs in {work}")
                time.sleep(0.1)

    plain_doc = {
        "_format_version": "3.0",
        "services": [{"name": "bench", "url": origin, "routes": [{"name": "all", "paths": ["/"]}]}],
        "certificates": [{"cert": open(cert).read(), "key": open(key).read(), "snis": [{"name": "localhost"}]}],
    }
    big = routes_document(args.routes, origin)
    mid = args.routes // 2
    mid -= mid % 3  # a prefix route
    mid_path = f"/api/v1/prefix{mid}"

    # Scenarios 3 and 4: plugins on gantry-proxy through the admin API,
    # a static Envoy with Envoy's native filters, credentials on every request.
    gantry_url = base["gantry-proxy"][0] + "/"
    static_url = f"http://127.0.0.1:{PORTS['envoy_static']}/"
    rl_gantry, rl_envoy = "x-ratelimit-remaining-minute", "x-ratelimit-remaining"

    def admin_message(body):
        try:
            return json.loads(body)["message"]
        except (ValueError, KeyError, TypeError):
            return body[:300].decode(errors="replace")

    def admin_write(path, body, refusable=False):
        """POST to the admin API: (status, body, revision). Anything but 201
        stops the harness, except a 400 when `refusable`."""
        st, hdrs, out = http_full("POST", f"{admin}{path}", body)
        if st in (200, 201):
            return st, out, int(hdrs.get("x-gantry-revision") or 0)
        if refusable and st == 400:
            return st, out, 0
        raise SystemExit(f"POST {path}: {st} {out[:500]!r}")

    def auth_problem(label, url, creds, rl_header=None, expect_401=True):
        """None when `url` answers 200 with the credentials (carrying the
        rate-limit header `rl_header`, proof that rate limiting ran) and,
        when `expect_401`, 401 without them; else what is wrong."""
        st, hdrs, body = http_full("GET", url, headers=creds, timeout=5)
        if st != 200:
            return (f"{label} answered {st} to a request with credentials: "
                    f"{body[:200].decode(errors='replace')}")
        if rl_header and rl_header not in hdrs:
            return f"{label} answered 200 without a {rl_header} header: rate limiting did not run"
        if expect_401:
            st, _, body = http_full("GET", url, timeout=5)
            if st != 401:
                return f"{label} answered {st}, not 401, to a request without credentials"
        return None

    def gantry_state(rev):
        """gantry-proxy's state at `rev` or later, from gantry-cp's fleet
        view: ("NACKED", reasons), ("SYNCED", None) or (None, None)."""
        st, _, body = http_full("GET", f"{admin}/fleet/bench-gantry", timeout=5)
        try:
            node = json.loads(body) if st == 200 else {}
        except ValueError:
            node = {}
        if (node.get("target_revision") or 0) < rev:
            return None, None
        if node.get("state") == "NACKED":
            errs = [t["last_nack"]["error"] for t in (node.get("types") or {}).values()
                    if t.get("state") == "NACKED" and t.get("last_nack")]
            return "NACKED", "; ".join(errs) or "no reason given"
        return node.get("state"), None

    def wait_gantry_plugins(rev, creds, timeout=60, url=None):
        """None once gantry-proxy enforces the plugins written up to `rev`
        (at `url`, the root by default); else why not (a NACK, or what it
        answers)."""
        deadline = time.time() + timeout
        synced_at = nacked_at = None
        while True:
            why = auth_problem("gantry-proxy", url or gantry_url, creds, rl_gantry)
            if why is None:
                return None
            state, nack = gantry_state(rev)
            if state == "NACKED":
                if nacked_at is None:
                    log(f"  gantry-proxy NACKed revision {rev} or later; waiting 5 s for a later one: {nack}")
                nacked_at = nacked_at or time.time()
                if time.time() - nacked_at > 5:
                    return f"gantry-proxy refused the configuration (NACK at /fleet): {nack}"
            else:
                nacked_at = None
            if state == "SYNCED":
                synced_at = synced_at or time.time()
                if time.time() - synced_at > 3:
                    return f"{why} (configuration ACKed)"
            if time.time() > deadline:
                return f"{why} (after {timeout} s)"
            time.sleep(0.2)

    def start_static_envoy(tag, http_filters, creds):
        """Validate, start and check the static Envoy of scenario `tag`."""
        path = os.path.join(work, f"envoy-static-{tag}.json")
        envoy_static_bootstrap(path, http_filters)
        v = subprocess.run([envoy_binary(), "--mode", "validate", "-c", path, "--log-level", "warn"],
                           capture_output=True, text=True)
        if v.returncode != 0:
            raise SystemExit(f"envoy --mode validate refused {path}:\n{v.stdout}{v.stderr}")
        log_path = os.path.join(work, f"envoy-static-{tag}.log")
        procs.start(
            "envoy-static",
            [envoy_binary(), "-c", path, "--concurrency", "1", "--log-level", "warn",
             "--disable-hot-restart"],
            proxy_cpu, log_path,
        )
        deadline = time.time() + 60
        while True:
            why = auth_problem("the static Envoy", static_url, creds, rl_envoy)
            if why is None:
                return
            if not procs.alive("envoy-static") or time.time() > deadline:
                tail = open(log_path, errors="replace").read()[-2000:]
                raise SystemExit(f"{why}\n{tail}")
            time.sleep(0.1)

    static_note = (
        "Envoy in this table is a second Envoy 1.40 on a static bootstrap (listener "
        f"127.0.0.1:{PORTS['envoy_static']}, `--concurrency 1`, pinned with the other proxies, "
        "access logs off, upstream keep-alive), validated with `envoy --mode validate`. gantry-cp "
        "emits Envoy's `jwt_authn`, `api_key_auth` and `local_ratelimit` only where they give "
        "gantry-proxy's answers, and a per-consumer limit (or a Redis one) is not among them, so "
        "the ADS-fed Envoy would leave the limit out; the static one stands in with the nearest "
        "Envoy equivalent. Its rate limit is `local_ratelimit` with one token bucket it never "
        "empties (no per-consumer counting), with `x-ratelimit-*` headers."
    )
    never_hit = ("The limit (100,000,000 a minute) is never reached: before every run each target "
                 "answers 200 with the credentials and gantry-proxy and Envoy 401 without them; "
                 "a run with any non-2xx answer stops the harness.")

    def plugin_free_base():
        """The plain routes with no plugins, served by both proxies before
        any plugin is written. Without this wait, going from one plugin
        scenario to the next swaps the listener's plugins and the routes'
        plugin ids in one step; gantry-proxy checks each delta (LDS, then
        RDS) against the other type's last good version, NACKs both and stays
        on the previous scenario's plugins."""
        configure(plain_doc)
        wait_serving("/")

    def jwt_scenario():
        priv, pub = rsa_key_pair(work)
        token = sign_rs256(priv, pub, {"iss": "bench-issuer", "sub": "bench",
                                       "exp": int(time.time()) + 86400})
        creds = {"Authorization": f"Bearer {token}"}
        plugin_free_base()
        admin_write("/consumers", {"username": "bench"})
        skip = None
        st, out, _ = admin_write("/consumers/bench/jwt", {
            "key": "bench-issuer", "algorithm": "RS256", "rsa_public_key": open(pub).read()},
            refusable=True)
        if st == 400:
            skip = f"the admin API refused the jwt credential: 400 {admin_message(out)}"
        if not skip:
            st, out, _ = admin_write("/routes/all/plugins", {"name": "jwt"}, refusable=True)
            if st == 400:
                skip = f"the admin API refused the jwt plugin: 400 {admin_message(out)}"
        if not skip:
            _, _, rev = admin_write("/routes/all/plugins", {"name": "rate-limiting", "config": {
                "minute": 100000000, "policy": "local", "limit_by": "consumer"}})
            skip = wait_gantry_plugins(rev, creds, timeout=30)
        if skip:
            log(f"  gantry-proxy row skipped: {skip}")
        label = "envoy (jwt_authn + local_ratelimit)"
        start_static_envoy("3", [envoy_jwt_authn("bench-issuer", rsa_jwk(pub, "bench")),
                                 envoy_local_ratelimit()], creds)
        rows = [("direct", base["direct"][0] + "/", None, creds, False, None)]
        if not skip:
            rows.append(("gantry-proxy", gantry_url, "gantry", creds, True, rl_gantry))
        rows.append((label, static_url, "envoy-static", creds, True, rl_envoy))
        notes = [
            "One RS256 token (2048-bit key, `iss` bench-issuer, `exp` in a day) in "
            "`Authorization: Bearer` on every request. gantry-proxy: Kong's `jwt` plugin (default "
            "config, consumer found by `iss`) and `rate-limiting` (`policy: local`, "
            "`limit_by: consumer`); Envoy: `jwt_authn` with the same key as a local JWKS, "
            "`iss` checked, token forwarded. Both cache verified tokens (gantry-proxy's cache; "
            "Envoy's `jwt_cache_config`, 65,536 tokens) and check `exp` on every request, so "
            "with one token the RSA signature is verified once: this measures finding the "
            "token, its claims and the consumer, not RSA.",
            static_note,
            never_hit,
            "No nginx row: open-source nginx cannot validate a JWT (`auth_jwt` is NGINX Plus) "
            "nor count requests per consumer without Lua (OpenResty, which is what Kong is).",
        ]
        if skip:
            notes.append(f"**gantry-proxy not run:** {skip}.")
        return rows, notes

    def keyauth_scenario():
        ensure_redis()
        key = "bench-" + secrets.token_hex(16)
        creds = {"apikey": key}
        plugin_free_base()
        admin_write("/consumers", {"username": "bench"})
        admin_write("/consumers/bench/key-auth", {"key": key})
        admin_write("/routes/all/plugins", {"name": "key-auth"})
        _, _, rev = admin_write("/routes/all/plugins", {"name": "rate-limiting", "config": {
            "minute": 100000000, "policy": "redis", "redis": {"host": "127.0.0.1", "port": 6379},
            "limit_by": "consumer"}})
        # With `fault_tolerant` (the default) a request passes without the
        # rate-limit headers when Redis fails, so the header proves Redis counted.
        why = wait_gantry_plugins(rev, creds)
        if why:
            raise SystemExit(f"scenario 4: {why}; logs in {work}")
        # The same chain counting in the proxy and reconciling with Redis
        # every second (`sync_rate`), on a route of its own.
        synced_url = gantry_url + "synced"
        admin_write("/services/bench/routes", {"name": "synced", "paths": ["/synced"]})
        admin_write("/routes/synced/plugins", {"name": "key-auth"})
        _, _, rev = admin_write("/routes/synced/plugins", {"name": "rate-limiting", "config": {
            "minute": 100000000, "policy": "redis", "redis": {"host": "127.0.0.1", "port": 6379},
            "limit_by": "consumer", "sync_rate": 1}})
        why = wait_gantry_plugins(rev, creds, url=synced_url)
        if why:
            raise SystemExit(f"scenario 4 (sync_rate): {why}; logs in {work}")
        label = "envoy (api_key_auth + local_ratelimit)"
        start_static_envoy("4", [envoy_api_key_auth(key, "bench"), envoy_local_ratelimit()], creds)
        rows = [
            ("direct", base["direct"][0] + "/", None, creds, False, None),
            ("gantry-proxy", gantry_url, "gantry", creds, True, rl_gantry),
            ("gantry-proxy, sync_rate 1 s", synced_url, "gantry", creds, True, rl_gantry),
            (label, static_url, "envoy-static", creds, True, rl_envoy),
        ]
        notes = [
            "The key in the `apikey` header on every request. gantry-proxy: Kong's `key-auth` and "
            "`rate-limiting` (`policy: redis` on 127.0.0.1:6379, `limit_by: consumer`): one Redis "
            "script call per request. The `sync_rate 1 s` row is the same chain counting in the "
            "proxy and reconciling with Redis once a second, off the request path.",
            static_note + " Envoy has no Redis-backed rate limit without an external rate-limit "
            "service (the `ratelimit` filter and a gRPC service in front of Redis), so its row "
            "makes no network round trip per request.",
            never_hit,
            "No nginx row: open-source nginx has no API-key check against a consumer list nor "
            "Redis-backed rate limiting without Lua (OpenResty, which is what Kong is).",
        ]
        return rows, notes

    def prometheus_scenario():
        plugin_free_base()
        admin_write("/services/bench/routes", {"name": "metered", "paths": ["/metered"]})
        admin_write("/routes/metered/plugins", {"name": "prometheus", "config": {
            "status_code_metrics": True, "latency_metrics": True, "bandwidth_metrics": True}})
        metered = gantry_url + "metered"
        metrics = f"http://127.0.0.1:{PORTS['gantry_admin']}/metrics"
        deadline = time.time() + 60
        while True:
            http_full("GET", metered, timeout=5)
            _, _, body = http_full("GET", metrics, timeout=5)
            if b'kong_http_requests_total{service="bench",route="metered"' in body:
                break
            if time.time() > deadline:
                raise SystemExit(f"scenario 7: gantry-proxy never exported the metered route's "
                                 f"series; logs in {work}")
            time.sleep(0.2)
        rows = [
            ("direct", base["direct"][0] + "/", None, None, False, None),
            ("gantry-proxy", gantry_url, "gantry", None, False, None),
            ("gantry-proxy + prometheus", metered, "gantry", None, False, None),
            ("envoy", base["envoy"][0] + "/", "envoy", None, False, None),
        ]
        notes = [
            "Scenario 1 on two routes of one config, in interleaved rounds: `/` without plugins, "
            "`/metered` with Kong's `prometheus` plugin (`status_code_metrics`, "
            "`latency_metrics` and `bandwidth_metrics` on): per request, a status counter, three "
            "histograms and two byte counters on the route's precompiled series, recorded once the "
            "response is sent. Envoy's row is plain routing (its own stats are always on).",
        ]
        return rows, notes

    scenarios = [
        ("1. plain routing, one route, small response", plain_doc, "/", None, False, True),
        (f"2. {args.routes:,} routes (prefix, regex, host), hitting #{mid}", big, mid_path, None, False, False),
        ("3. RS256 JWT + rate limiting (never hit)", jwt_scenario, "/", None, False, False),
        ("4. key-auth + Redis rate limiting (never hit)", keyauth_scenario, "/", None, False, False),
        ("5. 1 MiB response streamed", plain_doc, "/1m", None, False, True),
        ("6. TLS termination, keep-alive clients", plain_doc, "/", None, True, True),
        ("7. Kong's prometheus plugin on plain routing", prometheus_scenario, "/", None, False, False),
    ]
    if args.only:
        keep = set(args.only.split(","))
        scenarios = [s for s in scenarios if s[0].split(".")[0] in keep]
    results = []
    for title, doc, path, host, tls, with_nginx in scenarios:
        log(f"scenario {title}")
        t0 = time.time()
        notes = []
        if callable(doc):
            # (label, url, process, request headers, expect 401 without them, rate-limit header)
            rows, notes = doc()
            log(f"  set up in {time.time() - t0:.1f}s")
        else:
            configure(doc)
            wait_serving(path, host, tls)
            log(f"  config served by both proxies in {time.time() - t0:.1f}s; RSS gantry-proxy "
                f"{rss_kib(procs.pid('gantry')) / 1024:.1f} MiB, envoy {rss_kib(procs.pid('envoy')) / 1024:.1f} MiB")
            targets = ["direct", "gantry-proxy", "envoy"] + (["nginx"] if with_nginx else [])
            rows = [(t, base[t][1 if tls else 0] + path, base[t][2], None, None, None) for t in targets]
        runs = {row[0]: [] for row in rows}
        for rnd in range(args.rounds):
            for t, url, pname, creds, expect_401, rl_header in rows:
                if creds is not None:
                    why = auth_problem(t, url, creds, rl_header, expect_401)
                    if why:
                        raise SystemExit(f"{title}, round {rnd + 1}: {why}; logs in {work}")
                perf = None
                if args.perf and pname and args.perf in (t, t.split(" ")[0]):
                    data = os.path.join(work, f"perf-{title.split('.')[0]}-{rnd}.data")
                    perf = subprocess.Popen(
                        ["perf", "record", "-F", "499", "-g", "-o", data, "-p", str(procs.pid(pname)),
                         "--", "sleep", str(args.duration)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                r = wrk(url, args.duration, args.connections, load_cpu, host, creds)
                if perf:
                    perf.wait()
                    out = f"bench-perf-{title.split('.')[0]}.txt"
                    with open(out, "w") as f:
                        subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                        "--percent-limit", "0.5", "-g", "none"],
                                       stdout=f, stderr=subprocess.DEVNULL)
                    log(f"  perf profile of {t}: {out}")
                r["rss"] = rss_kib(procs.pid(pname)) if pname else None
                if r["rps"] == 0 or r["non2xx"] or r["errors"]:
                    log(f"  {t} round {rnd + 1}: {r['rps']:.0f} req/s non2xx={r['non2xx']} {r['errors']}")
                    if r["rps"] == 0:
                        raise SystemExit(f"{t} served nothing:\n{r['raw']}")
                    if creds is not None and r["non2xx"]:
                        raise SystemExit(f"{title}: {t} refused {r['non2xx']} requests; "
                                         f"these numbers would not measure the plugins:\n{r['raw']}")
                runs[t].append(r)
                log(f"  round {rnd + 1} {t}: {r['rps']:.0f} req/s p99 {fmt_ms(r['p99'])}")
        procs.stop("envoy-static")
        results.append((title, runs, notes))

    rate_rows = None
    if args.rate_tool and os.path.exists(args.rate_tool):
        configure(plain_doc)
        wait_serving("/")
        rate_rows = {}
        secs = 2 if args.smoke else 20
        # Two layouts. "split" is the throughput layout (the proxy on its
        # own core): every request then crosses cores twice more than
        # "direct" does, and on a VM each cross-core wake-up of an idle
        # vCPU is an interrupt through the hypervisor. "one core" moves
        # the proxy onto the probe's and the origin's core for the run (at
        # 1,000 req/s the core is mostly idle), so "added" is the proxy's
        # own processing.
        layouts = [("split", None)]
        if load_cpu is not None:
            layouts.append(("one core", load_cpu))
        for layout, move_to in layouts:
            for t in ["direct", "gantry-proxy", "envoy", "nginx"]:
                url = base[t][0] + "/"
                proc = base[t][2]
                argv = [args.rate_tool, "rate", "--url", url, "--rate", str(args.rate),
                        "--seconds", str(secs), "--json"]
                if load_cpu is not None:
                    argv = ["taskset", "-c", load_cpu] + argv
                if move_to is not None and proc:
                    pin_tree(procs.pid(proc), move_to)
                try:
                    out = subprocess.run(argv, capture_output=True, text=True)
                finally:
                    if move_to is not None and proc:
                        pin_tree(procs.pid(proc), proxy_cpu)
                if out.returncode != 0:
                    raise SystemExit(f"rate tool failed: {out.stderr}")
                rate_rows[(layout, t)] = json.loads(out.stdout)

    report(args, results, rate_rows, proxy_cpu, load_cpu)
    return 0


def report(args, results, rate_rows, proxy_cpu, load_cpu):
    cpu_name = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"## Data plane ({time.strftime('%Y-%m-%d')})\n")
    print(f"Machine: {os.cpu_count()} cores ({cpu_name}). Pinning: "
          + (f"each proxy (one worker: gantry-proxy `--workers 1`, Envoy `--concurrency 1`, "
             f"nginx `worker_processes 1`) on CPU {proxy_cpu}; wrk (`-t1 -c{args.connections}`), "
             f"the origin nginx and gantry-cp on CPU {load_cpu} (`taskset -c`)."
             if proxy_cpu else "none (one CPU).")
          + f" {args.rounds} interleaved rounds of {args.duration} s per target; medians. "
          "Access logs off, upstream keep-alive on.\n")
    for title, runs, extra_notes in results:
        print(f"### {title}\n")
        print("| target | req/s | p50 | p99 | RSS after | req/s vs direct | p99 vs direct |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        med = {}
        for t, rs in runs.items():
            rps = statistics.median(r["rps"] for r in rs)
            p50 = statistics.median(r["p50"] for r in rs if r["p50"] is not None)
            p99 = statistics.median(r["p99"] for r in rs if r["p99"] is not None)
            rss = rs[-1]["rss"]
            med[t] = (rps, p50, p99)
            d = med.get("direct")
            ratio = f"{rps / d[0]:.2f}" if d and d[0] else "—"
            p99r = f"{p99 / d[2]:.2f}" if d and d[2] else "—"
            rss_s = f"{rss / 1024:.1f} MiB" if rss else "—"
            print(f"| {t} | {rps:,.0f} | {fmt_ms(p50)} | {fmt_ms(p99)} | {rss_s} | {ratio} | {p99r} |")
        # Scenarios 3 and 4 name their (static) Envoy row after its filters.
        envoy_row = next((t for t in med if t.split(" ")[0] == "envoy"), None)
        g, e, n = med.get("gantry-proxy"), med.get(envoy_row), med.get("nginx")
        notes = []
        if g and e and e[0]:
            notes.append(f"gantry-proxy / Envoy: {g[0] / e[0]:.2f}x req/s")
        if g and n and n[0]:
            notes.append(f"gantry-proxy / nginx: {g[0] / n[0]:.2f}x req/s, p99 {g[2] / n[2]:.2f}x")
        m = med.get("gantry-proxy + prometheus")
        if g and m and g[0]:
            notes.append(f"prometheus on / off: {m[0] / g[0]:.3f}x req/s, p99 {m[2] / g[2]:.2f}x")
        if notes:
            print("\n" + "; ".join(notes) + ".")
        for note in extra_notes:
            print("\n" + note)
        print()
    if rate_rows:
        print(f"### Latency at a fixed {args.rate} req/s (one keep-alive connection per in-flight request)\n")
        print("Measured from each request's send; \"from due\" adds the probe's own lateness "
              "against its schedule. \"added\" is over direct in the same layout (target: "
              "p50 ≤ 100 µs, p99 ≤ 500 µs).\n")
        print("| layout | target | p50 | p99 | p99.9 from due | added p50 | added p99 | probe late p50 / p99 |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for (layout, t), r in rate_rows.items():
            d = rate_rows.get((layout, "direct"))
            add50 = f"{(r['sent_p50_us'] - d['sent_p50_us']):.0f} µs" if d and t != "direct" else "—"
            add99 = f"{(r['sent_p99_us'] - d['sent_p99_us']):.0f} µs" if d and t != "direct" else "—"
            print(f"| {layout} | {t} | {r['sent_p50_us']:.0f} µs | {r['sent_p99_us']:.0f} µs | "
                  f"{r['p999_us']:.0f} µs | {add50} | {add99} | "
                  f"{r['late_p50_us']:.0f} / {r['late_p99_us']:.0f} µs |")
        print()


if __name__ == "__main__":
    sys.exit(main())
