"""nasforge.cluster's ``ray_session``: the one way search, one-shot search and transfer reach
Ray (connect, check the resources asked for, shut down only a cluster it started). Ray itself
is replaced by a stand-in that records what is asked of it; the token handling and a real
cluster are tested in test_search.py."""
from __future__ import annotations

import pytest

from nasforge import cluster
from nasforge.cluster import ResourceError, check_resources, ray_session


class FakeRay:
    """``ray.is_initialized/init/cluster_resources/shutdown`` of a cluster with ``resources``."""

    def __init__(self, resources: dict, running: bool = False):
        self.resources, self.running, self.calls = resources, running, []

    def is_initialized(self):
        return self.running

    def init(self, **kwargs):
        self.calls.append("init")
        self.running = True

    def cluster_resources(self):
        assert self.running
        return dict(self.resources)

    def shutdown(self):
        self.calls.append("shutdown")
        self.running = False


@pytest.fixture
def fake_ray(monkeypatch):
    ray = pytest.importorskip("ray")

    def install(resources, running=False):
        fake = FakeRay(resources, running)
        for name in ("is_initialized", "init", "cluster_resources", "shutdown"):
            monkeypatch.setattr(ray, name, getattr(fake, name))
        return fake

    return install


def test_a_session_that_started_ray_shuts_it_down(fake_ray):
    ray = fake_ray({"CPU": 4.0, "GPU": 2.0})
    with ray_session(None, gpus=2, cpus=4) as session:
        assert ray.calls == ["init"]
        assert session.started and (session.gpus, session.cpus) == (2.0, 4.0)
        assert session.resources == {"CPU": 4.0, "GPU": 2.0}
    assert ray.calls == ["init", "shutdown"]


def test_a_session_leaves_a_running_ray_running(fake_ray):
    ray = fake_ray({"CPU": 2.0}, running=True)
    with ray_session(None) as session:
        assert not session.started
    assert ray.calls == [] and ray.running


@pytest.mark.parametrize("asked, message", [
    (dict(gpus=8), r"^8 GPU\(s\) asked for, but the Ray cluster has 0 GPU\(s\)$"),
    (dict(gpus=1.5), r"^1\.5 GPU\(s\) asked for, but the Ray cluster has 1 GPU\(s\)$"),
    (dict(cpus=4), r"^4 CPU\(s\) asked for, but the Ray cluster has 2 CPU\(s\)$"),
])
def test_a_session_refuses_what_the_cluster_lacks_and_still_shuts_down(fake_ray, asked,
                                                                        message):
    ray = fake_ray({"CPU": 2.0, "GPU": 1.0} if asked.get("gpus") == 1.5 else {"CPU": 2.0})
    entered = []
    with pytest.raises(ResourceError, match=message) as err:
        with ray_session(None, **asked):
            entered.append(True)
    assert not entered and ray.calls == ["init", "shutdown"]
    assert isinstance(err.value, cluster.ClusterError)  # one line, exit code 2 in the CLI


def test_the_cli_names_its_option_in_the_same_message():
    err = ResourceError("GPU", 8.0, 0.0)
    assert err.message("--gpus 8") == "--gpus 8 asked for, but the Ray cluster has 0 GPU(s)"
    assert (err.resource, err.asked, err.have) == ("GPU", 8.0, 0.0)


def test_an_error_inside_the_session_still_shuts_down_what_it_started(fake_ray):
    ray = fake_ray({"CPU": 2.0})
    with pytest.raises(RuntimeError, match="training failed"):
        with ray_session(None, cpus=2):
            raise RuntimeError("training failed")
    assert ray.calls == ["init", "shutdown"]


@pytest.mark.parametrize("resources, asked", [
    ({"CPU": 2.0, "GPU": 0.5}, dict(gpus=0.25 + 0.25)),  # fractions of a GPU add up
    ({"CPU": 2.0}, dict(gpus=0, cpus=2)),
    ({}, dict(gpus=None, cpus=None)),  # nothing asked for
])
def test_what_the_cluster_has_passes(resources, asked):
    check_resources(resources, **asked)
