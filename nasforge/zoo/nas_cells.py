"""Zoo entries of the searched cells, with the settings their papers report."""
from functools import partial

from nasforge.search_spaces.darts import DartsGenotype, genotype_pair
from nasforge.weights import load_reference_state
from nasforge.zoo.cells import AMOEBANET_A, DARTS_V2, NASNET_A, PNASNET_5, pair_from_blocks
from nasforge.zoo.registry import ZooEntry, register_model

register_model(ZooEntry(
    "nasnet_a", "NASNet", build_pair=partial(pair_from_blocks, "nasnet_a", NASNET_A),
    settings={"cifar": dict(N=6, filters=32),  # 6@768
              "mobile": dict(N=4, filters=44),  # 4@1056
              "large": dict(N=6, filters=168)},  # 6@4032
    doc="Zoph et al. 2018, NASNet-A", import_weights=load_reference_state,
    reference="timm nasnetalarge (large), pretrainedmodels nasnetamobile (mobile)"))

register_model(ZooEntry(
    "amoebanet_a", "AmoebaNet",
    build_pair=partial(pair_from_blocks, "amoebanet_a", AMOEBANET_A),
    settings={"cifar": dict(N=6, filters=36), "mobile": dict(N=4, filters=50),
              "large": dict(N=6, filters=190)},  # 6@190: 86.7M [A]
    doc="Real et al. 2019, AmoebaNet-A (cells from the TPU reference code)",
    reference="paper: Real et al. 2019 (CIFAR 3.2M; large 86.7M, 23.1G)"))

register_model(ZooEntry(
    "pnasnet_5", "PNASNet",
    build_pair=partial(pair_from_blocks, "pnasnet_5", PNASNET_5,
            network={"reduction_layout": "replace", "skip_reduction_layer_input": True}),
    settings={"cifar": dict(N=3, filters=48), "mobile": dict(N=3, filters=54),
              "large": dict(N=4, filters=216)},
    doc="Liu et al. 2018, PNASNet-5", import_weights=load_reference_state,
    reference="timm pnasnet5large (large)"))

def _darts_pair(name: str, genotype: dict):
    return genotype_pair(DartsGenotype.make(**genotype), name)


register_model(ZooEntry(
    "darts_v2", "DARTS", build_pair=partial(_darts_pair, "darts_v2", DARTS_V2),
    # darts: DARTS' evaluation network (20 cells at C = 36); nb301: NAS-Bench-301's training
    # network (8 cells at C = 32); mobile: the cells in nasforge's TF-style ImageNet macro
    settings={"darts": {}, "nb301": {}, "mobile": dict(N=4, filters=48, macro="tf")},
    doc="Liu et al. 2019, DARTS (second order), a member of the darts space; DARTS' "
        "NetworkCIFAR macro (ImageNet: nasforge's TF-style macro)",
    reference="quark0/darts genotypes.py; darts setting: its train.py's param size 3.349342MB "
              "(tests/test_darts_space.py)"))
