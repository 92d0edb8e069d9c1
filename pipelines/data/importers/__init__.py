"""Importers: turn CSV / JSONL / Parquet tables and known public datasets into contract records.

See README.md beside this file for every mapping (column → field, `answerable`, `topic`, licence).
"""

from pipelines.data.importers.abcd import import_abcd_docs
from pipelines.data.importers.bitext import import_bitext
from pipelines.data.importers.dialogues import TWEETSUMM_SPLITS, import_tweetsumm
from pipelines.data.importers.intents import (
    CLINC_ANSWERABLE_DOMAINS,
    CLINC_EVAL,
    CLINC_SPLITS,
    CLINC_TRAIN,
    clinc150_mapping,
    import_banking77,
    import_clinc150,
)
from pipelines.data.importers.mapping import (
    DEFAULT_CREATED_AT,
    ColumnMapping,
    DataImportError,
    load_mapping,
    mapping_from_dict,
)
from pipelines.data.importers.registry import (
    DATASETS,
    Dataset,
    ImportResult,
    ImportSummary,
    import_dataset,
    summarize,
)
from pipelines.data.importers.table import import_table, read_table

__all__ = [
    "CLINC_ANSWERABLE_DOMAINS",
    "CLINC_EVAL",
    "CLINC_SPLITS",
    "CLINC_TRAIN",
    "DATASETS",
    "DEFAULT_CREATED_AT",
    "TWEETSUMM_SPLITS",
    "ColumnMapping",
    "DataImportError",
    "Dataset",
    "ImportResult",
    "ImportSummary",
    "clinc150_mapping",
    "import_abcd_docs",
    "import_banking77",
    "import_bitext",
    "import_clinc150",
    "import_dataset",
    "import_table",
    "import_tweetsumm",
    "load_mapping",
    "mapping_from_dict",
    "read_table",
    "summarize",
]
