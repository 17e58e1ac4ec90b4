"""Deploying, reading and removing the serving application on Ray Serve."""
from __future__ import annotations

import dataclasses
import errno
import logging
import math
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from ..compat.ray_direct_ingress import controller_options
from ..compat.ray_serve import running_http_options
from ..errors import RecipeError, ServingError
from . import ingress_modes
from .ingress_modes import DEFAULT_INGRESS, INGRESS_MODES, validate_ingress  # noqa: F401 (re-exported)
from ..tokens import token_problem
from .types import RECORD_FIELDS, ServedModel, ServingApp

log = logging.getLogger(__name__)

PLACEMENTS = ("ingress", "deployment")
HEALTH_TIMEOUT_S = 90.0
#: each replica reserves this much CPU: whole CPUs would let only two replicas fit on 2 cores
REPLICA_NUM_CPUS = 0.5
#: requests a replica works on at once; the rest wait in the proxy
MAX_ONGOING_REQUESTS = 16
#: the most requests one batch may hold: the deployment-placement ingress has at most
#: 4 * MAX_ONGOING_REQUESTS calls in flight, so a larger batch could never fill
MAX_BATCH_SIZE = 4 * MAX_ONGOING_REQUESTS
AUTOSCALING_KEYS = ("min_replicas", "max_replicas", "target_ongoing_requests")
BATCHING_KEYS = ("max_batch_size", "batch_wait_timeout_s")
#: Ray Serve's own default for target_ongoing_requests (written out so -/strategy and errors show it)
DEFAULT_TARGET_ONGOING_REQUESTS = 2.0
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.005
#: a stopping replica checks this often whether its requests are done (Serve's default, 2 s, is
#: the floor of every stop: a Ctrl-C, an app removal)
SHUTDOWN_WAIT_LOOP_S = 0.2
#: and waits at most this long for them (requests here take milliseconds)
SHUTDOWN_TIMEOUT_S = 5.0
#: Serve checks each replica this often (its default: 10 s): a dead replica is replaced, and a
#: lone one's URL answers again, seconds sooner
HEALTH_CHECK_PERIOD_S = 2.0


def deploy(
    models: list[ServedModel],
    strategy_cls: type,
    strategy_config: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    app_name: str = "framework",
    placement: str = "ingress",
    replicas: int = 1,
    record_buffer: int = 10000,
    admin_token: str | None = None,
    num_cpus: float = REPLICA_NUM_CPUS,
    faults: Mapping[str, Mapping[str, Any]] | None = None,
    rank_class: Any = None,
    feedback_memory: int = 100_000,
    autoscaling: Mapping[str, Any] | None = None,
    batching: Mapping[str, Any] | None = None,
    label_mapping: Mapping[str, str] | None = None,
    ingress: str = DEFAULT_INGRESS,
    balancer_port: int = 0,
    client_token: str | None = None,
    record_log: str | Path | None = None,
    record_log_fsync: str = "batch",
    metrics: bool = True,
    shared_decisions: bool = True,
) -> ServingApp:
    """Deploy ``models`` behind one ingress that routes with ``strategy_cls``; wait until healthy.

    ``ingress="direct"`` (the default): clients reach the ingress replicas on their own ports,
    without Serve's HTTP proxy: the returned app's URL is the replica's port, or with several
    ingress replicas a load balancer's on ``balancer_port`` (0: a free one); ``"proxy"``: through
    Serve's proxy on ``host:port`` (see ``ingress_modes.py``). Either way the proxy reaches it too.

    ``placement="ingress"``: ``replicas`` ingress replicas, each holding every arm's ONNX session
    (no extra hop). ``placement="deployment"``: one ingress replica and ``replicas`` replicas per
    arm, reached by DeploymentHandle. With several ingress replicas (``replicas`` > 1 or
    ``autoscaling``) and ``shared_decisions`` (the default) one strategy decides for all of them:
    a Ray actor each replica routes from a copy of and reports to every 50 ms
    (``serving/decisions.py``), so counts add up, an admin command given to any replica reaches
    all, ``-/strategy`` and ``-/events`` are the same everywhere and sticky users keep their arm.
    ``shared_decisions=False``: each replica keeps its own strategy state and events. The records
    buffer and the request ids kept for feedback stay per replica: feedback for a request another
    replica answered is refused as unknown (404) unless it reaches the same replica (the balancer
    sends requests with the same ``X-User-Id`` to the same replica).

    ``admin_token``: required as ``X-Admin-Token`` by every ``-/`` endpoint, commands and reads
    alike (at least 16 characters); None makes up a random one, returned in
    ``ServingApp.admin_token`` (so only the caller can administer the app).
    ``client_token``: when given, predict, rank and feedback need ``Authorization: Bearer TOKEN``.
    ``record_log``: a folder for this deployment's durable record log (each deploy makes a new
    sub-folder, which its replicas share and a restarted replica reads back); None: off.
    ``record_log_fsync``: "batch" (fsync each write batch) or "never".
    ``metrics``: Prometheus text on ``GET /metrics`` of each ingress replica (``serving/metrics.py``).
    ``faults``: **for demos, tests and benchmarks only**: ``{arm: {"error_rate": 0.05,
    "extra_latency_ms": 0.0, "seed": 0}}`` makes that arm fail (503 when it answers the client)
    or answer late, injected by the ingress in front of the arm whatever the placement.
    ``rank_class``: the class whose probability ``POST rank`` sorts by (None: the last class).
    ``feedback_memory``: how many recent request ids are remembered for ``POST feedback``.
    ``num_cpus``: the CPU each replica reserves (fractional so several fit on a small machine).
    ``autoscaling``: ``{min_replicas, max_replicas, target_ongoing_requests}`` (see
    ``validate_autoscaling``) instead of a fixed ``replicas``: for each arm deployment with
    ``placement="deployment"``, for the ingress with ``placement="ingress"`` (where what is said
    above of several ingress replicas applies as soon as it scales past one).
    ``batching``: ``{max_batch_size, batch_wait_timeout_s}`` (see ``validate_batching``); when on,
    requests in flight on one replica for the same arm are answered by one onnxruntime call.
    ``label_mapping``: arms whose models predict different classes (trained on an old and a new
    label schema) are refused in one comparison unless this maps each class to the class both
    are judged in; feedback then scores every arm through it (see ``check_label_schemas``).
    Raises RecipeError (the strategy rejects the arms, a bad autoscaling / batching key, arms of
    different label schemas without a mapping) or ServingError (anything else).
    """
    where = f"app '{app_name}' on http://{host}:{port}{route_prefix}"
    _validate(models, placement, replicas, route_prefix, where)
    validate_ingress(ingress, balancer_port, where)
    autoscaling = validate_autoscaling(autoscaling, where)
    batching = validate_batching(batching, where)
    if autoscaling and int(replicas) != 1:
        raise RecipeError(
            f"{where}: serve.replicas={replicas} and serve.autoscaling are both set: autoscaling decides the "
            "replica count between min_replicas and max_replicas; drop serve.replicas"
        )
    for name, token in (("serve.admin_token", admin_token), ("serve.client_token", client_token)):
        if token is not None and token_problem(token):
            raise ServingError(f"{where}: {name}: refused: {token_problem(token)}")
    if admin_token is not None and admin_token == client_token:
        raise ServingError(f"{where}: serve.client_token: the same as the admin token")
    admin_token = admin_token or secrets.token_urlsafe(32)
    if record_log_fsync not in ("batch", "never"):
        raise ServingError(f"{where}: serve.record_log_fsync: must be 'batch' or 'never', got {record_log_fsync!r}")
    log_settings = None
    if record_log is not None:
        folder = Path(record_log).expanduser().resolve() / app_name / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        try:
            folder.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise ServingError(f"{where}: serve.record_log: cannot create {folder}: {exc.strerror or exc}") from None
        log_settings = {"directory": str(folder), "fsync": record_log_fsync}
    faults = _validate_faults(faults, [m.arm for m in models], where)
    _validate_rank_class(models, rank_class, where)
    if int(feedback_memory) < 1:
        raise ServingError(f"{where}: feedback_memory must be >= 1, got {feedback_memory}")
    label_mapping = check_label_schemas(models, label_mapping)
    arms = {m.arm: m.version for m in models}
    strategy_cls.arm_names(strategy_config, arms)  # RecipeError naming the recipe keys
    try:  # pure Python and cheap: a broken config fails here, not after replicas were scheduled
        strategy_cls(strategy_config, arms=dict(arms))
    except Exception as exc:
        raise ServingError(f"{where}: strategy {getattr(strategy_cls, 'name', strategy_cls)!r} cannot start: {exc}") from exc
    from .onnx_runner import OnnxRunner

    for m in models:  # load once in the driver: a bad file names its arm in seconds, not after retries
        OnnxRunner(m)

    import ray
    from ray import serve

    from .deployments import ArmModel
    from .http import Ingress

    # Serve logs every app start/stop at INFO on the driver; the run prints its own stage lines
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if not ray.is_initialized():  # else serve.start() would ray.init() with every core and a dashboard
        from ..engine import start_ray

        start_ray()
    ensure_serve(host, port)
    common = {
        "ray_actor_options": {"num_cpus": num_cpus}, "max_constructor_retry_count": 2,
        "graceful_shutdown_wait_loop_s": SHUTDOWN_WAIT_LOOP_S, "graceful_shutdown_timeout_s": SHUTDOWN_TIMEOUT_S,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
    }
    extra = {"faults": faults, "rank_class": rank_class, "feedback_memory": int(feedback_memory), "batching": batching,
             "client_token": client_token, "record_log": log_settings, "metrics": bool(metrics),
             **({"label_mapping": label_mapping} if label_mapping else {})}
    if placement == "ingress" and (autoscaling or int(replicas) > 1) and shared_decisions:
        extra["decision_state"] = _start_decision_state(app_name, strategy_cls, strategy_config, arms, where)
    # Ray refuses num_replicas next to autoscaling_config: one or the other.
    scale = {"autoscaling_config": dict(autoscaling)} if autoscaling else {"num_replicas": replicas}
    # A replica must accept at least a batch's worth of calls, or batches could never fill.
    ongoing = max(MAX_ONGOING_REQUESTS, batching["max_batch_size"])
    if faults:
        log.warning("fault injection is ON for arm(s) %s: for demos, tests and benchmarks only", sorted(faults))
    if placement == "ingress":
        options = ingress_modes.deployment_options(ingress, {"max_ongoing_requests": ongoing, **scale, **common})
        app = Ingress.options(**options).bind(
            models, strategy_cls, strategy_config, record_buffer, admin_token, None, **extra
        )
    else:
        handles = {
            m.arm: ArmModel.options(name=f"arm_{m.arm}", max_ongoing_requests=ongoing, **scale, **common).bind(m, batching)
            for m in models
        }
        # The ingress only parses and routes here: many requests may wait on arms at once. It
        # needs the models' metadata, not their bytes (which may be large).
        meta = [dataclasses.replace(m, onnx_bytes=b"") for m in models]
        options = ingress_modes.deployment_options(
            ingress, {"num_replicas": 1, "max_ongoing_requests": 4 * MAX_ONGOING_REQUESTS, **common}
        )
        app = Ingress.options(**options).bind(
            meta, strategy_cls, strategy_config, record_buffer, admin_token, handles, **extra
        )
    ingress_modes.stop(app_name)  # a redeploy under the same name follows the new replicas
    try:
        serve.run(app, name=app_name, route_prefix=route_prefix, blocking=False)
    except Exception as exc:
        raise ServingError(f"{where}: the deployment failed to start: {exc}") from exc
    published = port
    if ingress == "direct":
        # the ingress deployment's own scale: with placement "deployment" it is one replica
        scaled = placement == "ingress"
        published = ingress_modes.publish(app_name, host, replicas if scaled else 1, autoscaling if scaled else None,
                                          balancer_port, where, HEALTH_TIMEOUT_S)
    served = ServingApp(app_name, host, published, route_prefix, placement, dict(arms), admin_token,
                        ingress=ingress, client_token=client_token,
                        record_log=log_settings["directory"] if log_settings else None)
    try:
        _wait_healthy(served, where)
    except ServingError:
        ingress_modes.stop(app_name)
        raise
    log.info("serving %s at %s (%s ingress)", arms, served.url, ingress)
    return served


def check_label_schemas(models: list[ServedModel], label_mapping: Mapping[str, str] | None) -> dict:
    """Arms must predict the same classes to be compared, unless ``label_mapping`` says how: every
    class it names must be a class of some arm, and mapped through it the arms' classes must
    overlap. Returns the mapping to judge feedback with ({} when the arms share their classes)."""
    mapping = {str(k): str(v) for k, v in (label_mapping or {}).items()}
    schemas = {m.arm: [str(c) for c in m.classes] for m in models}
    if len({tuple(sorted(c)) for c in schemas.values()}) <= 1:
        return mapping
    described = "; ".join(f"{arm}: {', '.join(c)}" for arm, c in schemas.items())
    if not mapping:
        raise RecipeError(
            f"serve.models: the arms predict different classes (different label schemas: {described}); an A/B "
            "comparison of them means nothing unless serve.label_mapping says how classes of one schema map to the "
            "other, e.g. after a split of 'wet' into 'rain' and 'drizzle': {rain: wet, drizzle: wet}")
    known = {c for classes in schemas.values() for c in classes}
    unknown = sorted(k for k in mapping if k not in known)
    if unknown:
        raise RecipeError(f"serve.label_mapping: {', '.join(unknown)} not a class of any arm ({described})")
    mapped = [{mapping.get(c, c) for c in classes} for classes in schemas.values()]
    if not set.intersection(*mapped):
        raise RecipeError(f"serve.label_mapping: mapped through it the arms share no class ({described})")
    return mapping


def ensure_serve(host: str, port: int) -> None:
    """Start Serve's HTTP proxy on host:port, or check that the running one listens there."""
    from ray import serve

    running = running_http_options()
    if running is not None:
        if running != (host, int(port)):
            raise ServingError(
                f"Ray Serve already runs in this Ray instance with its HTTP proxy on {running[0]}:{running[1]}; "
                f"its HTTP options are fixed once started, so it cannot also listen on {host}:{port}. "
                f"Use serve.host={running[0]} serve.port={running[1]}, or stop that Serve instance first."
            )
        return
    _check_port_free(host, port)
    try:
        # direct ingress is on in the controller for the apps that ask for it (ingress_modes.py)
        serve.start(http_options={"host": host, "port": port}, controller_options=controller_options())
    except Exception as exc:
        raise ServingError(f"starting Ray Serve's HTTP proxy on {host}:{port} failed: {exc}") from exc


def _check_port_free(host: str, port: int) -> None:
    """Fail now with a clear message rather than after Serve's 60 s proxy start timeout."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError as exc:
            cause = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise ServingError(
                f"cannot serve on {host}:{port}: {cause}. Pick another serve.port (or stop what listens there)."
            ) from None


def _validate(models: list[ServedModel], placement: str, replicas: int, route_prefix: str, where: str) -> None:
    if not models:
        raise ServingError(f"{where}: no model to serve (serve.models is empty)")
    arms = [m.arm for m in models]
    dupes = sorted({a for a in arms if arms.count(a) > 1})
    if dupes:
        raise ServingError(f"{where}: arm(s) {dupes} declared twice in serve.models")
    if placement not in PLACEMENTS:
        raise ServingError(f"{where}: serve.placement must be one of {PLACEMENTS}, got {placement!r}")
    if int(replicas) < 1:
        raise ServingError(f"{where}: serve.replicas must be >= 1, got {replicas}")
    if not route_prefix.startswith("/"):
        raise ServingError(f"{where}: serve.route_prefix must start with '/', got {route_prefix!r}")
    names = models[0].schema.names
    for m in models:
        if m.schema.names != names:
            raise ServingError(
                f"{where}: arm '{m.arm}' expects features {m.schema.names[:5]}..., arm '{models[0].arm}' "
                f"expects {names[:5]}...: every arm must take the same input schema"
            )
        clash = [n for n in m.schema.names if n in RECORD_FIELDS]
        if clash:
            raise ServingError(f"{where}: feature name(s) {clash} clash with the served-record columns {RECORD_FIELDS}")
        layout = m.inputs.to_dict() if m.inputs is not None else None
        first = models[0].inputs.to_dict() if models[0].inputs is not None else None
        if (layout or first) and (layout != first or m.schema.to_dict() != models[0].schema.to_dict()):
            raise ServingError(
                f"{where}: arm '{m.arm}' takes other inputs than arm '{models[0].arm}' (feature types, categories or "
                "missing values): every arm must take the same request, the one GET schema describes"
            )


def _int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_autoscaling(autoscaling: Mapping[str, Any] | None, where: str = "") -> dict:
    """``serve.autoscaling`` checked and completed: ``{}`` (fixed ``serve.replicas``) or
    ``{min_replicas, max_replicas, target_ongoing_requests}`` as Ray Serve's ``autoscaling_config``.

    ``max_replicas`` is required (Ray's default of 1 would silently never scale);
    ``min_replicas`` defaults to 1 and must be >= 1: a replica scaled to zero fails the health
    check and makes the first request wait for a cold start of seconds.
    Raises RecipeError naming ``serve.autoscaling.<key>``, after ``where`` when given.
    """
    if not autoscaling:
        return {}
    at = f"{where}: " if where else ""
    if not isinstance(autoscaling, Mapping):
        raise RecipeError(f"{at}serve.autoscaling: expected {{{', '.join(AUTOSCALING_KEYS)}}}, got {autoscaling!r}")
    key = "serve.autoscaling"
    unknown = [k for k in autoscaling if k not in AUTOSCALING_KEYS]
    if unknown:
        raise RecipeError(f"{at}{key}.{unknown[0]}: unknown key; use {', '.join(AUTOSCALING_KEYS)}")
    if "max_replicas" not in autoscaling:
        raise RecipeError(f"{at}{key}.max_replicas: required (the most replicas the autoscaler may run)")
    low, high = autoscaling.get("min_replicas", 1), autoscaling["max_replicas"]
    target = autoscaling.get("target_ongoing_requests", DEFAULT_TARGET_ONGOING_REQUESTS)
    if not _int_at_least(low, 1):
        raise RecipeError(f"{at}{key}.min_replicas: must be an integer >= 1, got {low!r}")
    if not _int_at_least(high, 1):
        raise RecipeError(f"{at}{key}.max_replicas: must be an integer >= 1, got {high!r}")
    if high < low:
        raise RecipeError(f"{at}{key}.max_replicas: must be >= min_replicas ({low}), got {high}")
    if not _number(target) or target <= 0:
        raise RecipeError(f"{at}{key}.target_ongoing_requests: must be a number > 0, got {target!r}")
    return {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": float(target)}


def validate_batching(batching: Mapping[str, Any] | None, where: str = "") -> dict:
    """``serve.batching`` checked and completed: ``{max_batch_size, batch_wait_timeout_s}``.

    ``max_batch_size`` 0 (the default) is off; otherwise 2..MAX_BATCH_SIZE requests per batch
    (1 would queue every call for nothing). ``batch_wait_timeout_s`` (default 0.005, at most
    1 s): how long a batch that is not full waits for more calls; Serve waits it out whenever
    fewer than max_batch_size calls are queued, so it is added to a lone request's latency.
    Raises RecipeError naming ``serve.batching.<key>``, after ``where`` when given.
    """
    key = "serve.batching"
    at = f"{where}: " if where else ""
    batching = batching or {}
    if not isinstance(batching, Mapping):
        raise RecipeError(f"{at}{key}: expected {{{', '.join(BATCHING_KEYS)}}}, got {batching!r}")
    unknown = [k for k in batching if k not in BATCHING_KEYS]
    if unknown:
        raise RecipeError(f"{at}{key}.{unknown[0]}: unknown key; use {', '.join(BATCHING_KEYS)}")
    size = batching.get("max_batch_size", 0)
    wait = batching.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_TIMEOUT_S)
    if not _int_at_least(size, 0) or size == 1 or size > MAX_BATCH_SIZE:
        raise RecipeError(
            f"{at}{key}.max_batch_size: must be 0 (off) or an integer in 2..{MAX_BATCH_SIZE} (at most "
            f"{MAX_BATCH_SIZE} calls reach a replica at once), got {size!r}"
        )
    if not _number(wait) or not 0 <= wait <= 1.0:
        raise RecipeError(f"{at}{key}.batch_wait_timeout_s: must be a number of seconds in [0, 1], got {wait!r}")
    return {"max_batch_size": size, "batch_wait_timeout_s": float(wait)}


FAULT_KEYS = ("error_rate", "extra_latency_ms", "seed")


def _validate_faults(faults: Mapping[str, Mapping[str, Any]] | None, arms: list[str], where: str) -> dict:
    """``{arm: {error_rate, extra_latency_ms, seed}}`` checked and completed with defaults."""
    if not faults:
        return {}
    if not isinstance(faults, Mapping):
        raise ServingError(f"{where}: serve.faults must map arm names to {{error_rate, extra_latency_ms, seed}}")
    clean = {}
    for arm, spec in faults.items():
        key = f"serve.faults.{arm}"
        if arm not in arms:
            raise ServingError(f"{where}: {key}: no such arm; arms: {', '.join(arms)}")
        if not isinstance(spec, Mapping):
            raise ServingError(f"{where}: {key}: expected {{error_rate, extra_latency_ms, seed}}, got {spec!r}")
        unknown = sorted(set(spec) - set(FAULT_KEYS))
        if unknown:
            raise ServingError(f"{where}: {key}.{unknown[0]}: unknown key; use {', '.join(FAULT_KEYS)}")
        rate, extra, seed = spec.get("error_rate", 0.0), spec.get("extra_latency_ms", 0.0), spec.get("seed", 0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
            raise ServingError(f"{where}: {key}.error_rate: must be a number in [0, 1], got {rate!r}")
        if isinstance(extra, bool) or not isinstance(extra, (int, float)) or not math.isfinite(extra) or extra < 0:
            raise ServingError(f"{where}: {key}.extra_latency_ms: must be a number >= 0, got {extra!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ServingError(f"{where}: {key}.seed: must be an integer, got {seed!r}")
        clean[arm] = {"error_rate": float(rate), "extra_latency_ms": float(extra), "seed": seed}
    return clean


def _validate_rank_class(models: list[ServedModel], rank_class: Any, where: str) -> None:
    if rank_class is None:
        return
    for m in models:
        if not any(c == rank_class or str(c) == str(rank_class) for c in m.classes):
            raise ServingError(
                f"{where}: serve.rank_class: {rank_class!r} is not a class of arm '{m.arm}' (classes: {list(m.classes)})"
            )


def _wait_healthy(app: ServingApp, where: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                r = client.get(app.url + "healthz")
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
    raise ServingError(f"{where}: not healthy after {timeout:.0f} s (GET {app.url}healthz: {last})")


def fetch_records(app: ServingApp, timeout: float = 30.0):
    """The served rows held by the ingress, as a DataFrame (timestamp as UTC datetimes).

    They come from the replica's record buffer (``GET -/records``, admin token), which a
    restarted replica refills from the durable record log: rows served before a restart stay
    visible to monitors."""
    import httpx
    import pandas as pd

    try:
        r = httpx.get(app.url + "-/records", headers=app.admin_headers(), timeout=timeout, trust_env=False)
    except httpx.HTTPError as exc:
        raise ServingError(f"app '{app.app_name}': GET {app.url}-/records failed: {exc}") from exc
    if r.status_code != 200:
        raise ServingError(f"app '{app.app_name}': GET {app.url}-/records answered {r.status_code}: {r.text[:300]}")
    frame = pd.DataFrame(r.json())
    features = [c for c in frame.columns if c not in RECORD_FIELDS]
    # Clients may send 3 or 3.0; the model saw float32 either way, so monitors get floats. The
    # records keep raw values: a category stays a string, a missing value None (then NaN).
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    if numeric:
        frame[numeric] = frame[numeric].astype("float64")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    return frame


def fetch_events(app: ServingApp, since: int = 0, timeout: float = 30.0) -> list[dict]:
    """Promote / rollback events after index ``since`` (events are numbered from 1), oldest first.

    Each: ``{index, time, verdict, arm, reason, weights, arms (arm -> version), source}``: ``arm``
    answers everything after the verdict; ``source`` is "strategy" (its own verdict) or "admin"
    (an operator's command).
    """
    import httpx

    url = f"{app.url}-/events?since={int(since)}"
    try:
        r = httpx.get(url, headers=app.admin_headers(), timeout=timeout, trust_env=False)
    except httpx.HTTPError as exc:
        raise ServingError(f"app '{app.app_name}': GET {url} failed: {exc}") from exc
    if r.status_code != 200:
        raise ServingError(f"app '{app.app_name}': GET {url} answered {r.status_code}: {r.text[:300]}")
    return r.json()["events"]


def shutdown_app(app: ServingApp | str) -> None:
    """Delete the application (its replicas stop); Serve and Ray keep running."""
    from ray import serve

    name = app if isinstance(app, str) else app.app_name
    ingress_modes.stop(name)  # the balancer first: it must not outlive the replicas behind it
    try:
        serve.delete(name)
    except Exception as exc:
        raise ServingError(f"app '{name}': removing it from Ray Serve failed: {exc}") from exc
    _stop_decision_state(name)


def _start_decision_state(app_name: str, strategy_cls: type, strategy_config: Any, arms: Mapping[str, str],
                          where: str) -> dict:
    """The app's one strategy, as a detached actor its ingress replicas find by name (see
    serving/decisions.py); a previous app's of the same name is replaced."""
    import ray

    from .decisions import DecisionState, actor_name

    _stop_decision_state(app_name)
    found = {"name": actor_name(app_name), "namespace": ray.get_runtime_context().namespace}
    try:
        actor = ray.remote(DecisionState).options(**found, lifetime="detached", num_cpus=0, max_restarts=0).remote(
            strategy_cls, strategy_config, dict(arms))
        ray.get(actor.view.remote(), timeout=60)
    except Exception as exc:
        raise ServingError(f"{where}: the shared decision state of the strategy did not start: {exc}") from exc
    return found


def _stop_decision_state(app_name: str) -> None:
    import ray

    from .decisions import actor_name

    try:
        ray.kill(ray.get_actor(actor_name(app_name), namespace=ray.get_runtime_context().namespace))
    except ValueError:  # none: one ingress replica, or already gone
        pass
