"""What a local Ray started by the framework runs, and where it listens.

Ray 2.60 starts, besides the GCS and the raylet, an API-server process (``dashboard.py`` with
only its usage-stats module and the web frontend disabled, even with ``include_dashboard=False``)
and a dashboard agent per node; Serve adds a controller, a proxy and replicas. None of them may
listen beyond loopback (README, "What runs where").
"""
from __future__ import annotations

import ipaddress

import psutil
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def _listening(pids: set[int]) -> list[tuple[int, str, str, int]]:
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids and conn.laddr:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            found.append((conn.pid, name, conn.laddr.ip, conn.laddr.port))
    return found


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_every_port_of_the_local_ray_and_serve_is_on_loopback(ray_session, serve_port, mlp_onnx):
    from framework.serving import ServedModel, deploy, shutdown_app
    from plugins.strategy_single import SingleConfig, SingleStrategy

    model = ServedModel("primary", "v-net", mlp_onnx.path.read_bytes(), mlp_onnx.schema, mlp_onnx.classes,
                        mlp_onnx.input_name, mlp_onnx.output_name)
    # both placements: the ingress replica and an arm deployment's replica (framework/compat/ray_serve_grpc.py)
    app = deploy([model], SingleStrategy, SingleConfig(), port=serve_port, app_name="net_check",
                 route_prefix="/net_check", placement="deployment")
    try:
        ours = {p.pid for p in psutil.Process().children(recursive=True)}
        listening = _listening(ours)
        names = " ".join(sorted({n for _, n, _, _ in listening}))
        assert any("raylet" in n or "gcs_server" in n for _, n, _, _ in listening), names
        exposed = [entry for entry in listening if not _loopback(entry[2])]
        assert not exposed, f"listening beyond loopback: {exposed}"
        assert any(port == serve_port for _, _, _, port in listening), "the Serve proxy is not among them"
    finally:
        shutdown_app(app)


def test_the_ray_token_file_is_private(ray_session):
    """Ray writes ~/.ray/auth_token 0644; a Ray started by the framework leaves it 0600 ([harden] 8)."""
    import stat

    from framework.compat.ray_auth_token import token_path

    path = token_path()
    if not path.exists():
        pytest.skip("this Ray runs without token authentication: no token file")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
