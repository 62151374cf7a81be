"""Faults at random calls (conformance.faults) end as reported errors naming the call and the rule, the
suite goes on, and nothing is left: a few points per kind, cheap ones by default. The Linux guest's points,
on the UML route and the QEMU-guest route (each point boots guests for half a minute, a stopped TCG guest's
for four), run with VIRTIO_FAULTS_LINUX=1; bench/bench_faults.py runs 100."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile

import pytest

from conformance import faults
from conformance.faults import CALLS, FaultPoint, become_subreaper, run_point
from conformance.runner import RunError, RunResult

LINUX = pytest.mark.skipif(os.getenv("VIRTIO_FAULTS_LINUX") != "1",
                           reason="boots UML guests for minutes: set VIRTIO_FAULTS_LINUX=1")
LINUX_QEMU = pytest.mark.skipif(os.getenv("VIRTIO_FAULTS_LINUX") != "1",
                                reason="boots TCG guests for minutes: set VIRTIO_FAULTS_LINUX=1")
_UNREACHABLE = ("apt-get update", "downloading", "Could not resolve", "Temporary failure", "Failed to fetch")


@pytest.fixture(scope="module")
def workdir():
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler (tools/test installs one)")
    become_subreaper()  # whatever a point leaves comes back to this process, where the judge sees it
    path = tempfile.mkdtemp(prefix="vcf-", dir="/tmp")  # short: QEMU's sockets live under it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _survives(point: FaultPoint, workdir: str) -> None:
    o = run_point(point, workdir)
    assert o.survived, o
    assert o.step and o.rule, o


@pytest.mark.parametrize("at", [2, *random.Random(19).sample(range(3, CALLS["c-segv"] + 1), 3)])
def test_a_segfault_in_the_c_device_at_a_random_call_is_survived(workdir, at):
    _survives(FaultPoint("c-segv", at), workdir)


def test_a_hang_in_the_c_device_is_survived(workdir):
    _survives(FaultPoint("c-hang", 9), workdir)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU (tools/test installs it)")
def test_qemu_killed_at_a_call_is_survived(workdir):
    _survives(FaultPoint("qemu-kill", 6), workdir)


def test_the_judge_names_step_and_rule(workdir):
    o = run_point(FaultPoint("c-segv", 4), workdir)
    assert "crashed the library's process (SIGSEGV)" in o.why and o.step.startswith("device."), o
    assert o.rule == "boot", o  # the fourth call of an example is still in its boot


@LINUX
@pytest.mark.parametrize("kind", ["uml-kill", "uml-stop", "vhost-cut"])
def test_the_linux_guest_or_its_vhost_user_link_failing_is_survived(workdir, kind):
    _survives(FaultPoint(kind, 2), workdir)


@pytest.fixture(scope="module")
def qemu_route():
    """The QEMU-guest route's builds (Debian's cloud kernel, QEMU 11.1), provisioned on first use."""
    from conformance.registry import DutError, resolve

    try:
        resolve("linux-qemu", "driver")
    except DutError as e:
        if any(s in str(e) for s in _UNREACHABLE):
            pytest.skip(f"Debian's registry cannot be reached to provision the route's builds: {e}")
        raise


@LINUX_QEMU
@pytest.mark.parametrize("kind, step", [("lq-kill", "insmod"), ("lq-stop", "driver.probe")])
def test_the_guest_qemu_of_the_qemu_guest_route_killed_or_stopped_is_survived(workdir, qemu_route, kind,
                                                                              step):
    o = run_point(FaultPoint(kind, 2), workdir)  # before probe: its first agent command meets the fault
    assert o.survived, o
    assert (o.step, o.rule) == (step, "boot"), o


def test_a_point_that_leaves_a_process_group_or_a_guest_ram_file_is_not_survived(workdir, monkeypatch):
    """The judge's leftovers: a signalled process group still running and a RAM file in /dev/shm."""
    if not faults.SHM.is_dir():
        pytest.skip("no /dev/shm")
    ram = faults.SHM / f"vc-ram-{os.getpid()}-leftover"
    left = subprocess.Popen(["sleep", "60"], start_new_session=True)

    def leaky_run(impl, profile, **kwargs):
        ram.write_bytes(b"")
        faults._signalled_groups.add(left.pid)
        gone = RunError("implementation", "driver.probe: gone", ("state.boot()",))
        return RunResult(impl, profile, (), (gone,), 0.0, 1)

    monkeypatch.setattr(faults, "run", leaky_run)
    try:
        o = run_point(FaultPoint("c-segv", 1), workdir)
    finally:
        left.kill()
        left.wait()
        ram.unlink(missing_ok=True)
    assert not o.survived
    assert f"process groups signalled and not empty: {left.pid}" in o.why, o
    assert str(ram) in o.why, o  # the sleep ran before the point: the group check saw it, not the children's


def _frontend(tmp: str):
    from conformance.adapters.vhost_user.backend import VhostUserBackend
    from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice

    be = VhostUserBackend(os.path.join(tmp, "s"), DEFAULT_OFFER, BalloonDevice)
    front = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    front.connect(be.path)
    be.poll(1.0)  # accept
    return be, front


def test_a_vhost_user_peer_closing_in_the_middle_of_a_message_is_the_backends_error(tmp_path):
    from conformance.adapters.vhost_user import protocol as P

    be, front = _frontend(str(tmp_path))
    try:
        front.sendall(P.HEADER.pack(P.Request.SET_FEATURES, 1, 8) + b"\0\0\0")  # 3 of 8 payload bytes
        front.close()
        be.poll(1.0)
        assert be.error is not None and "payload cut short: 3 of 8 bytes" in be.error
    finally:
        be.close()
    assert not os.path.exists(be.path)


def test_a_vhost_user_peer_gone_before_the_reply_is_the_backends_error(tmp_path):
    from conformance.adapters.vhost_user import protocol as P

    be, front = _frontend(str(tmp_path))
    try:
        front.sendall(P.HEADER.pack(P.Request.GET_FEATURES, 1, 0))  # asks for a reply, then goes
        front.close()
        for _ in range(3):  # the reply meets the closed peer (EPIPE); then the read sees the end
            be.poll(0.2)
        assert be.error is not None and "the frontend closed the connection" in be.error, be.error
        assert be.conn is None and be.disconnected
    finally:
        be.close()
