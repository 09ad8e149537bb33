"""Searchers: the conformance suite over every registered searcher, then per-searcher checks."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from nasforge.controllers import (SEARCHERS, DedupCache, EvolutionConfig, OptunaConfig, Result,
                                  RLConfig, RLController, get_searcher, load_state, save_state)
from nasforge.controllers.bench import PlantedTask, evals_to_reach, median_or_none, run_search
from nasforge.search_spaces import DartsSpace, NasNetSpace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = NasNetSpace(num_blocks=2)  # 20 decisions: fast, still every kind of decision
# small configs so every searcher leaves its start-up phase within a few evaluations
SMALL = {
    "random": {},
    "evolution": {"population_size": 6, "sample_size": 3, "identity_prob": 0.1},
    "rl": {"batch_size": 4, "learning_rate": 0.01, "prefetch": 3},
    "optuna": {"sampler_kwargs": {"n_startup_trials": 4}},
    "bananas": {"initial": 4, "batch": 3, "candidates": 12, "epochs": 3, "members": 2},
}
NAMES = sorted(SEARCHERS)


def make(name, seed=0, dedup=True, space=SPACE, **overrides):
    return get_searcher(name, space, seed=seed, dedup=dedup, **{**SMALL[name], **overrides})


def objective(tokens) -> float:
    return float(np.mean(np.asarray(tokens) == 0))


def result_for(p, k: int) -> Result:
    """The k-th finished evaluation: some fail, some are pruned, the rest are ok."""
    if k % 7 == 3:
        return Result.failed("simulated crash")
    if k % 11 == 5:
        return Result.pruned(val_acc=0.05)
    return Result.ok(val_acc=objective(p.tokens))


class Driver:
    """Simulated asynchronous workers: keeps ``inflight`` proposals out, finishes a random one
    (so tells arrive out of order), asks again."""

    def __init__(self, searcher, seed=0, inflight=3, pending=None, told=0, rng=None):
        self.s, self.inflight = searcher, inflight
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.pending = list(pending or [])
        self.told = told
        self.asked: list[tuple[int, tuple[int, ...]]] = []

    def run(self, n_tells: int):
        for _ in range(n_tells):
            if len(self.pending) < self.inflight:
                new = self.s.ask(self.inflight - len(self.pending))
                assert len(new) == self.inflight - len(self.pending)
                self.pending += new
                self.asked += [(p.id, p.tokens) for p in new]
            p = self.pending.pop(int(self.rng.integers(len(self.pending))))
            self.s.tell(p, result_for(p, self.told))
            self.told += 1
        return self.asked


# ---------------------------------------------------------------- conformance (every searcher)
@pytest.mark.parametrize("space", [SPACE, DartsSpace()], ids=["nasnet", "darts"])
@pytest.mark.parametrize("name", NAMES)
def test_proposals_are_valid_in_the_space(name, space):
    s = make(name, seed=1, space=space)
    d = Driver(s, inflight=4)
    d.run(20)
    ids = [i for i, _ in d.asked]
    assert len(ids) == len(set(ids)) >= 20
    for p in d.pending + s.in_flight():
        assert len(p.tokens) == len(space.decisions())
        assert all(0 <= t < n for t, n in zip(p.tokens, space.decisions()))
        assert tuple(space.encode(space.decode(p.tokens))) == p.tokens
        assert tuple(space.encode(p.arch)) == p.tokens
        pair = space.to_graph(p.arch).validate()
        assert pair.canonical_hash() == p.hash
    for _, tokens in d.asked:
        space.to_graph(space.decode(tokens)).validate()


@pytest.mark.parametrize("space", [SPACE, DartsSpace()], ids=["nasnet", "darts"])
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_proposals(name, space):
    runs = [Driver(make(name, seed=s, space=space), seed=5).run(16) for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert [t for _, t in runs[0]] != [t for _, t in runs[2]]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fmt", ["torch", "json"])
def test_state_round_trip_mid_search_continues_identically(name, fmt, tmp_path):
    a = make(name, seed=3)
    da = Driver(a, seed=11, inflight=3)
    da.run(14)  # past every start-up phase, proposals in flight
    assert len(a.in_flight()) == 2  # saved with proposals in flight
    path = tmp_path / "state"
    if fmt == "json":
        if name == "rl":  # documented: the RL controller's state holds tensors
            with pytest.raises(TypeError, match="Tensor is not JSON serializable"):
                json.dumps(a.state_dict())
            return
        path.write_text(json.dumps(a.state_dict()))
    else:
        save_state(a, path)
    rng_state = da.rng.bit_generator.state
    told = da.told
    da.asked = []
    a_next = da.run(25)

    b = make(name, seed=3)
    if fmt == "json":
        b.load_state_dict(json.loads(path.read_text()))
    else:
        load_state(b, path)
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    db = Driver(b, inflight=3, pending=sorted(b.in_flight(), key=lambda p: p.id), told=told,
                rng=rng)
    b_next = db.run(25)
    assert b_next == a_next and len(a_next) >= 20
    assert a.best()[0] == b.best()[0] and a.best()[1] == b.best()[1]
    assert a.inner.counts == b.inner.counts
    # a fresh searcher with another seed does not continue the same way
    assert Driver(make(name, seed=4), seed=11).run(39)[-20:] != a_next[-20:]


@pytest.mark.parametrize("name", NAMES)
def test_failed_and_pruned_results(name):
    s = make(name, seed=2, dedup=False)
    ok_values = []
    for round_ in range(5):  # whole batches that fail, then are pruned, then mixed, then
        batch = s.ask(5)     # violate a constraint (with the highest accuracy of all)
        for i, p in enumerate(batch):
            if round_ == 0:
                s.tell(p, Result.failed("OOM"))
            elif round_ == 4:
                s.tell(p, Result.infeasible({"params<=1.0": 1.0}, "too big", val_acc=1.0,
                                            params=2.0))
            elif round_ == 1:
                s.tell(p, Result.pruned() if i % 2 else Result.pruned(val_acc=0.99))
            elif i == 0:  # a diverged run: handled as failed
                s.tell(p, Result.ok(val_acc=float("nan")))
            else:
                ok_values.append(objective(p.tokens) / 2)
                s.tell(p, Result.ok(val_acc=ok_values[-1], mult_adds=1e6))
    assert s.counts == {"ok": 8, "failed": 7, "pruned": 5, "infeasible": 5}
    best_p, best_r = s.best()
    # pruned, failed and infeasible never count as best
    assert best_r.metrics["val_acc"] == max(ok_values)
    assert objective(best_p.tokens) / 2 == max(ok_values)
    p, = s.ask(1)
    with pytest.raises(ValueError, match="objective"):
        s.tell(p, Result.ok(accuracy=0.5))  # wrong key: rejected, nothing changes
    assert p.id in [q.id for q in s.in_flight()]
    s.tell(p, Result.ok(val_acc=0.5))
    with pytest.raises(KeyError, match=f"proposal {p.id} is not in flight"):
        s.tell(p, Result.ok(val_acc=0.5))  # told twice
    with pytest.raises(KeyError, match="proposal 10000 is not in flight"):
        s.tell(10_000, Result.failed())
    with pytest.raises(ValueError, match="'crashed'"):
        Result("crashed")
    assert len(s.ask(3)) == 3 and len(s.in_flight()) == 3


@pytest.mark.parametrize("name", NAMES)
def test_shuffled_tells_with_many_in_flight(name):
    s = make(name, seed=4)
    rng = np.random.default_rng(0)
    out = s.ask(12)
    assert len({p.id for p in out}) == 12 and len(s.in_flight()) == 12
    for k, i in enumerate(rng.permutation(12)):
        s.tell(out[i], result_for(out[i], k))
        if k == 5:  # ask again before the others came back
            more = s.ask(4)
            assert len(s.in_flight()) == 12 - 6 + 4
    for k, p in enumerate(reversed(more)):
        s.tell(p, result_for(p, 12 + k))
    assert s.in_flight() == []
    assert sum(s.inner.counts.values()) == 16 + s.hits


# ----------------------------------------------------------------------------- duplicate cache
# 16 decision sequences (inputs only), 9 isomorphism classes (a multiset of inputs per cell)
TINY = NasNetSpace(num_blocks=1, ops=("identity",), combines=("add",))


def test_dedup_cache_answers_isomorphic_duplicates():
    s = get_searcher("random", TINY, seed=0)
    hashes = []
    for _ in range(9):
        p, = s.ask(1)
        assert s.lookup(p) is None  # never handed out: evaluated before
        hashes.append(p.hash)
        s.tell(p, Result.ok(val_acc=objective(p.tokens)))
    assert len(set(hashes)) == 9 and s.overflow == 0
    assert s.hits > 0 and s.inner.counts["ok"] == 9 + s.hits
    # every class is evaluated: the next ask gives up after max_hits_per_ask duplicates
    hits = s.hits
    p, = s.ask(1)
    assert s.overflow == 1 and s.hits == hits + 100 and s.lookup(p) is not None
    s.tell(p, Result.ok(val_acc=0.0))
    assert s.lookup(p).metrics["val_acc"] == objective(p.tokens)  # first result kept
    # off: duplicates are handed out
    off = get_searcher("random", TINY, seed=0, dedup=False)
    seen = []
    for _ in range(9):
        p, = off.ask(1)
        seen.append(p.hash)
        off.tell(p, Result.ok(val_acc=0.0))
    assert len(set(seen)) < len(seen)
    assert isinstance(s, DedupCache) and not isinstance(off, DedupCache)


def test_dedup_cache_tells_the_searcher_and_only_caches_ok():
    s = get_searcher("evolution", TINY, seed=0, population_size=3, sample_size=2,
                     identity_prob=1.0)
    first = s.ask(3)
    for p in first:
        s.tell(p, Result.ok(val_acc=objective(p.tokens)))
    # identity children are exact duplicates: answered from the cache, joining the population
    hits = s.hits
    p, = s.ask(1)
    assert s.hits > hits and len(s.population) == 3
    s.tell(p, Result.failed())
    assert p.hash not in s.cache or s.cache[p.hash].status == "ok"


# ------------------------------------------------------------------------------------ RL
def test_rl_defaults_are_the_papers():
    c = RLConfig()
    assert (c.hidden_size, c.init_range, c.algorithm, c.learning_rate, c.entropy_weight,
            c.baseline_decay, c.batch_size) == (100, 0.1, "ppo", 0.00035, 0.00001, 0.95, 20)
    assert c.failed_reward is None  # ours: the worst scored reward minus a margin
    s = RLController(NasNetSpace(), seed=0)
    pol = s.policy
    assert pol.lstm.hidden_size == 100 and pol.lstm.input_size == 100
    assert [h.out_features for h in pol.heads] == NasNetSpace().decisions()  # 50 softmaxes
    assert [e.num_embeddings for e in pol.embeddings] == NasNetSpace().decisions()[:-1]
    for p in pol.parameters():
        assert float(p.detach().abs().max()) <= 0.1
    assert s.optimizer.param_groups[0]["lr"] == 0.00035


@pytest.mark.parametrize("objective, direction, values", [
    ("mult_adds", "minimize", [3.1e6, 1.2e6, 2.4e6, 5.0e6, 0.9e6, 2.2e6]),
    ("val_acc", "maximize", [0.31, 0.12, 0.55, 0.0, 0.47, 0.2]),
])
def test_rl_failed_children_get_less_than_every_scored_child(objective, direction, values):
    """The property the default failed reward must have in either direction: a failed or
    infeasible child's reward is below the reward of every child scored before it (the old
    0.0 ranked a failed child above every real one when the objective is minimized: their
    rewards are negative); before any child is scored a failure carries no signal."""
    s = RLController(SPACE, RLConfig(batch_size=50), seed=0, objective=objective,
                     direction=direction)
    props = s.ask(2 * len(values) + 1)
    s.tell(props[0], Result.failed("first child crashed"))
    assert s._buffer[-1]["reward"] is None and s._buffer[-1]["advantage"] == 0.0
    assert s.baseline is None
    scored = []
    for i, v in enumerate(values):
        s.tell(props[1 + 2 * i], Result.ok(**{objective: v}))
        scored.append(s._buffer[-1]["reward"])
        assert scored[-1] == (v if direction == "maximize" else -v)
        bad = Result.failed() if i % 2 else Result.infeasible({f"{objective}<=1": 1.0})
        s.tell(props[2 + 2 * i], bad)
        assert s._buffer[-1]["reward"] < min(scored)
    # resumable exactly: a restored controller gives the next failure the same reward
    restored = RLController(SPACE, RLConfig(batch_size=50), seed=0, objective=objective,
                            direction=direction)
    restored.load_state_dict(s.state_dict())
    p, q = s.ask(1)[0], restored.ask(1)[0]
    s.tell(p, Result.failed())
    restored.tell(q, Result.failed())
    assert restored._buffer[-1]["reward"] == s._buffer[-1]["reward"] < min(scored)


def test_rl_explicit_failed_reward_is_kept():
    s = RLController(SPACE, RLConfig(failed_reward=-7.5), seed=0)
    assert s.reward(Result.failed()) == -7.5
    assert s.reward(Result.infeasible({"params<=1": 1.0})) == -7.5


def test_rl_update_every_batch_with_ema_baseline_and_stats():
    s = RLController(SPACE, RLConfig(batch_size=5, failed_reward=-1.0), seed=0)
    rewards, props = [0.2, 0.4, None, 0.8, 0.5], s.ask(5)
    for p, r in zip(props[:4], rewards[:4]):
        s.tell(p, Result.failed() if r is None else Result.ok(val_acc=r))
    assert s.updates == 0 and s.last_stats is None
    s.tell(props[4], Result.ok(val_acc=0.5))
    assert s.updates == 1
    b, advs = None, []
    for r in [0.2, 0.4, -1.0, 0.8, 0.5]:  # failed child: failed_reward
        b = r if b is None else b
        advs.append(r - b)
        b = 0.95 * b + 0.05 * r
    st = s.last_stats
    assert set(st) == {"update", "children", "mean_reward", "baseline", "entropy", "loss", "kl"}
    assert st["baseline"] == pytest.approx(b, abs=1e-12)
    assert st["mean_reward"] == pytest.approx((0.2 + 0.4 - 1.0 + 0.8 + 0.5) / 5)
    assert st["children"] == 5 and st["kl"] > 0 and st["entropy"] > 0
    # the entropy reported is the policy's on the batch: sum over 20 decisions, near uniform
    uniform = sum(math.log(n) for n in SPACE.decisions())
    assert st["entropy"] == pytest.approx(uniform, rel=0.02)
    assert s.history == [st]


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_rl_learns_and_kl_is_zero_without_a_step(algorithm):
    s = RLController(SPACE, RLConfig(algorithm=algorithm, learning_rate=0.02, batch_size=10),
                     seed=0)
    for _ in range(30):
        for p in s.ask(10):
            s.tell(p, Result.ok(val_acc=objective(p.tokens)))
    first, last = s.history[0], s.history[-1]
    assert last["mean_reward"] > first["mean_reward"] + 0.2
    assert last["entropy"] < first["entropy"]
    frozen = RLController(SPACE, RLConfig(algorithm=algorithm, learning_rate=0.0,
                                          batch_size=4), seed=0)
    for p in frozen.ask(4):
        frozen.tell(p, Result.ok(val_acc=objective(p.tokens)))
    assert frozen.last_stats["kl"] == 0.0


def test_rl_ppo_ratio_uses_the_sampling_policy():
    # a child sampled before an update and told after it carries its own old log-probability
    s = RLController(SPACE, RLConfig(batch_size=2, learning_rate=0.05, prefetch=1), seed=0)
    early = s.ask(1)[0]
    for p in s.ask(2):
        s.tell(p, Result.ok(val_acc=objective(p.tokens)))
    assert s.updates == 1
    with torch.no_grad():
        logp_now, _, _ = s.policy.evaluate(torch.tensor([early.tokens]))
    assert float(logp_now) != pytest.approx(early.meta["logp"], abs=1e-6)
    s.tell(early, Result.ok(val_acc=0.9))
    assert s._buffer[0]["logp"] == early.meta["logp"]


# ----------------------------------------------------------------------------- evolution
def test_evolution_initial_random_then_tournament_and_aging():
    cfg = dict(population_size=4, sample_size=50, identity_prob=0.0)
    s = get_searcher("evolution", SPACE, seed=0, dedup=False, **cfg)
    first = s.ask(4)
    assert [p.meta["origin"] for p in first] == ["random"] * 4
    # population empty while the first four are in flight: still random
    assert s.ask(1)[0].meta["origin"] == "random"
    told = []
    for p in first:
        s.tell(p, Result.ok(val_acc=objective(p.tokens)))
        told.append(p)
    for _ in range(10):
        p, = s.ask(1)
        assert p.meta["origin"] == "mutation"
        parent = next(m for m in s.population if m["id"] == p.meta["parent"])
        # S=50 draws out of 4: the parent is the best member
        assert parent["score"] == max(m["score"] for m in s.population)
        assert sum(a != b for a, b in zip(parent["tokens"], p.tokens)) == 1
        s.tell(p, Result.ok(val_acc=objective(p.tokens)))
        told.append(p)
    # aging: the population is the four most recent ok children, oldest first
    assert [m["id"] for m in s.population] == [p.id for p in told[-4:]]
    assert s.removed == 10


def test_evolution_failed_initial_members_are_replaced_and_identity_copies():
    s = get_searcher("evolution", SPACE, seed=1, dedup=False, population_size=3,
                     sample_size=2, identity_prob=1.0)
    for p in s.ask(3):
        s.tell(p, Result.failed())
    assert s.ask(1)[0].meta["origin"] == "random"  # population still empty
    s2 = get_searcher("evolution", SPACE, seed=1, dedup=False, population_size=2,
                      sample_size=2, identity_prob=1.0)
    for p in s2.ask(2):
        s2.tell(p, Result.ok(val_acc=objective(p.tokens)))
    child, = s2.ask(1)
    parent = next(m for m in s2.population if m["id"] == child.meta["parent"])
    assert child.meta["origin"] == "identity" and list(child.tokens) == parent["tokens"]
    assert EvolutionConfig() == EvolutionConfig(100, 25, 0.05)


# -------------------------------------------------------------------------------- Optuna
def test_optuna_define_by_run_and_trial_states():
    import optuna
    from optuna.trial import TrialState

    s = get_searcher("optuna", SPACE, seed=0, dedup=False)
    assert isinstance(s.sampler, optuna.samplers.TPESampler)
    assert s.sampler._multivariate and s.sampler._constant_liar
    ps = s.ask(3)
    s.tell(ps[0], Result.ok(val_acc=0.7))
    s.tell(ps[1], Result.failed("OOM"))
    s.tell(ps[2], Result.pruned(val_acc=0.1))
    trials = s.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.PRUNED]
    assert trials[0].value == 0.7
    assert [trials[0].params[f"d{i:02d}"] for i in range(20)] == list(ps[0].tokens)
    assert [p.meta["trial_number"] for p in ps] == [0, 1, 2]


def test_fast_tpe_proposes_exactly_what_optuna_tpe_proposes():
    """The default TPE (FastTPESampler) is Optuna's TPESampler computing faster: with 8
    trials in flight (constant liar), failures and prunes, over the full 50-decision space,
    it proposes exactly what stock TPE proposes."""
    def run(fast):
        s = get_searcher("optuna", NasNetSpace(), seed=3, dedup=False, fast_tpe=fast,
                         sampler_kwargs={"n_startup_trials": 5})
        rng = np.random.default_rng(0)
        seen, flight = [], []
        for i in range(120):
            flight += s.ask(1)
            if len(flight) >= 8:
                p = flight.pop(int(rng.integers(len(flight))))
                seen.append(p.tokens)
                r = Result.failed("x") if i % 11 == 0 else Result.pruned() if i % 13 == 0 \
                    else Result.ok(val_acc=objective(p.tokens) + 1e-3 * (i % 7))
                s.tell(p, r)
        return seen, type(s.sampler).__name__

    stock, fast = run(False), run(True)
    assert stock[1] == "TPESampler" and fast[1] == "FastTPESampler"
    assert len(fast[0]) == 113 and stock[0] == fast[0]


def test_optuna_falls_back_to_stock_tpe_without_the_private_hooks(monkeypatch):
    from nasforge.controllers import optuna_search

    monkeypatch.setattr(optuna_search, "fast_tpe_available", lambda: False)
    s = get_searcher("optuna", SPACE, seed=0, dedup=False)
    assert type(s.sampler).__name__ == "TPESampler"


@pytest.mark.parametrize("n_observations", [0, 1, 30, 600])
@pytest.mark.parametrize("predetermined, prior_weight", [(False, 1.0), (False, 0.3),
                                                         (True, 2.5)])
def test_categorical_parzen_estimator_matches_optunas(n_observations, predetermined,
                                                      prior_weight):
    """Same log density as Optuna's own _ParzenEstimator (to float rounding) and bitwise the
    same samples from the same RandomState."""
    from optuna.distributions import CategoricalDistribution
    from optuna.samplers import TPESampler
    from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator

    from nasforge.controllers.optuna_tpe import CategoricalParzenEstimator

    rng = np.random.default_rng(n_observations)
    space = {f"d{i:02d}": CategoricalDistribution(list(range(n)))
             for i, n in enumerate(NasNetSpace().decisions())}
    observed = {k: rng.integers(len(d.choices), size=n_observations).astype(float)
                for k, d in space.items()}
    parameters = TPESampler()._parzen_estimator_parameters._replace(prior_weight=prior_weight)
    weights = rng.uniform(0.5, 2.0, n_observations) if predetermined else None
    ours = CategoricalParzenEstimator(observed, space, parameters, weights)
    theirs = _ParzenEstimator(observed, space, parameters, weights)
    samples = theirs.sample(np.random.RandomState(n_observations), 64)
    np.testing.assert_allclose(ours.log_pdf(samples), theirs.log_pdf(samples),
                               rtol=1e-12, atol=1e-10)
    mine = ours.sample(np.random.RandomState(n_observations), 64)
    assert all(np.array_equal(mine[k], samples[k]) for k in space)


def test_categorical_parzen_estimator_leaves_other_spaces_to_optuna():
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.samplers import TPESampler
    from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator

    from nasforge.controllers.optuna_tpe import CategoricalParzenEstimator

    space = {"a": CategoricalDistribution([0, 1, 2]), "x": FloatDistribution(0.0, 1.0)}
    observed = {"a": np.array([0.0, 2.0, 2.0]), "x": np.array([0.1, 0.5, 0.9])}
    parameters = TPESampler()._parzen_estimator_parameters
    ours = CategoricalParzenEstimator(observed, space, parameters)
    theirs = _ParzenEstimator(observed, space, parameters)
    samples = theirs.sample(np.random.RandomState(0), 8)
    assert not ours._fast
    np.testing.assert_array_equal(ours.log_pdf(samples), theirs.log_pdf(samples))


def test_optuna_multi_objective_uses_nsga2():
    import optuna

    s = get_searcher("optuna", SPACE, seed=0, dedup=False,
                     objectives=(("val_acc", "maximize"), ("mult_adds", "minimize")))
    assert isinstance(s.sampler, optuna.samplers.NSGAIISampler)
    assert [d.name for d in s.study.directions] == ["MAXIMIZE", "MINIMIZE"]
    p, q = s.ask(2)
    s.tell(p, Result.ok(val_acc=0.9, mult_adds=5e8))
    with pytest.raises(ValueError, match="mult_adds"):
        s.tell(q, Result.ok(val_acc=0.9))
    s.tell(q, Result.ok(val_acc=0.8, mult_adds=1e8))
    assert len(s.study.best_trials) == 2
    with pytest.raises(ValueError, match="sampler"):
        get_searcher("optuna", SPACE, sampler="nope")
    assert isinstance(get_searcher("optuna", SPACE, sampler="random").sampler,
                      optuna.samplers.RandomSampler)


def sqlite_search(url, state, phase, start, n):
    """One process of the shared-study test: ``n`` tells from tell number ``start`` on, two
    trials in flight, told out of order; "first" saves its state, "second" resumes from it."""
    s = get_searcher("optuna", SPACE, seed=5, storage=url, study_name="shared",
                     sampler_kwargs={"n_startup_trials": 3})
    n_before = len(s.study.trials)
    if phase == "second":
        load_state(s, state)
    pending, asked = sorted(s.in_flight(), key=lambda p: p.id), []
    for k in range(int(start), int(start) + int(n)):
        while len(pending) < 2:
            p, = s.ask(1)
            pending.append(p)
            asked.append(list(p.tokens))
        p = pending.pop(k % 2)
        s.tell(p, Result.failed() if k == 1 else Result.ok(val_acc=objective(p.tokens)))
    if phase == "first":
        save_state(s, state)
    return {"asked": asked, "n_before": n_before}


_SCRIPT = """import json, sys
sys.path.insert(0, {tests!r})
from test_controllers import sqlite_search
print(json.dumps(sqlite_search(*sys.argv[1:])))
"""


def _run_script(path, *args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, str(path), *map(str, args)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_optuna_study_resumes_from_sqlite_in_a_second_process(tmp_path):
    from optuna.trial import TrialState

    script = tmp_path / "search.py"
    script.write_text(_SCRIPT.format(tests=os.path.join(REPO, "tests")))
    ref = sqlite_search(f"sqlite:///{tmp_path / 'ref.db'}", None, "ref", 0, 8)  # uninterrupted
    url = f"sqlite:///{tmp_path / 'run.db'}"
    # the first part here, the resume in a process of its own (each costs torch's import)
    first = sqlite_search(url, tmp_path / "state.pt", "first", 0, 4)
    second = _run_script(script, url, tmp_path / "state.pt", "second", 4, 4)
    assert second["n_before"] == 5  # 4 finished + 1 left in flight by the first process
    assert first["asked"] + second["asked"] == ref["asked"]
    assert len(ref["asked"]) == 9
    # resuming from the storage alone: a new searcher (in this process) sees the whole study
    s = get_searcher("optuna", SPACE, seed=9, storage=url, study_name="shared",
                     sampler_kwargs={"n_startup_trials": 3})
    states = [t.state for t in s.study.trials]
    assert len(states) == 9 and states.count(TrialState.FAIL) == 1
    assert states.count(TrialState.COMPLETE) == 7 and states.count(TrialState.RUNNING) == 1
    p, = s.ask(1)
    assert p.meta["trial_number"] == 9


# ----------------------------------------------------------------------------- registry/state
def test_registry_and_state_checks():
    assert set(SEARCHERS) == {"rl", "evolution", "optuna", "random", "bananas"}
    with pytest.raises(KeyError, match="known"):
        get_searcher("bayes", SPACE)
    with pytest.raises(TypeError, match="unknown key 'population'"):
        get_searcher("evolution", SPACE, population=10)
    with pytest.raises(TypeError, match="'random' takes no config"):
        get_searcher("random", SPACE, population_size=10)
    a = make("evolution")
    with pytest.raises(ValueError, match="config"):
        get_searcher("evolution", SPACE, population_size=7).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="searcher"):
        make("random").inner.load_state_dict(a.state_dict()["inner"])
    with pytest.raises(ValueError, match="dedup"):
        make("evolution").load_state_dict(a.state_dict()["inner"])
    with pytest.raises(ValueError, match="'up'"):
        OptunaConfig(objectives=(("val_acc", "up"),))
    with pytest.raises(ValueError, match="n >= 1, got 0"):
        a.ask(0)


# ---------------------------------------------------------------------------- planted bench
def test_planted_task_and_async_simulation():
    space = NasNetSpace(num_blocks=2)
    task = PlantedTask(space, seed=0, noise=0.0)
    target = space.decode(task.target)
    s = get_searcher("random", space, seed=0)
    p = s.ask(1)[0]
    assert 0.5 <= task.value(p) <= 0.95
    # the target scores the maximum; swapping a block's two inputs scores the same
    swapped = list(task.target)
    swapped[0:4] = [swapped[1], swapped[0], swapped[3], swapped[2]]
    assert task.fraction(space.encode(target)) == 1.0 == task.fraction(swapped)
    s.tell(p, Result.ok(val_acc=0.5))
    rec = run_search(get_searcher("evolution", space, seed=0, population_size=10), task,
                     budget=60, workers=4, seed=0)
    assert len(rec.trace) == 60 and rec.trace == sorted(rec.trace)
    assert rec.best == rec.trace[-1] and rec.ms_per_proposal > 0
    assert evals_to_reach([0.1, 0.5, 0.7], 0.5) == 2 and evals_to_reach([0.1], 0.5) is None
    assert median_or_none([1, 3, None]) == 3 and median_or_none([1, None, None]) is None


@pytest.mark.parametrize("direction,worse", [("maximize", 0.5), ("minimize", 0.9)])
def test_best_ranks_like_the_run_folder_when_results_arrive_out_of_order(direction, worse):
    """Searcher.best() and run_folder.ranked_trials name the same winner: of two proposals tied
    on the best value, the lowest id, though the other one's result was told first."""
    from nasforge.search.run_folder import ranked_trials

    s = SEARCHERS["random"](NasNetSpace(num_blocks=2), seed=0, objective="val_loss",
                            direction=direction)
    p0, p1, p2, p3 = s.ask(4)
    told = [(p3, Result.ok(val_loss=worse)), (p2, Result.failed("OOM")),
            (p1, Result.ok(val_loss=0.7)), (p0, Result.ok(val_loss=0.7))]
    records = []
    for p, r in told:
        s.tell(p, r)
        records.append({"trial": p.id, "status": r.to_dict()["status"],
                        "metrics": dict(r.metrics)})
    assert ranked_trials(records, f"val_loss:{direction[:3]}")[0]["trial"] == 0
    best_proposal, best_result = s.best()
    assert best_proposal.id == 0 and best_result.metrics["val_loss"] == 0.7
