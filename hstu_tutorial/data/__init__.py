"""Datasets: MovieLens (ML-1M, ML-100K) and a synthetic look-alike, as jagged batches of per-user sequences.

from hstu_tutorial.data import get_reco_dataset
ds = get_reco_dataset("synthetic", max_seq_len=50)
for batch in ds.loader("train", batch_size=128, shuffle=True):
    batch.item_ids  # (T,) jagged, batch.offsets (B+1,), batch.target_item_ids (B,)
"""

from hstu_tutorial.data.errors import DataFormatError, DataNotFoundError, DataWriteError, UnknownDatasetError
from hstu_tutorial.data.fetch import ML1M_MD5, ML1M_URL, find_or_fetch_ml1m, safe_extract
from hstu_tutorial.data.fingerprint import dataset_fingerprint
from hstu_tutorial.data.movielens import (
    read_movies,
    read_ratings,
    read_users,
    sort_sequences,
    write_sasrec_format,
)
from hstu_tutorial.data.paths import cache_root, data_root
from hstu_tutorial.data.reco_dataset import (
    BatchLoader,
    JaggedBatch,
    RecoDataset,
    SequenceSplit,
    get_reco_dataset,
)
from hstu_tutorial.data.synthetic import SIZES, generate_synthetic

__all__ = [
    "ML1M_MD5",
    "ML1M_URL",
    "SIZES",
    "BatchLoader",
    "DataFormatError",
    "DataNotFoundError",
    "DataWriteError",
    "JaggedBatch",
    "RecoDataset",
    "SequenceSplit",
    "UnknownDatasetError",
    "cache_root",
    "data_root",
    "dataset_fingerprint",
    "find_or_fetch_ml1m",
    "generate_synthetic",
    "get_reco_dataset",
    "read_movies",
    "read_ratings",
    "read_users",
    "safe_extract",
    "sort_sequences",
    "write_sasrec_format",
]
