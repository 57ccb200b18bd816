"""Simulated Ray clusters on this one machine, for tests (tests/test_multinode.py).

Everything binds to 127.0.0.1, lives under its own short temp dir (Unix socket paths must
stay under ~107 characters) and is stopped by what it started, never by name:

- `LocalCluster`: Ray's `ray.cluster_utils.Cluster`, several raylets on this host, held
  by a helper process of the test (`python -m tests.support.cluster`, one JSON command per
  line) so that no Ray object of it lives in the test process. Nodes are added and removed
  by handle, and closed by removing its own nodes one by one: `Cluster.shutdown()` would
  also delete the machine's `/tmp/ray/ray_current_cluster`, which may be a user's (the
  file is restored as it was).
- `AutoscalingCluster`: `ray start --head --autoscaling-config` with Ray's fake multi-node
  provider, which starts worker raylets on this host when the autoscaler launches nodes.
  Ray's own `ray.cluster_utils.AutoscalingCluster` is not used: its start and shutdown run
  `ray stop --force` (every Ray process of the machine), and it reads a
  fake_multi_node/example.yaml this Ray install lacks. Its config comes from our
  ray_cluster.yaml (`fake_autoscaling_config`), and it is stopped by killing the processes
  whose command line names its temp dir (the fake worker nodes' too: they take the head's
  temp dir).
- drivers run as separate processes with RAY_ADDRESS (`driver_env`), so the test process's
  own Ray connection (the session's `local_ray`) is never touched. Nothing here opens a
  GCS client in the test process: one that outlives its cluster ends the process 60 s
  later ("Failed to connect to GCS within 60 seconds").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # what `ray.init("auto")` reads
OBJECT_STORE = 100 * 1024 * 1024  # small: several raylets share this machine's /dev/shm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir(prefix: str = "kgcmn") -> str:
    return tempfile.mkdtemp(dir="/tmp", prefix=prefix)


def processes_under(tag: str) -> list:
    """This machine's processes whose command line names `tag` (our temp dir: raylets,
    GCS, agents, the autoscaler carry it), and their descendants: Ray's worker processes
    rename themselves `ray::…`, so they are found by parentage."""
    import psutil

    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == os.getpid():
            continue
        try:
            if any(tag in part for part in p.info["cmdline"] or []):
                found[p.pid] = p
                found.update((c.pid, c) for c in p.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_processes(tag: str, timeout: float = 3.0) -> list[str]:
    """SIGTERM, then SIGKILL after `timeout` (gcs_server lingers on SIGTERM), each process
    of `processes_under(tag)`, by pid (psutil checks a pid was not reused); returns what was
    still running ("pid:name"), so a caller can say it had to stop them."""
    import psutil

    procs = processes_under(tag)
    names = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            names.append(f"{p.pid}:{p.name()}")
            p.send_signal(signal.SIGTERM)
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    _kill(alive, timeout=5)
    return names


def _raylet_children(node) -> list:
    """The processes a node's raylet started (its workers), found by parentage."""
    import psutil

    out = []
    for info in node.all_processes.get("raylet", []):
        with contextlib.suppress(psutil.NoSuchProcess):
            out += psutil.Process(info.process.pid).children(recursive=True)
    return out


def _kill(procs: list, timeout: float = 30) -> None:
    """SIGKILL each (psutil checks a pid was not reused) and wait for them to end."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=timeout)


@contextlib.contextmanager
def address_file_kept():
    """Leave /tmp/ray/ray_current_cluster as it was (Ray's Cluster writes it)."""
    before = ADDRESS_FILE.read_bytes() if ADDRESS_FILE.exists() else None
    try:
        yield
    finally:
        if before is None:
            ADDRESS_FILE.unlink(missing_ok=True)
        else:
            ADDRESS_FILE.write_bytes(before)


def driver_env(address: str, **extra: str) -> dict:
    """The environment of a driver process for the cluster at `address`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KGC_FAULTS")}
    env.update(RAY_ADDRESS=address, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    # ray.init turns a 127.0.0.1 address into the machine's outward IP (where a real head
    # listens) unless Ray believes it runs single-host; ours listen on 127.0.0.1 only
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def wait_for(what: str, cond, timeout: float, every: float = 0.5):
    """Poll `cond()` until it returns something true; that value (or AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ----------------------------------------------------------------------------- Cluster
@dataclass(frozen=True)
class Node:
    node_id: str


class LocalCluster:
    """`ray.cluster_utils.Cluster` on 127.0.0.1 with its own temp dir, no dashboard, small
    object stores; worker nodes added and removed by handle; `close()` stops exactly its
    own processes (and lists any it then had to kill by temp dir).

    The Cluster lives in a helper process (`python -m tests.support.cluster`) that takes
    one JSON command per line: Ray objects made in the test process would outlive the
    cluster there (each in-process Node keeps a GCS client that, 60 s after its GCS is
    gone, ends the whole process), and the test session's own Ray sets token auth in this
    process's environment, which its nodes would inherit."""

    def __init__(self, head_cpus: float = 0):
        self.temp_dir = short_temp_dir()
        env = driver_env("")
        env.pop("RAY_ADDRESS")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cluster", self.temp_dir, str(head_cpus)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.address = self._call({"op": "address"})["address"]
        self.leftovers: list[str] = []

    def _call(self, command: dict):
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the cluster helper exited ({self._proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def add_node(self, num_cpus: float = 1, resources: dict | None = None) -> Node:
        return Node(
            self._call({"op": "add", "num_cpus": num_cpus, "resources": resources})["node_id"]
        )

    def remove_node(self, node: Node) -> None:
        """As a lost machine: the node's processes SIGKILLed, no goodbye to the GCS."""
        self._call({"op": "remove", "node_id": node.node_id})

    def node(self, node_id: str) -> Node:
        assert node_id in self.worker_ids(), node_id
        return Node(node_id)

    def worker_ids(self) -> set[str]:
        return set(self._call({"op": "workers"})["node_ids"])

    def actors(self) -> list[dict]:
        """Every actor of the cluster: class name, state, node id (from the GCS)."""
        return self._call({"op": "actors"})["actors"]

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                self._call({"op": "close"})
                self._proc.wait(timeout=60)
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            time.sleep(1)
            # a worker process outliving its raylet would still carry our temp dir
            self.leftovers = stop_processes(self.temp_dir)
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cluster_helper(temp_dir: str, head_cpus: float) -> None:
    """The helper process behind LocalCluster: a Cluster, commands on stdin, answers on
    stdout (Ray's own output goes to stderr)."""
    from ray.cluster_utils import Cluster

    out = sys.stdout
    sys.stdout = sys.stderr
    with address_file_kept():
        cluster = Cluster(
            initialize_head=True,
            connect=False,
            shutdown_at_exit=True,
            head_node_args={
                "num_cpus": head_cpus,
                "node_ip_address": "127.0.0.1",
                "temp_dir": temp_dir,
                "include_dashboard": False,
                "dashboard_agent_listen_port": free_port(),
                "object_store_memory": OBJECT_STORE,
                # a SIGKILLed raylet is declared dead after ~3 missed health checks of 1 s
                # (Ray's default: 5 of 3 s), so the tests see a lost node sooner
                "_system_config": {
                    "health_check_period_ms": 1000,
                    "health_check_failure_threshold": 3,
                },
            },
        )
        nodes = {}
        for line in sys.stdin:
            cmd = json.loads(line)
            op, answer = cmd["op"], {}
            try:
                if op == "address":
                    answer = {"address": cluster.address}
                elif op == "add":
                    node = cluster.add_node(  # waits until the GCS lists it
                        num_cpus=cmd["num_cpus"],
                        resources=cmd.get("resources") or {},
                        node_ip_address="127.0.0.1",
                        object_store_memory=OBJECT_STORE,
                    )
                    nodes[node.node_id] = node
                    answer = {"node_id": node.node_id}
                elif op == "remove":
                    node = nodes.pop(cmd["node_id"])
                    # its raylet's workers outlive a SIGKILLed raylet for a while (a released
                    # Train worker once finished a step with its peer): they go with it
                    workers = _raylet_children(node)
                    cluster.remove_node(node, allow_graceful=False)
                    _kill(workers)
                elif op == "workers":
                    answer = {"node_ids": sorted(nodes)}
                elif op == "actors":
                    table = cluster.global_state.actor_table(None).values()
                    answer = {"actors": [_actor(a) for a in table]}
                elif op == "close":
                    for node in list(cluster.worker_nodes):
                        cluster.remove_node(node)
                    cluster.remove_node(cluster.head_node)
            except Exception as exc:  # noqa: BLE001 - handed to the test
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(answer) + "\n")
            out.flush()
            if op == "close":
                break
    os._exit(0)  # no atexit: the nodes are gone, their GCS clients must not linger


def _actor(a: dict) -> dict:
    return {
        "class": a.get("ActorClassName", ""),
        "state": a.get("State"),
        "node_id": (a.get("Address") or {}).get("NodeID"),
        "name": a.get("Name", ""),
    }


# ----------------------------------------------------------------------------- autoscaling
HEAD_TYPE = "ray.head.default"  # the fake provider's name for the head node's type


def fake_autoscaling_config(
    cluster_yaml: str | Path,
    *,
    gcs_address: str,
    cpus_per_node: int = 1,
    idle_timeout_s: float = 10.0,
    object_store_bytes: int = OBJECT_STORE,
) -> dict:
    """Ray's fake multi-node provider config from our cluster config (ray_cluster.yaml).

    Kept: every worker type's name, min/max workers, the cluster's max_workers and
    upscaling speed, and each type's resources: GPUs stay declared resources (there are no
    GPUs behind them here), accelerator_type:* stays a custom resource. Changed: every
    type's CPUs become `cpus_per_node` (this machine has 2), the head type is the fake
    provider's `ray.head.default`, the idle timeout is `idle_timeout_s`, each node gets a
    small object store, and the cloud parts (provider, auth, docker, node_config, setup
    and start commands, file mounts) are dropped: the provider starts raylets on 127.0.0.1."""
    src = yaml.safe_load(Path(cluster_yaml).read_text())
    types = src["available_node_types"]
    head_name = src["head_node_type"]

    def scaled(resources: dict) -> dict:
        out = {k: v for k, v in resources.items() if k != "CPU"}
        out["CPU"] = cpus_per_node
        return out

    node_types = {
        HEAD_TYPE: {
            "resources": {k: v for k, v in scaled(types[head_name]["resources"]).items() if v},
            "node_config": {},
            "max_workers": 0,
        }
    }
    for name, t in types.items():
        if name == head_name:
            continue
        node_types[name] = {
            "resources": {**scaled(t["resources"]), "object_store_memory": object_store_bytes},
            "node_config": {},
            "min_workers": t.get("min_workers", 0),
            "max_workers": t.get("max_workers", src.get("max_workers", 2)),
        }
    empty: dict = {k: [] for k in ("initialization_commands", "setup_commands")}
    for k in ("head_setup_commands", "worker_setup_commands", "head_start_ray_commands"):
        empty[k] = []
    return {
        "cluster_name": src.get("cluster_name", "kgc"),
        "max_workers": src.get("max_workers", 2),
        "upscaling_speed": src.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_s / 60.0,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {},
        "docker": {},
        "available_node_types": node_types,
        "head_node_type": HEAD_TYPE,
        **empty,
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


class AutoscalingCluster:
    """A head started with `ray start --head --autoscaling-config=…` (Ray's autoscaler v1
    with the fake multi-node provider: it starts worker raylets on this host), on
    127.0.0.1, in its own temp dir, stopped by killing the processes that name that dir."""

    def __init__(self, cluster_yaml: str | Path, *, idle_timeout_s: float = 10.0):
        self.temp_dir = short_temp_dir("kgcas")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = fake_autoscaling_config(
            cluster_yaml, gcs_address=self.address, idle_timeout_s=idle_timeout_s
        )
        self.config_path = Path(self.temp_dir) / "autoscaling.json"
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.leftovers: list[str] = []

    def start(self) -> None:
        head = self.config["available_node_types"][HEAD_TYPE]["resources"]
        ray = str(Path(sys.executable).parent / "ray")
        cmd = [
            ray,
            "start",
            "--head",
            f"--autoscaling-config={self.config_path}",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={head.get('CPU', 1)}",
            f"--num-gpus={head.get('GPU', 0)}",
            "--include-dashboard=false",
            f"--object-store-memory={OBJECT_STORE}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ]
        env = {
            **os.environ,
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            # the fake provider starts worker raylets inside the autoscaler's process at
            # ray.util.get_node_ip_address(): the machine's outward IP unless Ray believes
            # it runs single-host (then 127.0.0.1); only the node IP and the `ray start`
            # worker-node CLI (not used) read this switch
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }
        env.pop("RAY_ADDRESS", None)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def session_dir(self) -> Path:
        return Path(self.temp_dir) / "session_latest"

    def monitor_log(self) -> str:
        logs = self.session_dir() / "logs"
        return "".join(
            p.read_text(errors="replace") for p in sorted(logs.glob("monitor*")) if p.is_file()
        )

    def status(self) -> str:
        """`ray status` for this cluster (its address, never the machine's default)."""
        ray = str(Path(sys.executable).parent / "ray")
        done = subprocess.run(
            [ray, "status", f"--address={self.address}"],
            env=driver_env(self.address),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout + done.stderr

    def nodes(self) -> list[dict]:
        """The cluster's nodes, from the raylet processes under its temp dir (node id and
        resources as each raylet was started with them): no GCS client in this process,
        which would outlive the cluster."""
        out = []
        for p in processes_under(self.temp_dir):
            with contextlib.suppress(Exception):
                if p.name() != "raylet":
                    continue
                args = dict(a[2:].split("=", 1) for a in p.cmdline() if "=" in a)
                flat = args.get("static_resource_list", "").split(",")
                resources = {k: float(v) for k, v in zip(flat[::2], flat[1::2])}
                out.append({"node_id": args.get("node_id", ""), "resources": resources})
        return out

    def stop(self) -> None:
        self.leftovers = stop_processes(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    cpus = float(sys.argv[2])
    _cluster_helper(sys.argv[1], int(cpus) if cpus.is_integer() else cpus)
