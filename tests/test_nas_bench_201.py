"""NAS-Bench-201 in the DSL: its ops, cell string, space, canonical hash and network, checked
against NAS-Bench-201's own published figures (parameters, FLOPs, unique cells) and against
independent re-derivations written here; and the shipped tables."""
from __future__ import annotations

import gzip
import json
import re
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.compiler import ChainNetwork
from nasforge.controllers import SEARCHERS, Result, get_searcher
from nasforge.dsl import CellError
from nasforge.flops import count_mult_adds, count_params
from nasforge.ops import create_op
from nasforge.search_spaces import get_space
from nasforge.search_spaces.nas_bench_201 import (DATASETS, NasBench201Space,
                                                  NasBench201StringError, Nb201Cell,
                                                  cell_graph, format_cell, network, parse_cell)
from nasforge.tables import HP12_COLUMNS, TableError, load_sample, load_table
from test_controllers import SMALL  # the searchers' small configs, one place

REPO = Path(__file__).resolve().parents[1]
OP_NAMES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
        "|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")


@pytest.fixture(scope="module")
def table():
    return load_table()


# ---------------------------------------------------------------------------------- ops
@pytest.mark.parametrize("name,kernel", [("nor_conv_1x1", 1), ("nor_conv_3x3", 3)])
@pytest.mark.parametrize("stride", [1, 2])
def test_nor_conv_is_relu_conv_bn_as_nas_bench_201_builds_it(name, kernel, stride):
    op = create_op(name, 6, 8, stride)
    reference = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 8, kernel, stride, kernel // 2, bias=False),
                              nn.BatchNorm2d(8, eps=1e-5, momentum=0.1, affine=True,
                                             track_running_stats=True))
    assert [type(m) for m in op] == [type(m) for m in reference]
    assert op[1].bias is None and op[2].affine and op[2].track_running_stats
    reference.load_state_dict(op.state_dict())
    x = torch.randn(3, 6, 9, 9)
    for mode in (True, False):
        op.train(mode), reference.train(mode)
        torch.testing.assert_close(op(x), reference(x), rtol=0, atol=0)


def test_avg_pool_excludes_the_padding_from_the_average():
    x = torch.randn(2, 5, 7, 6)
    expected = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)(x)
    torch.testing.assert_close(create_op("avg_pool_3x3", 5, 5, 1)(x), expected)
    # a corner averages its 4 real neighbours
    torch.testing.assert_close(create_op("avg_pool_3x3", 5, 5, 1)(x)[..., 0, 0],
                               x[..., :2, :2].mean((-1, -2)))


def test_none_is_zero_and_skip_connect_the_identity():
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(create_op("none", 4, 4, 1)(x), torch.zeros_like(x))
    assert create_op("none", 4, 8, 2)(x).shape == (2, 8, 3, 3)
    assert torch.equal(create_op("skip_connect", 4, 4, 1)(x), x)
    with pytest.raises(ValueError, match="skip_connect is the identity"):
        create_op("skip_connect", 4, 4, 2)


# ------------------------------------------------------------------------------ strings
def test_every_table_string_round_trips(table):
    for row in table:
        cell = parse_cell(row["cell"])
        assert format_cell(cell) == row["cell"]
        assert len(cell.ops) == 6 and set(cell.ops) <= set(OP_NAMES)


def test_string_edge_order_is_nas_bench_201s():
    cell = parse_cell("|nor_conv_1x1~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
                      "|none~0|skip_connect~1|nor_conv_1x1~2|")
    # edges (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)
    assert cell.ops == ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "none", "skip_connect",
                        "nor_conv_1x1")
    # a node's edges in another order name the same cell
    assert parse_cell("|nor_conv_1x1~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+"
                      "|nor_conv_1x1~2|none~0|skip_connect~1|") == cell


@pytest.mark.parametrize("text,message", [
    ("|nor_conv_3x3~0|+|conv_5x5~0|none~1|+|none~0|none~1|none~2|",
     r"unknown op 'conv_5x5' on the edge 0 -> 2"),
    ("|nor_conv_3x3~0|+|none~0|none~1|", r"expected 3 nodes separated by '\+', got 2"),
    ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "got 4"),
    ("nor_conv_3x3~0+|none~0|none~1|+|none~0|none~1|none~2|", r"node 1 .* not written as"),
    ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", "edge 'nor_conv_3x3' of node 1"),
    ("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 reads node 1"),
    ("|nor_conv_3x3~0|+|none~0|none~0|+|none~0|none~1|none~2|", "node 2 reads node 0 twice"),
    ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", r"node 2 has no edge from node\(s\) 1"),
    ("", "expected 3 nodes"),
])
def test_bad_strings_raise_one_clear_error(text, message):
    with pytest.raises(NasBench201StringError, match=message):
        parse_cell(text)
    assert issubclass(NasBench201StringError, CellError)  # the CLI's input-error family


# -------------------------------------------------------------------------------- space
SPACE = NasBench201Space()


def test_space_is_registered_with_six_decisions_of_five():
    space = get_space("nas-bench-201", dataset="cifar100")
    assert isinstance(space, NasBench201Space) and space.dataset == "cifar100"
    assert space.decisions() == [5] * 6 and space.size() == 15625
    with pytest.raises(ValueError, match="unknown NAS-Bench-201 data set 'mnist'"):
        NasBench201Space("mnist")


def test_encode_decode_sample_and_mutate():
    all_cells = {Nb201Cell(ops) for ops in product(OP_NAMES, repeat=6)}
    assert {SPACE.decode(SPACE.encode(c)) for c in all_cells} == all_cells
    assert SPACE.sample(np.random.default_rng(4)) == SPACE.sample(np.random.default_rng(4))
    with pytest.raises(ValueError, match="decision 2 is 5, out of range 0..4"):
        SPACE.decode([0, 0, 5, 0, 0, 0])
    with pytest.raises(ValueError, match="expected 6 decisions"):
        SPACE.decode([0] * 5)
    rng = np.random.default_rng(0)
    x = SPACE.sample(rng)
    changes = set()
    for _ in range(400):
        y = SPACE.mutate(x, rng)
        diff = [k for k, (a, b) in enumerate(zip(SPACE.encode(x), SPACE.encode(y))) if a != b]
        assert len(diff) == 1
        changes.add((diff[0], y.ops[diff[0]]))
    assert len(changes) == 6 * 4  # every edge, every other op


def test_sampling_is_uniform_over_the_ops():
    rng = np.random.default_rng(1)
    counts = np.zeros((6, 5))
    for _ in range(2000):
        for edge, token in enumerate(SPACE.encode(SPACE.sample(rng))):
            counts[edge, token] += 1
    assert np.all(np.abs(counts / 2000 - 0.2) < 0.04)




def _drive(searcher, n_tells: int, seed: int = 0):
    """Keep 3 proposals out, finish a random one (out of order), ask again."""
    rng, pending, asked = np.random.default_rng(seed), [], []
    for k in range(n_tells):
        if len(pending) < 3:
            new = searcher.ask(3 - len(pending))
            pending += new
            asked += new
        p = pending.pop(int(rng.integers(len(pending))))
        score = float(np.mean(np.asarray(p.tokens) == 3))  # reward nor_conv_3x3 edges
        searcher.tell(p, Result.failed("simulated") if k % 7 == 3 else Result.ok(val_acc=score))
    return asked


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_every_searcher_runs_on_the_space_unchanged(name):
    assert set(SMALL) == set(SEARCHERS), "add a small config for the new searcher"
    space = get_space("nas-bench-201")
    runs = []
    for seed in (5, 5):
        searcher = get_searcher(name, space, seed=seed, **SMALL[name])
        asked = _drive(searcher, 24)
        runs.append([p.tokens for p in asked])
        for p in asked:
            assert len(p.tokens) == 6 and all(0 <= t < 5 for t in p.tokens)
            assert tuple(space.encode(p.arch)) == p.tokens
            chain = space.to_graph(p.arch).validate()
            assert chain.canonical_hash() == p.hash
    assert runs[0] == runs[1]


# --------------------------------------------------------------------------------- hash
def _hash(text: str) -> str:
    return cell_graph(parse_cell(text)).canonical_hash()


def test_cells_equal_up_to_none_edges_and_unused_nodes_hash_equal():
    # node 3 reads only node 0 (skip): nodes 1 and 2 are unused, whatever their ops
    a = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    b = "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
    assert _hash(a) == _hash(b)
    # node 2 receives only zeros, so its op into node 3 adds nothing
    c = "|none~0|+|none~0|none~1|+|nor_conv_1x1~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    d = "|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|"
    assert _hash(c) == _hash(d)
    # different functions stay apart
    assert _hash(a) != _hash(d)
    assert _hash(BEST) != _hash(BEST.replace("skip_connect~0", "none~0"))
    # the whole network hashes like its cell
    assert SPACE.to_graph(parse_cell(a)).canonical_hash() == \
        SPACE.to_graph(parse_cell(b)).canonical_hash()


def test_zero_ops_elsewhere_in_the_dsl():
    """Only ``add`` drops a zero input: a zero slice of a concat still has channels."""
    from nasforge.dsl import Cell

    def cell(with_zero: bool, combine: str) -> Cell:
        c = Cell("c")
        h0, _ = c.inputs()
        terms = [c.op("conv_3x3", h0, node_id="conv")]
        if with_zero:
            terms.append(c.op("none", h0, node_id="zero"))
        c.set_output([c.combine(combine, *terms, node_id="merge") if len(terms) > 1
                      else terms[0]])
        return c.validate()

    assert cell(True, "add").canonical_hash() == cell(False, "add").canonical_hash()
    assert cell(True, "concat").canonical_hash() != cell(False, "concat").canonical_hash()
    # as written, the zero op is an op like any other
    assert cell(True, "add").graph_hash() != cell(False, "add").graph_hash()


def _expression(ops) -> tuple:
    """An independent canonical form: each node the sorted multiset of its non-zero terms
    (op, canonical form of the source); ``none`` edges and terms read from zero nodes are
    dropped (an op of zero counts as zero), a sum of one term is that term."""
    value = {0: ("input",)}
    edges = [(j, i) for j in range(1, 4) for i in range(j)]
    for j in range(1, 4):
        terms = sorted((op, value[i]) for op, (t, i) in zip(ops, edges)
                       if t == j and op != "none" and value[i] is not None)
        value[j] = None if not terms else terms[0] if len(terms) == 1 else ("sum", tuple(terms))
    return value[3]


def _nas_bench_201_unique_string(ops) -> str:
    """NAS-Bench-201's own rule (``to_unique_str(consider_zero=True)``, re-written from its
    description): ``none`` and edges from a node written '#' are '#', ``skip_connect`` passes
    its source's string on, other ops write '(source)@op'; a node joins its sorted terms
    with '+'."""
    node = {0: "0"}
    edges = [(j, i) for j in range(1, 4) for i in range(j)]
    for j in range(1, 4):
        terms = []
        for op, (t, i) in zip(ops, edges):
            if t != j:
                continue
            if op == "none" or node[i] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(node[i])
            else:
                terms.append(f"({node[i]})@{op}")
        node[j] = "+".join(sorted(terms))
    return node[3]


def test_unique_architectures_over_the_whole_table(table):
    """NAS-Bench-201 reports 6,466 unique cells among its 15,625: its rule also takes
    skip_connect for the identity, which nasforge's hash does not (a skip_connect is an op
    node of the graph); nasforge's classes are exactly those of ``_expression``."""
    cells = [parse_cell(row["cell"]).ops for row in table]
    assert len(cells) == 15625
    assert len({_nas_bench_201_unique_string(ops) for ops in cells}) == 6466  # published
    classes: dict = {}
    for ops in cells:
        classes.setdefault(cell_graph(Nb201Cell(ops)).canonical_hash(), set()).add(
            _expression(ops))
    assert all(len(forms) == 1 for forms in classes.values())  # no two forms share a hash
    assert len(classes) == len({_expression(ops) for ops in cells}) == 8765


# ------------------------------------------------------------------------------ network
def _params_and_mult_adds(cell: str, dataset: str, flops: bool = False):
    """(parameters, multiply-adds or None); parameters alone are counted on the meta device,
    multiply-adds on the CPU (torch's FLOP counter is faster on real tensors than on meta)."""
    if not flops:
        with torch.device("meta"):
            return count_params(ChainNetwork(network(cell, dataset))), None
    model = ChainNetwork(network(cell, dataset))
    return count_params(model), count_mult_adds(model, DATASETS[dataset].input_size)[0]


def test_the_network_is_nas_bench_201s():
    chain = network(BEST, "imagenet16")
    names = [c.name for c in chain.cells]
    assert names[0] == "stem" and names[-1] == "classifier"
    assert names[6] == "resblock1" and names[12] == "resblock2" and len(names) == 19
    model = ChainNetwork(chain).eval()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 120)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert widths[0] == 16 and max(widths) == 64


def _sample_rows():
    """Every cell of the 200-epoch sample with its data set."""
    with gzip.open(REPO / "nasforge/tables/data/nas-bench-201-naslib-sample.json.gz", "rt") as f:
        names = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet16"}
        return [(names[r["dataset"]], r["cell"], r["params_M"], r["flops_M"])
                for r in json.load(f)]


def _fast_subset(rows, per_dataset=50):
    picked = []
    for dataset in DATASETS:
        mine = [r for r in rows if r[0] == dataset]
        picked += mine[::max(1, len(mine) // per_dataset)][:per_dataset]
    return picked


@pytest.mark.parametrize("params_M,cell", [
    # NAS-Bench-201's API: the smallest and the largest CIFAR-10 networks
    (0.073306, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"),
    (1.531546, "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
               "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
])
def test_smallest_and_largest_cifar10_networks(params_M, cell):
    assert round(_params_and_mult_adds(cell, "cifar10")[0] / 1e6, 6) == params_M


def _check_params(rows):
    wrong = [(d, c, p, n / 1e6) for d, c, p, _ in rows
             if round((n := _params_and_mult_adds(c, d)[0]) / 1e6, 6) != p]
    assert not wrong, wrong[:5]


def test_parameters_equal_the_samples_on_a_subset():
    _check_params(_fast_subset(_sample_rows()))


@pytest.mark.slow
def test_parameters_and_flops_of_every_sample_cell():
    """The full sweep (about 2,200 networks): parameters equal, FLOPs decompose as in
    ``test_flops_are_multiply_adds_plus_what_nas_bench_201s_counter_adds``."""
    rest, wrong = {}, []
    for dataset, cell, params_M, flops_M in _sample_rows():
        params, mult_adds = _params_and_mult_adds(cell, dataset, flops=True)
        if round(params / 1e6, 6) != params_M:
            wrong.append((dataset, cell, params_M, params / 1e6))
        rest.setdefault(dataset, set()).add(
            round(flops_M - (mult_adds + _cell_extras(cell, dataset)) / 1e6, 6))
    assert not wrong, wrong[:5]
    assert rest == FLOPS_OUTSIDE_CELLS_M


# what remains of the sample's flops_M once multiply-adds and _cell_extras are taken off
FLOPS_OUTSIDE_CELLS_M = {"cifar10": {0.160832}, "cifar100": {0.160832}, "imagenet16": {0.040512}}


def _cell_extras(cell: str, dataset: str) -> int:
    """What NAS-Bench-201's ``flops_M`` counts in the cells beyond multiply-adds, as read off
    the sample: 9 per output element of each 3x3 average pool (kernel^2) and 3 per output
    element of each ReLU -> conv -> BN edge. An edge sits in all N = 5 cells of each stage,
    (C, H, W) = (16, S, S), (32, S/2, S/2), (64, S/4, S/4)."""
    s = DATASETS[dataset].input_size
    elements = sum(5 * (16 * 2 ** k) * (s // 2 ** k) ** 2 for k in range(3))
    ops = parse_cell(cell).ops
    convs = ops.count("nor_conv_1x1") + ops.count("nor_conv_3x3")
    return elements * (9 * ops.count("avg_pool_3x3") + 3 * convs)


def test_flops_are_multiply_adds_plus_what_nas_bench_201s_counter_adds():
    """nasforge counts multiply-adds of convolutions and linear layers (torch's FLOP counter
    / 2); the sample's ``flops_M`` is larger by the cells' pools and conv edges
    (``_cell_extras``) and one constant per input size (layers outside the cells)."""
    rest = {}
    for dataset, cell, _, flops_M in _fast_subset(_sample_rows(), per_dataset=5):
        mult_adds = _params_and_mult_adds(cell, dataset, flops=True)[1]
        rest.setdefault(dataset, set()).add(
            round(flops_M - (mult_adds + _cell_extras(cell, dataset)) / 1e6, 6))
    assert rest == FLOPS_OUTSIDE_CELLS_M


# ------------------------------------------------------------------------------- tables
def test_table_lookups(table):
    assert len(table) == 15625 and table.columns == HP12_COLUMNS
    row = table.by_index(0)
    assert row["cell"] == ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+"
                           "|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
    assert (row["cifar10_valid"], row["imagenet16_test"]) == (63.364, 17.0)
    assert table.lookup(row["cell"]) is row
    assert table.lookup(parse_cell(row["cell"])) is row
    assert round(max(table.column("cifar10_valid")), 2) == 84.89  # the data's README
    assert sorted(r["arch_index"] for r in table) == list(range(15625))
    with pytest.raises(TableError, match="arch_index 15625 is not in"):
        table.by_index(15625)
    with pytest.raises(NasBench201StringError, match="unknown op 'conv'"):
        table.lookup("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")


def test_samples_per_data_set():
    sizes = {d: len(load_sample(d)) for d in DATASETS}
    assert sizes == {"cifar10": 724, "cifar100": 725, "imagenet16": 724}
    c10 = load_sample("cifar10")
    assert (min(c10.column("params_M")), max(c10.column("params_M"))) == (0.073306, 1.531546)
    with pytest.raises(TableError, match="unknown NAS-Bench-201 data set 'mnist'"):
        load_sample("mnist")


def test_a_user_file_with_the_same_columns(tmp_path, table):
    path = tmp_path / "mine.csv"
    rows = [table.by_index(i) for i in (3, 7)]
    path.write_text(",".join(HP12_COLUMNS) + ",extra\n" + "".join(
        ",".join(str(r[c]) for c in HP12_COLUMNS) + ",x\n" for r in rows))
    mine = load_table(path)
    assert len(mine) == 2 and mine.lookup(rows[1]["cell"]) == rows[1]
    with pytest.raises(TableError, match=re.escape(f"is not in {path} (2 cells)")):
        mine.lookup(table.by_index(4)["cell"])


@pytest.mark.parametrize("content,message", [
    ("arch_index,cell,cifar10_valid\n1,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,5\n",
     "missing columns cifar10_test, cifar100_valid, cifar100_test, imagenet16_valid, "
     "imagenet16_test"),
    (",".join(HP12_COLUMNS) + "\n1,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,a,1,1,1,1,1\n",
     r"line 2, cifar10_valid: 'a' is not a number"),
    (",".join(HP12_COLUMNS) + "\n1,|bad~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,1,1,1,1,1\n",
     r"line 2: unknown op 'bad'"),
    (",".join(HP12_COLUMNS) + "\n1,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,1\n",
     "line 2: expected 8 fields"),
    (",".join(HP12_COLUMNS) + "\n"
     "1,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,1,1,1,1,1\n"
     "2,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,1,1,1,1,1\n",
     "appears twice"),
])
def test_bad_table_files_raise_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TableError, match=message):
        load_table(path)


def test_bad_sample_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"dataset": "cifar10", "cell": BEST, "arch_index": 1}]))
    with pytest.raises(TableError, match="entry 0: missing columns val_acc_200ep, params_M, "
                                         "flops_M"):
        load_sample("cifar10", path)
    path.write_text("{not json")
    with pytest.raises(TableError, match="malformed JSON"):
        load_sample("cifar10", path)
    with pytest.raises(TableError, match="cannot read"):
        load_table(tmp_path / "absent.csv")


def test_attribution_ships_with_the_data():
    from nasforge.tables.nas_bench_201 import DATA_DIR

    readme = (DATA_DIR / "README.md").read_text()
    for credit in ("MIT", "Apache-2.0", "Dong & Yang", "Krishnakumar", "NASLib",
                   "must keep this attribution"):
        assert credit in readme
