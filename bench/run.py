#!/usr/bin/env python3
"""The llmstreamer benchmark: llmstreamer against the floor, the naive
requests + sseclient-py pattern and the official SDKs, on one loopback server.

    python bench/run.py            # full run (a few minutes): bench/results.{md,json,png}
    python bench/run.py --smoke    # tiny N, seconds, results in a temporary directory
    python bench/run.py --variant fix=/tmp/x   # also measure /tmp/x/llmstreamer.py

Every measurement is a fresh client process (bench/client.py) against one
server process (bench/server.py) on 127.0.0.1; both are stopped by PID.
Clients are interleaved (A B C A B C ..., order reversed every other round),
figures are medians over rounds and ratios are taken within a round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import server as wires  # noqa: E402  (the generators: what every client must receive)

CLIENT = os.path.join(HERE, "client.py")
# Child processes cache bytecode as an installed package does (pip compiles at
# install time): with PYTHONDONTWRITEBYTECODE set, the 75 kB llmstreamer.py
# would be compiled on every start and dominate import time.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
SDK_FOR = {"openai": "openai-sdk", "anthropic": "anthropic-sdk", "gemini": "genai-sdk",
           "responses": "openai-sdk"}
SDK_MODULE = {"openai-sdk": "openai", "anthropic-sdk": "anthropic", "genai-sdk": "google.genai"}
CORE = ("floor", "llmstreamer", "llmstreamer-chat", "naive")

FULL = dict(flood_n=100_000, sdk_n=10_000, rounds=9, sdk_rounds=3, framing_rounds=9,
            trickle_n=150, trickle_ms=20, trickle_rounds=2, import_runs=9,
            whole_n=200, whole_rounds=9, scale_ns=(1000, 10_000, 100_000), scale_rounds=5,
            conc_streams=200, conc_n=500, conc_rounds=5, conc_trickle_n=50, timeout=600.0)
SMOKE = dict(flood_n=300, sdk_n=300, rounds=1, sdk_rounds=1, framing_rounds=1,
             trickle_n=8, trickle_ms=5, trickle_rounds=1, import_runs=2,
             whole_n=200, whole_rounds=1, scale_ns=(100, 1000), scale_rounds=1,
             conc_streams=20, conc_n=20, conc_rounds=1, conc_trickle_n=4, timeout=60.0)

GOALS = {"cpu_ratio": 1.3, "p50_over_floor_ms": 0.2, "p99_ms": 1.0, "import_ms": 100.0,
         "scale_ratio": 1.2, "conc_ratio": 1.3}


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def median(xs: List[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


def pct(xs: List[float], q: float) -> Optional[float]:
    """Nearest-rank percentile."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(q / 100.0 * len(s) + 0.5) - 1))
    return s[k]


class Failure(Exception):
    pass


class Bench:
    def __init__(self, args: argparse.Namespace, cfg: Dict[str, Any]) -> None:
        self.args = args
        self.cfg = cfg
        self.python = args.python
        self.variants: List[Tuple[str, str]] = [
            (v.partition("=")[0], v.partition("=")[2]) for v in args.variant]
        self.port = 0
        self.errors: List[str] = []
        self.server: Optional[subprocess.Popen] = None
        self.pin: Optional[int] = None
        self._have: Dict[str, bool] = {}
        self.notes: List[str] = []

    # ------------------------------------------------------------ server ---

    def start_server(self, prebuild: List[str]) -> None:
        cmd = [self.python, os.path.join(HERE, "server.py"), "--lifetime",
               str(int(self.cfg["timeout"] * 6)), "--prebuild", ",".join(prebuild)]
        self.server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       env=CHILD_ENV)
        line = self.server.stdout.readline().decode()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            raise Failure(f"bench server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.pin = None
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if not self.args.no_pin and len(cpus) >= 2:
            # the server on one CPU, every client on another: no migrations, no sharing
            try:
                os.sched_setaffinity(self.server.pid, {cpus[0]})
                self.pin = cpus[1]
            except OSError:
                self.pin = None
        log(f"server pid {self.server.pid} on 127.0.0.1:{self.port}"
            + (f", pinned to CPU {cpus[0]}; clients to CPU {self.pin}"
               if self.pin is not None else ""))

    def stop_server(self) -> None:
        p = self.server
        if p is None:
            return
        try:
            p.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        if p.poll() is None:
            os.kill(p.pid, 15)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, 9)
                p.wait(5)
        self.server = None

    # ----------------------------------------------------------- clients ---

    def clients(self, wire: str, sdk: bool = True, chat: bool = True) -> List[str]:
        only = set(filter(None, self.args.clients.split(","))) if self.args.clients else None
        out = ["floor", "llmstreamer"]
        out += [f"llmstreamer@{name}" for name, _ in self.variants]
        if chat:
            out.append("llmstreamer-chat")
        out.append("naive")
        if sdk and (only is None or SDK_FOR[wire] in only) and self.have(SDK_FOR[wire]):
            out.append(SDK_FOR[wire])
        return [k for k in out if only is None or k in only or k == "floor" or "@" in k]

    def have(self, client: str) -> bool:
        if client not in self._have:
            mod = SDK_MODULE.get(client)
            ok = True
            if mod is not None:
                code = ("import importlib.util, sys; "
                        f"sys.exit(importlib.util.find_spec({mod!r}) is None)")
                ok = subprocess.run([self.python, "-c", code], stderr=subprocess.DEVNULL,
                            env=CHILD_ENV).returncode == 0
                if not ok:
                    log(f"note: {client} skipped: {mod} is not importable "
                        f"(pip install -e '.[bench]')")
            self._have[client] = ok
        return self._have[client]

    def argv(self, client: str, wire: str, framing: str, mode: str, n: int,
             count: bool = False) -> List[str]:
        kind, _, variant = client.partition("@")
        url = f"http://127.0.0.1:{self.port}/s/{wire}/{framing}/{mode}/{n}"
        sink = "trickle" if mode.startswith("trickle") else ("count" if count else "flood")
        cmd = [self.python, CLIENT, kind, url, wire, sink, str(n)]
        if variant:
            cmd += ["--path", dict(self.variants)[variant]]
        if self.pin is not None:
            cmd += ["--cpu", str(self.pin)]
        return cmd

    def run(self, client: str, wire: str, framing: str, mode: str, n: int,
            whole: bool = False, count: bool = False, streams: int = 0
            ) -> Optional[Dict[str, Any]]:
        """One measurement in a fresh process; None (and an error noted) if it
        failed, or None (and a note) if the client skipped this wire."""
        cmd = self.argv(client, wire, framing, mode, n, count) if client != "none" else [
            self.python, CLIENT, "none"]
        if streams:
            cmd += ["--streams", str(streams)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CHILD_ENV)
        try:
            out, err = p.communicate(timeout=self.cfg["timeout"]) if not whole else (b"", b"")
            if whole:  # whole-process CPU: reap it ourselves to get its rusage
                deadline = time.monotonic() + self.cfg["timeout"]
                chunks = []
                while True:
                    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                    if pid:
                        break
                    if time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(cmd, self.cfg["timeout"])
                    time.sleep(0.002)
                p.returncode = os.waitstatus_to_exitcode(status)
                chunks.append(p.stdout.read())  # type: ignore[union-attr]
                out, err = b"".join(chunks), p.stderr.read()  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            os.kill(p.pid, 9)
            p.wait(5)
            self.fail(f"{client} {wire}/{framing}/{mode}/{n}: timed out")
            return None
        finally:
            if p.poll() is None and p.returncode is None:
                os.kill(p.pid, 9)
                p.wait(5)
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        if p.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            self.fail(f"{client} {wire}/{framing}/{mode}/{n}: exit {p.returncode}: "
                      + " | ".join(tail))
            return None
        res: Dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        if "skipped" in res:
            note = f"{client} skipped on the {wire} wire: {res['skipped']}"
            if note not in self.notes:
                log("note: " + note)
                self.notes.append(note)
            return None
        res["client"] = client
        if whole:
            res["process_cpu"] = ru.ru_utime + ru.ru_stime
        if streams:
            return self._check_streams(res, client, wire, framing, mode, n, streams)
        if not mode.startswith("trickle") and client != "none":
            sha, length = wires.expected(n, "v1" if mode == "flood-v1" else "real")
            if count:
                sha = res["sha"]  # nothing kept: the length and the Completion are checked
            if (res["sha"], res["len"]) != (sha, length) or res.get("accumulated_ok") is False:
                self.fail(f"{client} {wire}/{framing}/{n}: wrong text (got {res['len']} chars, "
                          f"expected {length}; accumulated_ok={res.get('accumulated_ok')})")
                return None
        if mode.startswith("trickle") and res["events"] != n:
            self.fail(f"{client} {wire}/{framing}/{mode}: {res['events']} of {n} events")
            return None
        return res

    def _check_streams(self, res: Dict[str, Any], client: str, wire: str, framing: str,
                       mode: str, n: int, streams: int) -> Optional[Dict[str, Any]]:
        """Every one of the concurrent streams must have its whole, exact answer."""
        where = f"{client} {wire}/{framing}/{mode}/{n} x{streams}"
        if res["errors"]:
            self.fail(f"{where}: {len(res['errors'])} streams failed: {res['errors'][0]}")
            return None
        if not mode.startswith("trickle"):
            sha, length = wires.expected(n)
            want = {f"{sha} {length} {n}": streams}
            if res["answers"] != want:
                self.fail(f"{where}: answers {res['answers']} (expected {want})")
                return None
        elif res["events"] != n * streams:
            self.fail(f"{where}: {res['events']} of {n * streams} events")
            return None
        return res

    def fail(self, msg: str) -> None:
        log("ERROR " + msg)
        self.errors.append(msg)

    @staticmethod
    def order(clients: List[str], r: int) -> List[str]:
        return clients if r % 2 == 0 else clients[::-1]

    # ---------------------------------------------------------- sections ---

    def flood(self) -> Dict[str, Any]:
        """CPU per event of the streaming loop, 100k-event flood, chunked, per wire:
        the events the APIs send, then (floor and llmstreamer only) the first
        event set ("v1")."""
        out: Dict[str, Any] = {}
        for wire in wires.WIRES:
            out[wire] = self._flood_rounds(self.clients(wire), wire, "chunked",
                                           self.cfg["rounds"], f"flood {wire}")
            v1 = [k for k in self.clients(wire, sdk=False, chat=False) if k != "naive"]
            for k, row in self._flood_rounds(v1, wire, "chunked", self.cfg["rounds"],
                                             f"flood-v1 {wire}", "flood-v1").items():
                out[wire][f"{k}, v1 events"] = row
        return out

    def writes(self) -> Dict[str, Any]:
        """The flood written one event per sendall (chunked): reads carry one or
        a few events, so what each read costs shows, as it does on a real API."""
        clients = ["floor", "llmstreamer"] + [f"llmstreamer@{n}" for n, _ in self.variants]
        return {wire: self._flood_rounds(clients, wire, "chunked", self.cfg["framing_rounds"],
                                         f"writes {wire}", "writes")
                for wire in wires.WIRES}

    def framings(self) -> Dict[str, Any]:
        """The same flood on close-delimited and gzip bodies, every wire (naive:
        the openai wire only)."""
        out: Dict[str, Any] = {}
        for framing in ("close", "gzip"):
            for wire in wires.WIRES:
                clients = [k for k in self.clients(wire, sdk=False, chat=False)
                           if k != "naive" or wire == "openai"]
                out[f"{wire} {framing}"] = self._flood_rounds(
                    clients, wire, framing, self.cfg["framing_rounds"],
                    f"flood {wire}/{framing}")
        return out

    def _flood_rounds(self, clients: List[str], wire: str, framing: str, rounds: int,
                      label: str, mode: str = "flood") -> Dict[str, Any]:
        """Interleaved rounds of one flood; ratios to the floor within each round."""
        c = self.cfg
        rows: Dict[str, List[Dict[str, Any]]] = {k: [] for k in clients}
        ratios: Dict[str, List[float]] = {k: [] for k in clients}
        for r in range(rounds):
            res_round: Dict[str, float] = {}
            for client in self.order(clients, r):
                if client in SDK_MODULE and r >= c["sdk_rounds"]:
                    continue
                n = c["sdk_n"] if client in SDK_MODULE else c["flood_n"]
                res = self.run(client, wire, framing, mode, n)
                if res is None:
                    continue
                res["us_per_event"] = res["cpu"] / n * 1e6
                rows[client].append(res)
                res_round[client] = res["us_per_event"]
            floor_us = res_round.get("floor")
            for client, us in res_round.items():
                if floor_us:
                    ratios[client].append(us / floor_us)
            log(f"{label} round {r + 1}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in res_round.items()) + " us/event")
        return {k: summarize(rows[k], ratios[k]) for k in clients if rows[k]}

    def delivery(self) -> Dict[str, Any]:
        """Delay from the server's send to the consumer, one event every 20 ms."""
        c = self.cfg
        mode = f"trickle{c['trickle_ms']}"
        out: Dict[str, Any] = {}
        clients = self.clients("openai", chat=False, sdk=not self.cfg["smoke"])
        for framing in wires.FRAMINGS:
            delays: Dict[str, List[float]] = {k: [] for k in clients}
            p50_diffs: Dict[str, List[float]] = {k: [] for k in clients}
            for r in range(c["trickle_rounds"]):
                p50s = {}
                for client in self.order(clients, r):
                    res = self.run(client, "openai", framing, mode, c["trickle_n"])
                    if res is None:
                        continue
                    ms = [d / 1e6 for d in res["delays_ns"]]
                    delays[client] += ms
                    p50s[client] = pct(ms, 50)
                for client, p in p50s.items():
                    if "floor" in p50s:
                        p50_diffs[client].append(p - p50s["floor"])
                log(f"delivery {framing} round {r + 1}: " + ", ".join(
                    f"{k} p50 {v:.3f}" for k, v in p50s.items()) + " ms")
            fl = pct(delays["floor"], 50) if delays["floor"] else None
            out[framing] = {
                k: {"n": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99), "max_ms": max(v),
                    "p50_minus_floor_ms": (pct(v, 50) - fl) if fl is not None else None,
                    "p50_minus_floor_per_round_ms": p50_diffs[k]}
                for k, v in delays.items() if v}
        return out

    def imports(self) -> Dict[str, Any]:
        """Wall time of `python -c "import X"` minus `python -c pass`, fresh processes."""
        env = dict(CHILD_ENV, PYTHONPATH=ROOT)
        empty = tempfile.mkdtemp(prefix="llmstreamer-nopyc-")
        # no bytecode cache: compile from source every time (PYTHONDONTWRITEBYTECODE
        # with an empty pycache prefix), as a copied-in file under -B would be
        cold = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": empty}
        targets = [("pass", "pass", ROOT), ("requests", "import requests", ROOT),
                   ("llmstreamer", "import llmstreamer", ROOT)]
        targets += [(f"llmstreamer@{name}", "import llmstreamer", path)
                    for name, path in self.variants]
        if not self.cfg["smoke"]:
            targets.append(("llmstreamer, no .pyc", "import llmstreamer", ROOT))
        times: Dict[str, List[float]] = {t[0]: [] for t in targets}
        cpus: Dict[str, List[float]] = {t[0]: [] for t in targets}
        for r in range(self.cfg["import_runs"] + 1):
            for name, code, path in self.order(targets, r):
                run_env = dict(env, PYTHONPATH=path, **(cold if "no .pyc" in name else {}))
                t0 = time.perf_counter()
                # cwd=path: `-c` puts the current directory first on sys.path
                p = subprocess.Popen([self.python, "-c", code], env=run_env, cwd=path)
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                wall = (time.perf_counter() - t0) * 1000
                if p.returncode != 0:
                    raise Failure(f"{code!r} failed in {path}")
                if r:  # the first round warms the file cache and writes .pyc files
                    times[name].append(wall)
                    cpus[name].append((ru.ru_utime + ru.ru_stime) * 1000)
        base = median(times["pass"]) or 0.0
        base_cpu = median(cpus["pass"]) or 0.0
        out: Dict[str, Any] = {"python_startup_ms": base, "python_startup_cpu_ms": base_cpu}
        for name, _, path in targets[1:]:
            run_env = dict(env, PYTHONPATH=path, **(cold if "no .pyc" in name else {}))
            mod = "requests" if name == "requests" else "llmstreamer"
            cp = subprocess.run([self.python, "-X", "importtime", "-c", f"import {mod}"],
                                env=run_env, cwd=path, capture_output=True, text=True)
            where = subprocess.run([self.python, "-c", f"import {mod}; print({mod}.__file__)"],
                                   env=run_env, cwd=path, capture_output=True, text=True)
            if mod == "llmstreamer" and not where.stdout.startswith(os.path.abspath(path)):
                raise Failure(f"{name}: imported {where.stdout.strip()!r}, not from {path}")
            cum = None
            for line in cp.stderr.splitlines():
                parts = line.split("|")
                if len(parts) == 3 and parts[2].strip() == mod:
                    cum = int(parts[1]) / 1000.0
            out[name] = {"ms": (median(times[name]) or 0.0) - base, "runs_ms": times[name],
                         "cpu_ms": (median(cpus[name]) or 0.0) - base_cpu,
                         "importtime_cumulative_ms": cum}
        shutil.rmtree(empty, ignore_errors=True)
        log("import: " + ", ".join(f"{k} {v['ms']:.1f} ms wall, {v['cpu_ms']:.1f} ms CPU"
                                   for k, v in out.items() if isinstance(v, dict)))
        return out

    def whole(self) -> Dict[str, Any]:
        """CPU (user+sys) of a whole process that streams one 2000-event answer."""
        c = self.cfg
        runs: List[Tuple[str, str]] = [("none", "openai")]
        for wire in wires.WIRES:
            runs += [(k, wire) for k in self.clients(wire, chat=False, sdk=not c["smoke"])]
        cpu: Dict[str, List[float]] = {}
        rss: Dict[str, List[int]] = {}
        for r in range(c["whole_rounds"]):
            for client, wire in self.order(runs, r):
                res = self.run(client, wire, "chunked", "flood", c["whole_n"], whole=True)
                if res is None:
                    continue
                key = client if client == "none" else f"{client} ({wire})"
                cpu.setdefault(key, []).append(res["process_cpu"] * 1000)
                rss.setdefault(key, []).append(res["hwm_kb"])
        base = median(cpu.get("none", [])) or 0.0
        out = {k: {"process_cpu_ms": median(v), "minus_bare_process_ms": median(v) - base,
                   "maxrss_mb": median(rss[k]) / 1024, "runs_ms": v}
               for k, v in cpu.items()}
        log("whole request: " + ", ".join(f"{k} {v['process_cpu_ms']:.0f} ms"
                                          for k, v in out.items()))
        return out

    def concurrent(self) -> Dict[str, Any]:
        """K streams at once from K threads of one process: llmstreamer through
        one provider, the floor on K sockets. Floods give the aggregate events/s
        (every answer checked); trickles (one event every 20 ms per stream)
        give the delivery delay under that load."""
        c = self.cfg
        k, n = c["conc_streams"], c["conc_n"]
        clients = ["floor", "llmstreamer"] + [f"llmstreamer@{v}" for v, _ in self.variants]
        rate: Dict[str, List[float]] = {x: [] for x in clients}
        cpu: Dict[str, List[float]] = {x: [] for x in clients}
        ratios: Dict[str, List[float]] = {x: [] for x in clients}
        delays: Dict[str, List[float]] = {x: [] for x in clients}
        for r in range(c["conc_rounds"]):
            got: Dict[str, float] = {}
            for client in self.order(clients, r):
                res = self.run(client, "openai", "chunked", "flood", n, streams=k)
                if res is None:
                    continue
                got[client] = res["events"] / res["wall"]
                rate[client].append(got[client])
                cpu[client].append(res["cpu"] / res["events"] * 1e6)
            for client, v in got.items():
                if got.get("floor"):
                    ratios[client].append(v / got["floor"])
            log(f"concurrent round {r + 1}: " + ", ".join(
                f"{x} {v:,.0f} events/s" for x, v in got.items()))
        mode = f"trickle{c['trickle_ms']}"
        for r in range(c["trickle_rounds"]):
            for client in self.order(clients, r):
                res = self.run(client, "openai", "chunked", mode, c["conc_trickle_n"],
                               streams=k)
                if res is not None:
                    delays[client] += [d / 1e6 for d in res["delays_ns"]]
        out = {x: {"events_per_s": median(rate[x]), "ratio_to_floor": median(ratios[x]),
                   "cpu_us_per_event": median(cpu[x]), "runs_events_per_s": rate[x],
                   "delay_p50_ms": pct(delays[x], 50), "delay_p99_ms": pct(delays[x], 99),
                   "delay_n": len(delays[x])}
               for x in clients if rate[x]}
        log("concurrent: " + ", ".join(
            f"{x} {v['events_per_s']:,.0f} events/s, p50/p99 {fmt(v['delay_p50_ms'], 3)}/"
            f"{fmt(v['delay_p99_ms'], 3)} ms" for x, v in out.items()))
        return out

    def scaling(self) -> Dict[str, Any]:
        """Per-event cost and peak RSS against stream length (openai, chunked)."""
        c = self.cfg
        clients = ["floor", "llmstreamer"] + [f"llmstreamer@{n}" for n, _ in self.variants]
        out: Dict[str, Any] = {k: {} for k in clients}
        for r in range(c["scale_rounds"]):
            for n in c["scale_ns"]:
                for client in self.order(clients, r):
                    res = self.run(client, "openai", "chunked", "flood", n, count=True)
                    if res is None:
                        continue
                    d = out[client].setdefault(str(n), {"us": [], "rss": [], "kept": []})
                    d["us"].append(res["cpu"] / n * 1e6)
                    d["rss"].append(res["hwm_kb"])
                    d["kept"].append(res.get("kept_kb") or 0)
        summary: Dict[str, Any] = {}
        for client, by_n in out.items():
            summary[client] = {n: {"us_per_event": median(d["us"]),
                                   "maxrss_mb": median(d["rss"]) / 1024, "runs_us": d["us"],
                                   "kept_mb": median(d["kept"]) / 1024}
                               for n, d in by_n.items()}
            ns = [str(n) for n in c["scale_ns"]]
            if ns[0] in summary[client] and ns[-1] in summary[client]:
                first, last = summary[client][ns[0]], summary[client][ns[-1]]
                summary[client]["ratio_last_first"] = last["us_per_event"] / first["us_per_event"]
                summary[client]["rss_growth_mb"] = last["maxrss_mb"] - first["maxrss_mb"]
                summary[client]["kept_growth_mb"] = last["kept_mb"] - first["kept_mb"]
        log("scaling: " + ", ".join(
            f"{k} " + "/".join(f"{v['us_per_event']:.2f}" for n, v in s.items()
                               if isinstance(v, dict)) for k, s in summary.items()))
        return summary


def summarize(rows: List[Dict[str, Any]], ratios: List[float]) -> Dict[str, Any]:
    return {"us_per_event": median([x["us_per_event"] for x in rows]),
            "ratio_to_floor": median(ratios),
            "n": rows[0]["n"], "rounds": len(rows),
            "runs_us": [round(x["us_per_event"], 3) for x in rows],
            "ratios": [round(x, 3) for x in ratios],
            "maxrss_mb": median([x["hwm_kb"] for x in rows]) / 1024}


# ----------------------------------------------------------------- report ---


def machine(python: str) -> Dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    code = ("import sys, platform, json\nfrom importlib import metadata as m\nv={}\n"
            "for d in ('requests','urllib3','sseclient-py','openai','anthropic','google-genai',"
            "'httpx','matplotlib'):\n"
            "    try: v[d]=m.version(d)\n    except Exception: pass\n"
            "print(json.dumps({'python': sys.version.split()[0], "
            "'implementation': platform.python_implementation(), 'packages': v}))")
    info = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True,
                                     check=True, env=CHILD_ENV).stdout)
    info.update(cpu=cpu, cores=os.cpu_count(), platform=platform.platform(),
                loadavg_at_start=[round(x, 2) for x in os.getloadavg()])
    return info


def fmt(x: Optional[float], nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def goals(res: Dict[str, Any], who: str) -> List[Tuple[str, str, bool]]:
    out: List[Tuple[str, str, bool]] = []
    for wire, rows in res.get("flood", {}).items():
        if who in rows and rows[who]["ratio_to_floor"] is not None:
            r = rows[who]["ratio_to_floor"]
            out.append((f"CPU/event ≤ {GOALS['cpu_ratio']}x floor ({wire}, chunked)",
                        f"{r:.2f}x", r <= GOALS["cpu_ratio"]))
    for wire, rows in res.get("writes", {}).items():
        if who in rows and rows[who]["ratio_to_floor"] is not None:
            r = rows[who]["ratio_to_floor"]
            out.append((f"CPU/event ≤ {GOALS['cpu_ratio']}x floor ({wire}, chunked, one "
                        "write per event)", f"{r:.2f}x", r <= GOALS["cpu_ratio"]))
    for cell, rows in res.get("framings", {}).items():
        if who in rows and rows[who]["ratio_to_floor"] is not None:
            r = rows[who]["ratio_to_floor"]
            wire, framing = cell.split()
            out.append((f"CPU/event ≤ {GOALS['cpu_ratio']}x floor ({wire}, {framing})",
                        f"{r:.2f}x", r <= GOALS["cpu_ratio"]))
    for framing, rows in res.get("delivery", {}).items():
        if who in rows:
            d = rows[who]
            out.append((f"delivery p50 ≤ floor + {GOALS['p50_over_floor_ms']} ms ({framing})",
                        f"+{d['p50_minus_floor_ms']:.3f} ms",
                        d["p50_minus_floor_ms"] <= GOALS["p50_over_floor_ms"]))
            out.append((f"delivery p99 < {GOALS['p99_ms']} ms ({framing})",
                        f"{d['p99_ms']:.3f} ms", d["p99_ms"] < GOALS["p99_ms"]))
    whole = res.get("whole", {})
    for wire in wires.WIRES:
        mine, naive = whole.get(f"{who} ({wire})"), whole.get(f"naive ({wire})")
        if mine and naive:
            out.append((f"whole {res['config']['whole_n']}-event request, process CPU ≤ naive "
                        f"({wire}: {naive['process_cpu_ms']:.0f} ms)",
                        f"{mine['process_cpu_ms']:.0f} ms",
                        mine["process_cpu_ms"] <= naive["process_cpu_ms"]))
    conc = res.get("concurrent", {}).get(who)
    if conc and conc["ratio_to_floor"] is not None:
        out.append((f"{res['config']['conc_streams']} concurrent streams: events/s ≥ "
                    f"1/{GOALS['conc_ratio']} of the floor's",
                    f"{conc['ratio_to_floor']:.2f}x",
                    conc["ratio_to_floor"] >= 1 / GOALS["conc_ratio"]))
    imp = res.get("import", {}).get(who)
    if imp:
        req = res["import"].get("requests", {}).get("cpu_ms")
        out.append((f"import ≤ {GOALS['import_ms']:.0f} ms (CPU; `import requests` alone: "
                    f"{fmt(req, 1)} ms)", f"{imp['cpu_ms']:.1f} ms",
                    imp["cpu_ms"] <= GOALS["import_ms"]))
    sc = res.get("scaling", {}).get(who)
    if sc and "ratio_last_first" in sc:
        ns = [k for k in sc if k.isdigit()]
        out.append((f"per-event cost at {ns[-1]} ≤ {GOALS['scale_ratio']}x cost at {ns[0]}",
                    f"{sc['ratio_last_first']:.2f}x",
                    sc["ratio_last_first"] <= GOALS["scale_ratio"]))
        fl = res["scaling"].get("floor", {}).get("rss_growth_mb", 0.0)
        out.append((f"peak RSS flat from {ns[0]} to {ns[-1]} events (floor: {fl:+.1f} MB; "
                    f"the Completion's text: {sc.get('kept_growth_mb', 0.0):+.1f} MB)",
                    f"{sc['rss_growth_mb']:+.1f} MB", sc["rss_growth_mb"] <= max(2.0, fl + 2.0)))
    return out


def cpu_cell(r: Optional[Dict[str, Any]]) -> str:
    """A flood table cell: µs per event and the ratio to the floor."""
    return "-" if r is None else f"{fmt(r['us_per_event'])} ({fmt(r['ratio_to_floor'])}x)"


def markdown(res: Dict[str, Any]) -> str:
    m = res["machine"]
    c = res["config"]
    L = [f"# llmstreamer benchmark{' (smoke run: tiny N, not figures)' if c['smoke'] else ''}",
         "",
         f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; "
         f"{m['implementation']} {m['python']}; load average at start "
         f"{m['loadavg_at_start']}. Packages: "
         + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
         "",
         f"Generated by `python bench/run.py{' --smoke' if c['smoke'] else ''}` on "
         f"{res['date']} in {res['elapsed_s']:.0f} s. Each figure is the median of "
         "rounds in which the clients ran interleaved in fresh processes; ratios are "
         "taken within a round, then the median. CPU is user+sys of the client's "
         "streaming loop (request included, imports excluded).", ""]
    who = ["llmstreamer"] + [f"llmstreamer@{n}" for n in res["config"]["variants"]]
    for w in who:
        g = goals(res, w)
        if g:
            L += [f"## Goals ({w})", "", "| goal | measured | |", "|---|---:|---|"]
            L += [f"| {name} | {val} | {verdict(ok)} |" for name, val, ok in g]
            L.append("")
    if "flood" in res:
        L += [f"## CPU per event, {c['flood_n']:,}-event flood, chunked body",
              "", "µs of client CPU per text event (ratio to the floor, median of per-round "
              f"ratios). SDKs stream {c['sdk_n']:,} events.", ""]
        clients: List[str] = []
        for rows in res["flood"].values():
            clients += [k for k in rows if k not in clients]
        L += ["| client | " + " | ".join(res["flood"]) + " |",
              "|---|" + "---:|" * len(res["flood"])]
        for k in clients:
            cells = []
            for rows in res["flood"].values():
                cells.append(cpu_cell(rows.get(k)))
            L.append(f"| {k} | " + " | ".join(cells) + " |")
        L.append("")
    if "framings" in res:
        L += ["## CPU per event by body type", "",
              "µs per text event (ratio to the floor on the same wire and body).", "",
              "| wire, client | chunked | close | gzip |", "|---|---:|---:|---:|"]
        for wire in wires.WIRES:
            close = res["framings"].get(f"{wire} close", {})
            for k in close:
                cells = [cpu_cell(res.get("flood", {}).get(wire, {}).get(k))]
                cells += [cpu_cell(res["framings"].get(f"{wire} {f}", {}).get(k))
                          for f in ("close", "gzip")]
                L.append(f"| {wire}, {k} | " + " | ".join(cells) + " |")
        L.append("")
    if "writes" in res:
        L += ["## CPU per event, the flood written one event per write (chunked)", "",
              "The server writes each event with its own `sendall`, as an API flushes "
              "per token: the client's reads carry one or a few events instead of ~200, "
              "so the cost of each read shows. µs per text event (ratio to the floor).", "",
              "| client | " + " | ".join(res["writes"]) + " |",
              "|---|" + "---:|" * len(res["writes"])]
        clients = []
        for rows in res["writes"].values():
            clients += [k for k in rows if k not in clients]
        for k in clients:
            L.append(f"| {k} | " + " | ".join(cpu_cell(rows.get(k))
                                                for rows in res["writes"].values()) + " |")
        L.append("")
    if "concurrent" in res:
        L += [f"## {c['conc_streams']} streams at once (openai, chunked)", "",
              f"{c['conc_streams']} threads in one process, released together: "
              "llmstreamer through one provider, the floor on its own socket per thread. "
              f"Floods of {c['conc_n']:,} events per stream: aggregate events/s over "
              "the wall time until the last stream ends (every answer checked), and "
              "process CPU per event; median of "
              f"{c['conc_rounds']} rounds. Trickles of {c['conc_trickle_n']} events per "
              f"stream, one every {c['trickle_ms']} ms: delivery delay under that load.", "",
              "| client | events/s | ratio to floor | CPU µs/event | delay p50 / p99 ms |",
              "|---|---:|---:|---:|---:|"]
        for k, v in res["concurrent"].items():
            L.append(f"| {k} | {v['events_per_s']:,.0f} | {fmt(v['ratio_to_floor'])}x | "
                     f"{fmt(v['cpu_us_per_event'])} | {fmt(v['delay_p50_ms'], 3)} / "
                     f"{fmt(v['delay_p99_ms'], 3)} |")
        L.append("")
    if "delivery" in res:
        L += [f"## Delivery delay, one event every {c['trickle_ms']} ms "
              f"({c['trickle_n']} events x {c['trickle_rounds']} rounds per cell)", "",
              "Server send time (time.monotonic_ns) to the moment the text reaches the "
              "consumer, ms: p50 / p99 (p50 minus the floor's p50).", "",
              "| client | " + " | ".join(res["delivery"]) + " |",
              "|---|" + "---:|" * len(res["delivery"])]
        clients = []
        for rows in res["delivery"].values():
            clients += [k for k in rows if k not in clients]
        for k in clients:
            cells = []
            for rows in res["delivery"].values():
                d = rows.get(k)
                cells.append("-" if d is None else
                             f"{d['p50_ms']:.3f} / {d['p99_ms']:.3f} "
                             f"(+{d['p50_minus_floor_ms']:.3f})")
            L.append(f"| {k} | " + " | ".join(cells) + " |")
        L.append("")
    if "import" in res:
        imp = res["import"]
        L += ["## Import time", "",
              f"`python -c \"import X\"` minus `python -c pass` "
              f"({imp['python_startup_ms']:.1f} ms wall, {imp['python_startup_cpu_ms']:.1f} ms "
              f"CPU), median of {c['import_runs']} fresh processes, with bytecode cached as "
              "an installed package has it (the last row compiles from source); "
              "`-X importtime`'s cumulative figure for the module.", "",
              "| module | wall ms | CPU ms | -X importtime ms |", "|---|---:|---:|---:|"]
        L += [f"| {k} | {v['ms']:.1f} | {v['cpu_ms']:.1f} | "
              f"{fmt(v['importtime_cumulative_ms'], 1)} |"
              for k, v in imp.items() if isinstance(v, dict)]
        L.append("")
    if "whole" in res:
        L += [f"## A whole {c['whole_n']:,}-event request in a fresh process", "",
              "user+sys CPU of the whole process (interpreter start, imports, request, "
              "stream), and minus a bare `client.py none` process; peak RSS is VmHWM.", "",
              "| client (wire) | CPU ms | minus bare process | peak RSS MB |",
              "|---|---:|---:|---:|"]
        L += [f"| {k} | {v['process_cpu_ms']:.0f} | {v['minus_bare_process_ms']:.0f} | "
              f"{v['maxrss_mb']:.1f} |" for k, v in res["whole"].items()]
        L.append("")
    if "scaling" in res:
        ns = [str(n) for n in c["scale_ns"]]
        L += ["## Stream length (openai, chunked)", "",
              "µs CPU per event and peak RSS (VmHWM) of the client process, MB; the "
              "caller only iterates (counts the texts, keeps nothing). Text kept: the "
              "growth of `sys.getsizeof(completion.text)`, which the library must keep "
              "for the Completion (and `.partial`).", "",
              "| client | " + " | ".join(f"{int(n):,} events" for n in ns)
              + f" | {ns[-1]}/{ns[0]} cost | RSS growth | text kept |",
              "|---|" + "---:|" * (len(ns) + 3)]
        for k, s in res["scaling"].items():
            cells = [f"{fmt(s[n]['us_per_event'])} µs, {s[n]['maxrss_mb']:.1f} MB"
                     if n in s else "-" for n in ns]
            L.append(f"| {k} | " + " | ".join(cells)
                     + f" | {fmt(s.get('ratio_last_first'))}x | "
                       f"{s.get('rss_growth_mb', 0.0):+.1f} MB | "
                       f"{s.get('kept_growth_mb', 0.0):+.1f} MB |")
        L.append("")
    if res["errors"]:
        L += ["## Errors", ""] + [f"- {e}" for e in res["errors"]] + [""]
    if res["notes"]:
        L += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(L)


def chart(res: Dict[str, Any], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable: no PNG (pip install -e '.[bench]')"
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    m = res["machine"]
    fig.suptitle(f"llmstreamer benchmark — {m['cpu']}, {m['cores']} cores, "
                 f"{m['implementation']} {m['python']}", fontsize=12)

    def grouped(ax: Any, groups: List[str], series: Dict[str, List[Optional[float]]],
                title: str, ylabel: str, log_scale: bool = False) -> None:
        width = 0.8 / max(1, len(series))
        for i, (name, vals) in enumerate(series.items()):
            xs = [g + i * width for g in range(len(groups))]
            ys = [v if v is not None else 0 for v in vals]
            bars = ax.bar(xs, ys, width, label=name)
            for b, v in zip(bars, vals):
                if v:
                    ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()),
                                ha="center", va="bottom", fontsize=6, rotation=90)
        ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
        ax.set_xticklabels(groups)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=7)

    if "flood" in res:
        wires_ = list(res["flood"])
        names: List[str] = []
        for rows in res["flood"].values():
            names += [k for k in rows if k not in names and not k.endswith("-sdk")]
        names.append("official SDK")
        series = {k: [(res["flood"][w].get(k) or {}).get("us_per_event") for w in wires_]
                  for k in names[:-1]}
        series["official SDK"] = [(res["flood"][w].get(SDK_FOR[w]) or {}).get("us_per_event")
                                  for w in wires_]
        grouped(axes[0][0], wires_, series, "CPU µs per event, flood (log scale)",
                "µs / event", log_scale=True)
    if "delivery" in res:
        fr = list(res["delivery"])
        names = []
        for rows in res["delivery"].values():
            names += [k for k in rows if k not in names]
        series = {}
        for k in names:
            series[f"{k} p50"] = [(res["delivery"][f].get(k) or {}).get("p50_ms") for f in fr]
            series[f"{k} p99"] = [(res["delivery"][f].get(k) or {}).get("p99_ms") for f in fr]
        grouped(axes[0][1], fr, series, "delivery delay, ms (log scale)", "ms", log_scale=True)
    if "whole" in res or "import" in res:
        labels, vals = [], []
        for k, v in res.get("import", {}).items():
            if isinstance(v, dict):
                labels.append(f"import {k}")
                vals.append(v["ms"])
        for k, v in res.get("whole", {}).items():
            labels.append(f"whole {k}")
            vals.append(v["process_cpu_ms"])
        ax = axes[1][0]
        ax.barh(range(len(vals)), vals, color="tab:gray")
        ax.set_yticks(range(len(vals)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        for i, v in enumerate(vals):
            ax.annotate(f"{v:.0f}", (v, i), va="center", fontsize=7)
        ax.set_title(f"import (wall ms) and a whole {res['config']['whole_n']}-event request "
                     "(process CPU ms)", fontsize=10)
    if "scaling" in res:
        ax = axes[1][1]
        ns = [str(n) for n in res["config"]["scale_ns"]]
        series = {k: [(s.get(n) or {}).get("us_per_event") for n in ns]
                  for k, s in res["scaling"].items()}
        grouped(ax, [f"{int(n):,}" for n in ns], series, "CPU µs per event by stream length",
                "µs / event")
        ax2 = ax.twinx()
        mid = 0.8 / max(1, len(series)) * (len(series) - 1) / 2
        for k, s in res["scaling"].items():
            ax2.plot([i + mid for i in range(len(ns))],
                     [(s.get(n) or {}).get("maxrss_mb") for n in ns],
                     marker="o", linestyle="--", label=f"{k} peak RSS")
        ax2.set_ylabel("peak RSS, MB (dashed)")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=7, loc="upper right")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ------------------------------------------------------------------- main ---


SECTIONS = ("flood", "framings", "writes", "delivery", "import", "whole", "concurrent",
            "scaling")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny N, seconds; for `make test`")
    p.add_argument("--out", help="output directory (default: bench/; with --smoke, a "
                                 "temporary directory removed at the end)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                   help="also measure DIR/llmstreamer.py as llmstreamer@NAME")
    p.add_argument("--clients", help="comma-separated clients to measure (floor and "
                                     "variants always are), e.g. llmstreamer,naive")
    p.add_argument("--python", default=sys.executable, help="interpreter for the clients")
    p.add_argument("--rounds", type=int, help="override the number of rounds of every flood "
                                                "(flood, framings, writes)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server to CPU 0 and the clients to CPU 1")
    p.add_argument("--flood-n", type=int, help="override the flood size")
    p.add_argument("--render", metavar="RESULTS_JSON",
                   help="only rewrite results.md and results.png from a results.json")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
        out_dir = os.path.dirname(os.path.abspath(args.render))
        note = chart(res, os.path.join(out_dir, "results.png"))
        with open(os.path.join(out_dir, "results.md"), "w") as f:
            f.write(markdown(res))
        log(note or f"wrote {out_dir}/results.md, results.png")
        return 0
    cfg = dict(SMOKE if args.smoke else FULL, smoke=args.smoke)
    if args.rounds:
        cfg["rounds"] = cfg["framing_rounds"] = args.rounds
    if args.flood_n:
        cfg["flood_n"] = args.flood_n
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    for v in args.variant:
        path = v.partition("=")[2]
        if not os.path.isfile(os.path.join(path, "llmstreamer.py")):
            p.error(f"--variant {v}: no llmstreamer.py in {path}")
    out_dir = args.out or (tempfile.mkdtemp(prefix="llmstreamer-bench-") if args.smoke else HERE)
    os.makedirs(out_dir, exist_ok=True)

    t0 = time.monotonic()
    bench = Bench(args, cfg)
    res: Dict[str, Any] = {
        "machine": machine(args.python),
        "config": dict(cfg, smoke=args.smoke, sections=sections,
                       variants={n: d for n, d in bench.variants}),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "notes": [],
    }
    prebuild = []
    if "flood" in sections:
        prebuild += [f"{w}:chunked:{cfg['flood_n']}:{shape}" for w in wires.WIRES
                     for shape in wires.SHAPES]
    if "framings" in sections:
        prebuild += [f"{w}:{f}:{cfg['flood_n']}" for f in ("close", "gzip")
                     for w in wires.WIRES]
    try:
        bench.start_server(prebuild)
        for wire in wires.WIRES:  # warm-up: file cache, server bodies
            bench.run("floor", wire, "chunked", "flood", cfg["whole_n"])
        for section in sections:
            log(f"== {section}")
            res[{"import": "import"}.get(section, section)] = getattr(
                bench, {"import": "imports"}.get(section, section))()
    finally:
        bench.stop_server()
    for client, ok in bench._have.items():
        if not ok:
            res["notes"].append(f"{client} skipped: {SDK_MODULE[client]} is not importable "
                                "(install the bench extra)")
    res["notes"].append(
        "naive = requests + sseclient-py as its README shows, SSEClient(response): iterating a "
        "Response reads 128-byte pieces (iter_content(128)), text only, no accumulation. SDKs: "
        "create(stream=True) (google-genai: generate_content_stream), text only.")
    res["notes"] += bench.notes
    res["notes"].append(
        "Events, as the APIs write them (bench/server.py): 1-4 tokens of mostly ASCII "
        "English each; openai ~337 B (with usage:null and a padding 'obfuscation'), "
        "anthropic ~126 B, gemini ~303 B (': ' after keys, CRLF line ends), responses "
        "~262 B (event: line, sequence_number, item_id, obfuscation). 'v1 events' rows: "
        "the first event set, where 27 % of the events carry non-ASCII text and gemini "
        "has ', ' separators.")
    res["notes"].append(
        "On a shared machine CPU time moves by up to +-25 % between rounds and delivery p99 "
        "follows the machine's scheduling noise (compare with the floor's own p99); every "
        "round's figure is in results.json.")
    res["errors"] = bench.errors
    res["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res["elapsed_s"] = time.monotonic() - t0
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=False)
    png_note = chart(res, os.path.join(out_dir, "results.png"))
    if png_note:
        res["notes"].append(png_note)
        log("note: " + png_note)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown(res))
    log(f"wrote {out_dir}/results.md, results.json"
        + ("" if png_note else ", results.png") + f" in {res['elapsed_s']:.0f} s")
    if args.smoke and not args.out:  # nothing to keep: the smoke run checks, it does not report
        shutil.rmtree(out_dir, ignore_errors=True)
    if bench.errors:
        log(f"{len(bench.errors)} measurement(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
