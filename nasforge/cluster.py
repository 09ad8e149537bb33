"""Joining a Ray cluster: ``ray_session`` (connect, check the resources asked for, shut down
what it started), for black-box search, one-shot search on Ray Train and ``nasforge transfer``.

Ray's token authentication: a head started by ``ray start --head`` while a token exists (Ray
2.60 writes one to ``~/.ray/auth_token`` the first time ``ray.init()`` starts a local cluster)
rejects clients without that token. Ray's client only sends a token when ``RAY_AUTH_MODE=token``
is set, and ``ray.init(address=HOST:PORT)`` never sets it by itself (only a local cluster found
with ``address="auto"`` does); without it the client logs an ``InvalidAuthToken`` warning every
second for 20 s and then fails with a bare "Failed to connect". So before joining a cluster at
an address, ``connect_ray`` turns token mode on for this process (and its children) when
``RAY_AUTH_MODE`` is unset and a token is available where Ray looks for one
(``find_auth_token``). A cluster without authentication ignores the token. When the connection
fails anyway, Ray's console output is scanned for the authentication error, which then becomes
the one error line (the warning flood is not shown; ``NASFORGE_DEBUG=1`` shows it).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nasforge.errors import NasforgeError

log = logging.getLogger(__name__)

AUTH_MODE_VAR = "RAY_AUTH_MODE"
TOKEN_VAR = "RAY_AUTH_TOKEN"
TOKEN_PATH_VAR = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_FILE = Path(".ray") / "auth_token"  # under the home folder
# what Ray's client logs when the cluster refuses it for want of the right token
AUTH_FAILURE_MARKERS = ("InvalidAuthToken", "Unauthenticated", "UNAUTHENTICATED")
HOW_TO_GIVE_A_TOKEN = (f"give the cluster's token (`ray get-auth-token` on its head node) in "
                       f"~/{DEFAULT_TOKEN_FILE}, in a file named by {TOKEN_PATH_VAR}, or in "
                       f"{TOKEN_VAR}")


class ClusterError(NasforgeError, ValueError):
    """The Ray cluster cannot be reached or refuses us: one line for the user (exit code 2)."""


class ResourceError(ClusterError):
    """The Ray cluster has fewer GPUs or CPUs than a run asks for (``ray_session``'s check)."""

    def __init__(self, resource: str, asked: float, have: float):
        self.resource, self.asked, self.have = resource, asked, have  # "GPU" or "CPU"
        super().__init__(self.message(f"{asked:g} {resource}(s)"))

    def message(self, asked_by: str) -> str:
        """The message with the request named by ``asked_by`` (the CLI names its option,
        ``"--gpus 8"``; the library the amount, ``"8 GPU(s)"``)."""
        return f"{asked_by} asked for, but the Ray cluster has {self.have:g} {self.resource}(s)"


@dataclass(frozen=True)
class RaySession:
    """What ``ray_session`` yields: the cluster's resources when the session began."""

    resources: dict  # ray.cluster_resources(): {"CPU": 16.0, "GPU": 2.0, ...}
    started: bool  # this session started the cluster (and shuts it down when it ends)

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0))

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0))


def check_resources(resources: dict, *, gpus: float | None = None,
                    cpus: float | None = None) -> None:
    """ResourceError unless ``resources`` (``ray.cluster_resources()``) hold ``gpus`` GPUs and
    ``cpus`` CPUs (None: nothing asked for)."""
    for resource, asked in (("GPU", gpus), ("CPU", cpus)):
        have = float(resources.get(resource, 0))
        if asked is not None and asked > have + 1e-9:  # fractions of a GPU add up in floats
            raise ResourceError(resource, float(asked), have)


@contextlib.contextmanager
def ray_session(address: str | None, *, gpus: float | None = None, cpus: float | None = None):
    """``with ray_session(address, gpus=2) as session:`` joins the cluster at ``address``
    (``connect_ray``: a new local one for None, the token handling), checks that it has
    ``gpus`` GPUs and ``cpus`` CPUs (``check_resources``) and yields a :class:`RaySession`;
    on exit, also after an error, shuts Ray down if (and only if) this session started it.
    The one way nasforge's search, one-shot search and transfer reach Ray."""
    import ray

    started = connect_ray(address)
    try:
        resources = dict(ray.cluster_resources())
        check_resources(resources, gpus=gpus, cpus=cpus)
        yield RaySession(resources, started)
    finally:
        if started:
            ray.shutdown()


def find_auth_token(environ=None, home: Path | None = None) -> str | None:
    """Where a Ray auth token is available, in Ray's order of precedence (``RAY_AUTH_TOKEN``,
    then the file named by ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``), as a
    description for messages ("RAY_AUTH_TOKEN", "/path/to/file"); None when there is none.

    Mirrors Ray's token loader (``ray/_private/authentication``, and ``AuthTokenLoader`` in
    Ray's C++ core), which is not public API."""
    environ = os.environ if environ is None else environ
    if environ.get(TOKEN_VAR, "").strip():
        return TOKEN_VAR
    named = environ.get(TOKEN_PATH_VAR)
    if named:
        path = Path(named).expanduser()
        return f"{path} ({TOKEN_PATH_VAR})" if _has_text(path) else None
    path = (Path.home() if home is None else Path(home)) / DEFAULT_TOKEN_FILE
    return str(path) if _has_text(path) else None


def _has_text(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        return False


def _use_token_auth() -> None:
    """``RAY_AUTH_MODE=token`` for this process and the processes it starts."""
    os.environ[AUTH_MODE_VAR] = "token"
    try:  # Ray caches its config at import: re-read it, as Ray itself does after setting it
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):  # a Ray without token authentication
        pass


def connect_ray(address: str | None) -> bool:
    """``ray.init`` (a new local cluster when ``address`` is None); ClusterError when the
    cluster is unreachable or refuses the connection. Returns True when this call started Ray
    (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    joining = address not in (None, "local")
    if joining and address != "auto":
        _check_reachable(address)
    named = os.environ.get(TOKEN_PATH_VAR)
    if joining and named and not _has_text(Path(named).expanduser()):
        raise ClusterError(f"{TOKEN_PATH_VAR}={named} names no readable token file")
    token = None
    if joining and os.environ.get(AUTH_MODE_VAR) is None:
        token = find_auth_token()
        if token is not None:
            log.info("joining %s with the Ray auth token from %s", address, token)
            _use_token_auth()
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR,
                  log_to_driver=bool(os.environ.get("NASFORGE_DEBUG")))
    if not joining:
        ray.init(**kwargs)
        return True
    with _captured_stderr() as console:
        try:
            ray.init(address=address, **kwargs)
            failure = None
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            failure = e
    if failure is not None:
        raise ClusterError(_connect_error(address, failure, console.text, token)) from None
    sys.stderr.write(console.text)  # nothing went wrong: whatever Ray said is shown
    return True


def _connect_error(address: str, error: BaseException, console: str,
                   token: str | None) -> str:
    head = f"cannot connect to the Ray cluster at {address!r}"
    auth_error = type(error).__name__ == "AuthenticationError" or \
        any(m in console for m in AUTH_FAILURE_MARKERS)
    if not auth_error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"{head}: {first}"
    mode = os.environ.get(AUTH_MODE_VAR)
    if token is not None:
        return (f"{head}: the cluster uses token authentication and rejected the token from "
                f"{token}; {HOW_TO_GIVE_A_TOKEN}")
    if mode is not None and mode.lower() != "token":
        return (f"{head}: the cluster uses token authentication, but {AUTH_MODE_VAR}={mode} "
                f"is set; unset it and {HOW_TO_GIVE_A_TOKEN}")
    found = find_auth_token()
    if found is not None:  # RAY_AUTH_MODE=token was set by hand, with a token Ray tried
        return (f"{head}: the cluster uses token authentication and rejected the token from "
                f"{found}; {HOW_TO_GIVE_A_TOKEN}")
    return (f"{head}: the cluster uses token authentication and no token was found; "
            f"{HOW_TO_GIVE_A_TOKEN}")


class _Captured:
    text = ""


@contextlib.contextmanager
def _captured_stderr():
    """File descriptor 2 into a temporary file while Ray connects: Ray's C++ client logs there
    directly (below Python's ``sys.stderr``), a line a second while it retries."""
    captured = _Captured()
    if os.environ.get("NASFORGE_DEBUG"):
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", "replace")


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect to HOST:PORT first: ``ray.init`` keeps retrying an unreachable address
    for minutes before it gives up."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"address {address!r} is not 'auto', 'HOST:PORT' or "
                           f"'ray://HOST:PORT'", options=("address",))
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: "
                           f"{e.strerror or e}") from None
