"""The chaos harness's private network: namespaces, one bridge, nftables faults, a CPU cgroup.

Layout (everything is made by :class:`Lab` and removed by :meth:`Lab.close`)::

    namespace gchaos<pid>-hub        bridge br0, no address, no route; the fault rules
        │  veth v000 ... v099 (ports of br0)
        ▼
    namespace gchaos<pid>-n000       eth0 10.213.1.1/16 (MAC 02:47:43:00:00:00), lo
    namespace gchaos<pid>-n001       eth0 10.213.1.2/16 ...

The root namespace is never touched: no link, address, route or rule is added to it, so no
node can reach anything outside the bridge (a node namespace has only ``lo`` and ``eth0``,
with no default route: a send to any other address fails with "network unreachable"). Only
one private range is used, :data:`NETWORK`. Neighbours are static (``nud permanent``, one per
other node): the kernel's neighbour table is shared by all namespaces and would overflow its
``gc_thresh3`` (1024) with 100 nodes that each learn 99 neighbours; permanent entries are not
counted against it. IPv6 addresses are not generated on any link (no router solicitations).

Faults are nftables rules of one table, ``bridge gchaos``, in the hub namespace: its forward
chain sees every frame between two nodes exactly once, so one atomic ``nft -f`` switches a
whole scenario (a partition of 50 nodes starts and heals at one instant):

* loss: ``numgen random mod 100000 < p*1000 drop`` (p per cent of every frame, both ways,
  TCP included, as netem's loss would be; the kernel's random numbers, not seeded);
* partition: ``ip saddr {side A} ip daddr {side B} drop`` and back;
* one-way cut: ``ip daddr X drop`` (X hears nothing, what it sends still arrives);
* UDP block: ``ip saddr X ip protocol udp drop`` and ``ip daddr X ip protocol udp drop``.

CPU starvation uses cgroup v1's ``cpu`` controller (``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``) in ``/sys/fs/cgroup/cpu/gchaos<pid>-starve``, or cgroup v2's
``cpu.max`` where the ``cpu`` controller is mounted unified.

Cleanup: :meth:`Lab.close` kills every process left in the lab's namespaces, deletes the
namespaces (which deletes their links, the bridge and the rules with them) and the cgroup. It
runs from ``finally``, from ``atexit``, and after SIGTERM/SIGHUP/SIGINT (turned into
exceptions by :func:`install_signal_handlers`), with those signals blocked while it runs.
:func:`sweep` removes what an earlier run left (the harness was SIGKILLed): namespaces and
cgroups named ``gchaos<pid>-...`` whose pid is no longer a running harness.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

PREFIX = "gchaos"
"""Every namespace and cgroup this harness makes is named ``gchaos<pid>-...``."""

NETWORK = "10.213.0.0/16"
"""The only range used, inside the lab's namespaces."""

PORT = 7946
"""Every node listens on this UDP and TCP port of its own address."""

NETNS_DIR = "/run/netns"
CGROUP_CPU_V1 = "/sys/fs/cgroup/cpu"
CGROUP_V2 = "/sys/fs/cgroup"

_NAME_RE = re.compile(rf"^{PREFIX}(\d+)-")
_live_labs: list[Lab] = []
_handlers_installed = False


class LabError(RuntimeError):
    """A namespace, link, rule or cgroup could not be made."""


def _run(args: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def missing_tools() -> list[str]:
    """Return why a lab cannot be made here (empty when it can): root, ``ip``, ``nft``, netns."""
    out = []
    if os.geteuid() != 0:
        out.append("not root (network namespaces need CAP_SYS_ADMIN)")
    for tool in ("ip", "nft"):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in os.environ.get("PATH", "/usr/sbin:/usr/bin").split(":") + ["/usr/sbin", "/sbin"]):
            out.append(f"no `{tool}` command (Debian: apt-get install "
                       f"{'iproute2' if tool == 'ip' else 'nftables'})")
    return out


def unavailable() -> str:
    """Why a lab cannot be made here, or ``""`` when it can (tries a namespace with a bridge
    and a bridge-family nftables table, then removes it)."""
    missing = missing_tools()
    if missing:
        return "; ".join(missing)
    ns = f"{PREFIX}{os.getpid()}-probe"
    try:
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
             stdin="table bridge gchaos {\n\tchain forward {\n\t\ttype filter hook forward priority 0;"
                   " policy accept;\n\t\tnumgen random mod 100000 < 1 drop\n\t}\n}\n")
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot make a network namespace with a bridge and nftables rules: {exc}"
    finally:
        _run(["ip", "netns", "del", ns], check=False)
    return ""


def address(index: int) -> str:
    """The IPv4 address of node ``index``: 10.213.1.1, 10.213.1.2, ... (250 per /24)."""
    net = ipaddress.ip_network(NETWORK)
    a, b = divmod(index, 250)
    host = net.network_address + ((1 + a) << 8) + 1 + b
    if host not in net:
        raise LabError(f"node {index} does not fit in {NETWORK}")
    return str(host)


def mac(index: int) -> str:
    """The (locally administered) MAC address of node ``index``'s eth0."""
    return f"02:47:43:00:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}"


def cpu_cgroup_kind() -> str:
    """``"v1"`` or ``"v2"``: where a CPU quota can be set on this host, or ``""`` for nowhere."""
    if os.path.exists(os.path.join(CGROUP_CPU_V1, "cpu.cfs_quota_us")):
        return "v1"
    try:
        with open(os.path.join(CGROUP_V2, "cgroup.controllers"), encoding="ascii") as f:
            if "cpu" in f.read().split():
                return "v2"
    except OSError:
        pass
    return ""


def _harness_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"chaos" in f.read()
    except OSError:
        return False


def _kill_netns_pids(ns: str) -> None:
    for line in _run(["ip", "netns", "pids", ns], check=False).split():
        try:
            os.kill(int(line), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def _remove_cgroup(path: str) -> None:
    """Move the cgroup's processes back to the root of its hierarchy, then remove it."""
    if not os.path.isdir(path):
        return
    root = os.path.dirname(path)
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
            pids = f.read().split()
    except OSError:
        pids = []
    for pid in pids:
        try:
            with open(os.path.join(root, "cgroup.procs"), "w", encoding="ascii") as f:
                f.write(pid)
        except OSError:
            pass
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def sweep() -> list[str]:
    """Remove namespaces and cgroups left by harness runs that are no longer running.

    Returns:
        The names removed.
    """
    removed = []
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    stale = sorted(n for n in names if (m := _NAME_RE.match(n)) and not _harness_alive(int(m.group(1))))
    for ns in stale:     # nodes first (they hold the hub's veth peers), the hub last
        _kill_netns_pids(ns)
    for ns in sorted(stale, key=lambda n: n.endswith("-hub")):
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    for base in (CGROUP_CPU_V1, CGROUP_V2):
        if not os.path.isdir(base):
            continue
        for name in os.listdir(base):
            m = _NAME_RE.match(name)
            if m and not _harness_alive(int(m.group(1))):
                _remove_cgroup(os.path.join(base, name))
                removed.append(os.path.join(base, name))
    return removed


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into ``SystemExit`` (SIGINT is ``KeyboardInterrupt`` already),
    so that ``finally`` blocks remove the lab; and remove every open lab at exit."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    atexit.register(close_all)


def close_all() -> None:
    """Close every lab still open in this process (the ``atexit`` hook)."""
    for lab in list(_live_labs):
        lab.close()


class Lab:
    """N node namespaces on one bridge in a hub namespace, with fault rules and a CPU cgroup.

    Use as a context manager; :meth:`close` is idempotent and also runs at exit.
    """

    def __init__(self) -> None:
        if _live_labs:
            raise LabError("one lab per process: close the other first")
        self.run_id = f"{PREFIX}{os.getpid()}"
        self.hub = f"{self.run_id}-hub"
        self.size = 0
        self._made: list[str] = []
        self._cgroup = ""
        self._closed = False
        self._lock = threading.Lock()
        self.loss_pct = 0.0
        self.cuts: list[tuple[frozenset[int], frozenset[int]]] = []
        self.deaf: set[int] = set()
        self.udp_blocked: set[int] = set()
        _live_labs.append(self)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ namespaces

    def ns(self, index: int) -> str:
        """The namespace name of node ``index``."""
        return f"{self.run_id}-n{index:03d}"

    def create(self, size: int) -> None:
        """Make the hub (bridge, empty rule table) and ``size`` node namespaces, each wired to it."""
        if self.size:
            raise LabError("the lab is already created")
        for i in range(size):
            address(i)      # every address fits before anything is made
        _run(["ip", "netns", "add", self.hub])
        self._made.append(self.hub)
        _run(["ip", "-n", self.hub, "-batch", "-"], stdin=(
            "link set lo up\n"
            "link add br0 type bridge\n"
            "link set br0 addrgenmode none\n"
            "link set br0 up\n"))
        self.size = size
        self.apply_rules()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self._make_node, range(size)))

    def _make_node(self, i: int) -> None:
        ns = self.ns(i)
        _run(["ip", "netns", "add", ns])
        with self._lock:
            self._made.append(ns)
        port = f"v{i:03d}"
        _run(["ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
              "address", mac(i), "netns", ns])
        _run(["ip", "-n", self.hub, "-batch", "-"], stdin=(
            f"link set {port} addrgenmode none\n"
            f"link set {port} master br0 up\n"))
        lines = ["link set lo up", "link set eth0 addrgenmode none", "link set eth0 up",
                 f"addr add {address(i)}/{NETWORK.split('/')[1]} dev eth0"]
        lines += [f"neigh replace {address(j)} lladdr {mac(j)} dev eth0 nud permanent"
                  for j in range(self.size) if j != i]
        _run(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(lines) + "\n")

    def exec_prefix(self, index: int) -> list[str]:
        """The command prefix that runs a program inside node ``index``'s namespace (it execs)."""
        return ["ip", "netns", "exec", self.ns(index)]

    # ------------------------------------------------------------------ faults

    def ruleset(self) -> str:
        """The nftables text of the current faults (the whole table, replaced atomically)."""
        rules = []
        for a, b in self.cuts:
            sa = ", ".join(address(i) for i in sorted(a))
            sb = ", ".join(address(i) for i in sorted(b))
            rules.append(f"ip saddr {{ {sa} }} ip daddr {{ {sb} }} drop")
        for i in sorted(self.deaf):
            rules.append(f"ip daddr {address(i)} drop")
        for i in sorted(self.udp_blocked):
            rules.append(f"ip saddr {address(i)} ip protocol udp drop")
            rules.append(f"ip daddr {address(i)} ip protocol udp drop")
        if self.loss_pct > 0:
            rules.append(f"numgen random mod 100000 < {round(self.loss_pct * 1000)} drop")
        body = "".join(f"\t\t{r}\n" for r in rules)
        return ("table bridge gchaos\n"
                "delete table bridge gchaos\n"
                "table bridge gchaos {\n"
                "\tchain forward {\n"
                "\t\ttype filter hook forward priority 0; policy accept;\n"
                f"{body}"
                "\t}\n"
                "}\n")

    def apply_rules(self) -> float:
        """Replace the hub's rule table with :meth:`ruleset` in one transaction.

        Returns:
            ``time.time()`` once the new rules are in force.
        """
        _run(["ip", "netns", "exec", self.hub, "nft", "-f", "-"], stdin=self.ruleset())
        return time.time()

    def set_loss(self, pct: float) -> float:
        """Drop ``pct`` per cent of every frame between two nodes (0 for none)."""
        if not 0 <= pct < 100:
            raise LabError(f"loss must be in [0, 100) per cent, got {pct}")
        self.loss_pct = pct
        return self.apply_rules()

    def partition(self, side_a: Iterable[int], side_b: Iterable[int]) -> float:
        """Cut every frame between the two sides, both ways."""
        a, b = frozenset(side_a), frozenset(side_b)
        self.cuts = [(a, b), (b, a)]
        return self.apply_rules()

    def cut_inbound(self, index: int) -> float:
        """Node ``index`` receives nothing; what it sends still arrives (a one-way link)."""
        self.deaf.add(index)
        return self.apply_rules()

    def block_udp(self, index: int) -> float:
        """Drop node ``index``'s UDP, both ways; its TCP still flows."""
        self.udp_blocked.add(index)
        return self.apply_rules()

    def heal(self) -> float:
        """Remove every partition, cut and block (loss stays as set)."""
        self.cuts, self.deaf, self.udp_blocked = [], set(), set()
        return self.apply_rules()

    # ------------------------------------------------------------------ CPU quota

    def limit_cpu(self, pid: int, pct_of_core: float, period_us: int = 100_000) -> str:
        """Cap process ``pid`` (all its threads) at ``pct_of_core`` per cent of one core, per
        scheduler period of ``period_us`` (a longer period: longer stalls once the quota is spent).

        Returns:
            What was used, e.g. ``"cgroup v1 cpu.cfs_quota_us=5000/100000"``.

        Raises:
            LabError: no cgroup CPU controller can be written here.
        """
        kind = cpu_cgroup_kind()
        period = period_us
        quota = max(1000, round(period * pct_of_core / 100))
        if kind == "v1":
            path = os.path.join(CGROUP_CPU_V1, f"{self.run_id}-starve")
            os.makedirs(path, exist_ok=True)
            self._cgroup = path
            self._write(path, "cpu.cfs_period_us", str(period))
            self._write(path, "cpu.cfs_quota_us", str(quota))
            self._write(path, "cgroup.procs", str(pid))
            return f"cgroup v1 cpu.cfs_quota_us={quota}/cpu.cfs_period_us={period}"
        if kind == "v2":
            path = os.path.join(CGROUP_V2, f"{self.run_id}-starve")
            os.makedirs(path, exist_ok=True)
            self._cgroup = path
            self._write(path, "cpu.max", f"{quota} {period}")
            self._write(path, "cgroup.procs", str(pid))
            return f"cgroup v2 cpu.max={quota} {period}"
        raise LabError("no writable cgroup cpu controller (cgroup v1 cpu or v2 cpu.max)")

    def add_to_cpu_limit(self, pid: int) -> None:
        """Put process ``pid`` in the cgroup of :meth:`limit_cpu` too (it shares the quota)."""
        if not self._cgroup:
            raise LabError("no CPU limit is set")
        self._write(self._cgroup, "cgroup.procs", str(pid))

    def unlimit_cpu(self) -> None:
        """Remove the CPU cgroup (its processes go back to the root group)."""
        if self._cgroup:
            _remove_cgroup(self._cgroup)
            self._cgroup = ""

    @staticmethod
    def _write(path: str, name: str, value: str) -> None:
        try:
            with open(os.path.join(path, name), "w", encoding="ascii") as f:
                f.write(value)
        except OSError as exc:
            raise LabError(f"cannot write {value!r} to {os.path.join(path, name)}: {exc}") from exc

    # ------------------------------------------------------------------ cleanup

    def close(self) -> None:
        """Kill what runs in the lab's namespaces, delete them and the cgroup (idempotent)."""
        if self._closed:
            return
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            self._closed = True
            self.unlimit_cpu()
            nodes = [n for n in self._made if n != self.hub]
            for ns in nodes:
                _kill_netns_pids(ns)
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda ns: _run(["ip", "netns", "del", ns], check=False), nodes))
            if self.hub in self._made:
                _kill_netns_pids(self.hub)
                _run(["ip", "netns", "del", self.hub], check=False)
            # Anything of ours still there (a namespace made by a call that failed half-way)
            if os.path.isdir(NETNS_DIR):
                for name in os.listdir(NETNS_DIR):
                    if name.startswith(self.run_id + "-"):
                        _kill_netns_pids(name)
                        _run(["ip", "netns", "del", name], check=False)
            self._made.clear()
        finally:
            if self in _live_labs:
                _live_labs.remove(self)
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def leftovers(self) -> list[str]:
        """Namespaces of this lab that still exist (empty after :meth:`close`)."""
        if not os.path.isdir(NETNS_DIR):
            return []
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(self.run_id + "-"))
