"""nasforge's Ray worker environment (``nasforge.cluster.WORKER_ENV_VARS``: malloc settings)
reaches the Ray Tune trial workers of a Ray that ``connect_ray`` starts, from their start."""
import os

import pytest


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="needs /proc")
def test_trial_workers_start_with_the_worker_environment(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray import tune

    from nasforge.cluster import WORKER_ENV_VARS, connect_ray

    def trial_env(config):
        """A Ray Tune function trainable (defined here: pickled by value, this module is not
        importable on Ray's workers): what its worker's environment holds for each variable,
        now and as the process started (/proc: what glibc's malloc read)."""
        with open(f"/proc/{os.getpid()}/environ", "rb") as f:
            at_start = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        tune.report({"env": {k: os.environ.get(k) for k in config["keys"]},
                     "at_start": {k: (at_start.get(k.encode()) or b"").decode() or None
                                  for k in config["keys"]}})

    if ray.is_initialized():
        pytest.skip("a Ray of another test is running")
    assert WORKER_ENV_VARS
    for key in WORKER_ENV_VARS:  # the driver does not have them: only Ray can pass them on
        monkeypatch.delenv(key, raising=False)
    assert connect_ray(None)
    try:
        keys = sorted(WORKER_ENV_VARS)
        tuner = tune.Tuner(trial_env, param_space={"keys": keys},
                           run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
        result = tuner.fit()[0]
    finally:
        ray.shutdown()
    assert result.error is None
    expected = {k: WORKER_ENV_VARS[k] for k in keys}
    assert result.metrics["env"] == expected
    assert result.metrics["at_start"] == expected
