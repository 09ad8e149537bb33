"""Published tabular benchmarks: figures of architectures trained by others, looked up instead
of trained (``nasforge.tables.nas_bench_201``; the data's sources and licences are in
``data/README.md``)."""
from nasforge.tables.nas_bench_201 import (HP12_COLUMNS, SAMPLE_DATASETS, SAMPLE_FIELDS, Table,
                                           TableError, hp12_columns, load_sample, load_table)

__all__ = ["Table", "TableError", "load_table", "load_sample", "hp12_columns", "HP12_COLUMNS",
           "SAMPLE_FIELDS", "SAMPLE_DATASETS"]
