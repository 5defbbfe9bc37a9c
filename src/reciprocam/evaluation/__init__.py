"""`reciprocam evaluate`: methods x metrics over a dataset, resumable, shardable, reported.

dataset: what is read (images, labels, ground truth); store: the SQLite results;
runner: explaining and measuring batches; distributed: torchrun shards; report: the
summary tables and the HTML report.
"""

from .dataset import GroundTruth, Sample, read_dataset
from .distributed import Shard
from .report import MethodSummary, summarize_rows, write_html, write_tables
from .runner import EvaluationSettings, evaluate
from .store import DATABASE, ResultRow, ResultStore

__all__ = [
    "DATABASE",
    "EvaluationSettings",
    "GroundTruth",
    "MethodSummary",
    "ResultRow",
    "ResultStore",
    "Sample",
    "Shard",
    "evaluate",
    "read_dataset",
    "summarize_rows",
    "write_html",
    "write_tables",
]
